"""The shard format: round trip, byte-stable writes, and the reader's refusals."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from bertcli.errors import DataError, UsageError
from bertcli.shards import Examples, PretrainingData, load_shard, write_shard


def tiny_examples() -> Examples:
    return Examples(input_ids=np.array([2, 7, 3, 8, 9, 3, 2, 5, 3, 6, 3]), offsets=np.array([0, 6, 11]),
                    segment_b_start=np.array([3, 3]), next_sentence_labels=np.array([0, 1]), fallback=np.array([0, 0]),
                    masked_positions=np.array([1, 4, 3]), masked_offsets=np.array([0, 2, 3]),
                    masked_ids=np.array([11, 12, 13]))


def test_round_trip_and_reported_checksum(tmp_path):
    sha = write_shard(tmp_path / "s.safetensors", tiny_examples(), np.uint16, {"tokenizer_sha256": "abc"})
    assert sha == hashlib.sha256((tmp_path / "s.safetensors").read_bytes()).hexdigest()
    loaded = load_shard(tmp_path / "s.safetensors", "abc")
    assert len(loaded) == 2 and loaded.input_ids.dtype == np.uint16
    second = loaded[1]
    assert second.input_ids.tolist() == [2, 5, 3, 6, 3] and second.masked_positions.tolist() == [3]
    assert second.original_ids().tolist() == [2, 5, 3, 13, 3] and second.segment_ids().tolist() == [0, 0, 0, 1, 1]
    assert not list(tmp_path.glob(".tmp-*"))


def test_writes_are_byte_identical(tmp_path):
    for name in ("a", "b"):
        write_shard(tmp_path / name, tiny_examples(), np.uint16, {"split": "train", "shard": "0", "tokenizer_sha256": "x"})
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_a_shard_of_another_tokenizer_is_refused(tmp_path):
    write_shard(tmp_path / "s", tiny_examples(), np.uint16, {"tokenizer_sha256": "f" * 64})
    with pytest.raises(DataError, match=r"s: made with tokenizer sha256 ffffffffffff…, expected 000000000000…"):
        load_shard(tmp_path / "s", "0" * 64)
    write_shard(tmp_path / "plain", tiny_examples(), np.uint16, {})
    assert len(load_shard(tmp_path / "plain", "0" * 64)) == 2  # records none: nothing to compare


@pytest.fixture
def data_copy(data_dir, tmp_path):
    return shutil.copytree(data_dir, tmp_path / "data")


def test_reader_refuses_a_flipped_byte(data_copy):
    shard = data_copy / "train" / "shard-00000.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 1
    shard.write_bytes(bytes(raw))
    data = PretrainingData(data_copy, "train")
    with pytest.raises(DataError, match=r"shard-00000.safetensors: sha256 differs from the manifest"):
        data[0]


def test_reader_refuses_a_shard_swapped_in_from_other_data(data_copy):
    """A shard whose checksum was patched into the manifest still names its tokenizer."""
    manifest = json.loads((data_copy / "manifest.json").read_text())
    entry = manifest["splits"]["validation"]["shards"][0]
    path = data_copy / entry["file"]
    entry["sha256"] = write_shard(path, load_shard(path), np.uint16, {"tokenizer_sha256": "e" * 64})
    (data_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="made with tokenizer sha256 eeeeeeeeeeee"):
        PretrainingData(data_copy, "validation")[0]


def test_reader_refuses_data_of_another_tokenizer(data_copy):
    with pytest.raises(UsageError, match="made with another tokenizer"):
        PretrainingData(data_copy, "train", expect_tokenizer_sha256="0" * 64)


def test_reader_checks_each_shard_once(data_copy, monkeypatch):
    import bertcli.shards as shards

    hashed = []
    monkeypatch.setattr(shards, "sha256_file", lambda p: hashed.append(p) or hashlib.sha256(p.read_bytes()).hexdigest())
    data = PretrainingData(data_copy, "train")
    for i in range(len(data)):
        data[i]
    assert len(hashed) == len(data.shards) > 1


def test_a_shard_written_in_parts_is_what_safetensors_writes_for_the_whole(tmp_path):
    from safetensors.numpy import load_file, save

    parts = [tiny_examples(), tiny_examples().slice(1, 2), tiny_examples()]
    whole = Examples.concat(parts)
    for dtype in (np.uint16, np.int32):
        write_shard(tmp_path / "parts", parts, dtype, {"tokenizer_sha256": "x"})
        write_shard(tmp_path / "whole", whole, dtype, {"tokenizer_sha256": "x"})
        assert (tmp_path / "parts").read_bytes() == (tmp_path / "whole").read_bytes()
        loaded = load_file(str(tmp_path / "parts"))  # the official reader accepts it
        assert loaded["input_ids"].dtype == dtype and loaded["input_ids"].tolist() == whole.input_ids.tolist()
        assert loaded["offsets"].tolist() == whole.offsets.tolist()
        assert loaded["masked_offsets"].tolist() == whole.masked_offsets.tolist()
        reference = save(loaded, metadata={"bertcli": _metadata(tmp_path / "parts")})
        assert (tmp_path / "parts").read_bytes() == reference  # byte for byte the library's layout


def _metadata(path) -> str:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n])["__metadata__"]["bertcli"]
