"""The shard format: round trip, byte-stable writes, and the reader's refusals."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from bertcli.errors import DataError, UsageError
from bertcli.shards import Examples, PretrainingData, load_shard, write_shard
from builders import concat_examples


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
    import bertcli.shards.dataset as shards

    hashed = []
    monkeypatch.setattr(shards, "sha256_file", lambda p: hashed.append(p) or hashlib.sha256(p.read_bytes()).hexdigest())
    data = PretrainingData(data_copy, "train")
    for i in range(len(data)):
        data[i]
    assert len(hashed) == len(data.shards) > 1


def test_a_shard_written_in_parts_is_what_safetensors_writes_for_the_whole(tmp_path):
    from safetensors.numpy import load_file, save

    parts = [tiny_examples(), tiny_examples().slice(1, 2), tiny_examples()]
    whole = concat_examples(parts)
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


# ---------------------------------------------------------------------------------------------
# Validation of what a shard holds (check_examples) and of the manifest (load_manifest)

def written(tmp_path, **changes) -> Examples:
    """tiny_examples with some arrays replaced, through a real shard file."""
    from dataclasses import replace

    write_shard(tmp_path / "s", replace(tiny_examples(), **changes), np.uint16, {})
    return load_shard(tmp_path / "s")


@pytest.mark.parametrize("changes, message", [
    ({}, None),
    ({"input_ids": np.array([2, 7, 3, 8, 20, 3, 2, 5, 3, 6, 3])}, "array input_ids holds token id 20, outside the vocabulary of 20"),
    ({"masked_ids": np.array([11, 12, 25])}, "array masked_ids holds token id 25"),
    ({"offsets": np.array([0, 12, 11])}, "array offsets gives an instance of -1 tokens"),
    ({"offsets": np.array([0, 1, 11])}, "array offsets gives an instance of 1 tokens"),
    ({"offsets": np.array([0, 6, 10])}, "array offsets runs from 0 to 10, expected 0 to 11"),
    ({"segment_b_start": np.array([3, 5])}, "array segment_b_start is 5 for instance 1 of 5 tokens"),
    ({"segment_b_start": np.array([0, 3])}, "array segment_b_start is 0 for instance 0"),
    ({"next_sentence_labels": np.array([0, 2])}, "array next_sentence_labels holds a value other than 0 and 1"),
    ({"fallback": np.array([7, 0])}, "array fallback holds a value other than 0 and 1"),
    ({"masked_positions": np.array([1, 6, 3])}, "array masked_positions holds position 6 in instance 0 of 6 tokens"),
    ({"masked_positions": np.array([4, 1, 3])}, "array masked_positions is not strictly ascending"),
    ({"masked_positions": np.array([1, 1, 3])}, "array masked_positions is not strictly ascending"),
    ({"masked_offsets": np.array([0, 3, 2])}, "array masked_offsets runs from 0 to 2, expected 0 to 3"),
    ({"masked_offsets": np.array([0, 3, 3]), "masked_positions": np.array([1, 4, 5]), "masked_ids": np.array([1, 2, 3])},
     "array masked_offsets gives an instance 3 masked positions; instances have 0 to max_predictions (2)"),
    ({"segment_b_start": np.array([3])}, "array segment_b_start has 1 entries for 2 instances"),
    ({"masked_ids": np.array([11, 12])}, "array masked_ids has 2 entries for 3 masked positions"),
])
def test_check_examples_refuses_each_inconsistency_naming_the_array(tmp_path, changes, message):
    from bertcli.shards import check_examples

    examples = written(tmp_path, **changes)
    if message is None:
        check_examples(examples, tmp_path / "s", vocab_size=20, max_seq_length=8, max_predictions=2)
        return
    with pytest.raises(DataError) as e:
        check_examples(examples, tmp_path / "s", vocab_size=20, max_seq_length=8, max_predictions=2)
    assert message in str(e.value) and str(tmp_path / "s") in str(e.value)


def test_check_examples_refuses_a_wrong_dtype_and_a_long_instance(tmp_path):
    from bertcli.shards import check_examples

    examples = written(tmp_path)
    with pytest.raises(DataError, match="array offsets gives an instance of 6 tokens; instances have 2 to max_seq_length"):
        check_examples(examples, tmp_path / "s", vocab_size=20, max_seq_length=5, max_predictions=2)
    with pytest.raises(DataError, match="array input_ids has dtype uint16, expected int32"):
        check_examples(examples, tmp_path / "s", vocab_size=70000, max_seq_length=8, max_predictions=2)


def test_check_examples_mlm_data_has_no_segment_b(tmp_path):
    from bertcli.shards import check_examples

    packed = written(tmp_path, segment_b_start=np.array([6, 5]))  # B starts at the end: all segment ids 0
    check_examples(packed, tmp_path / "s", vocab_size=20, max_seq_length=8, max_predictions=2, paired=False)
    with pytest.raises(DataError, match="array segment_b_start is 6 for instance 0 of 6 tokens"):
        check_examples(packed, tmp_path / "s", vocab_size=20, max_seq_length=8, max_predictions=2)
    with pytest.raises(DataError, match="array segment_b_start is 3 for instance 0 of 6 tokens .mlm data"):
        check_examples(written(tmp_path), tmp_path / "s", vocab_size=20, max_seq_length=8, max_predictions=2,
                       paired=False)


def raw_shard(tmp_path, header: dict, data: bytes = b"") -> Path:
    head = json.dumps(header).encode()
    path = tmp_path / "raw"
    path.write_bytes(len(head).to_bytes(8, "little") + head + data)
    return path


@pytest.mark.parametrize("spec, problem", [
    ({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "has dtype F32"),
    ({"dtype": "I64", "shape": [1, 1], "data_offsets": [0, 8]}, "not one dimension"),
    ({"dtype": "I64", "shape": [-1], "data_offsets": [0, 8]}, "not one dimension"),
    ({"dtype": "I64", "shape": [1], "data_offsets": [8, 0]}, "has data_offsets"),
    ({"dtype": "I64", "shape": [100], "data_offsets": [0, 800]}, "lies outside the file"),
    ("not a spec", "array offsets is missing"),
])
def test_load_shard_refuses_a_malformed_header(tmp_path, spec, problem):
    header = {name: {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for name in
              ("input_ids", "segment_b_start", "next_sentence_labels", "fallback", "masked_positions",
               "masked_offsets", "masked_ids")}
    header["offsets"] = spec
    with pytest.raises(DataError, match=f"not a readable shard .*{problem}"):
        load_shard(raw_shard(tmp_path, header, b"\0" * 8))


def test_load_shard_refuses_a_huge_header_length_without_reading_it(tmp_path):
    path = tmp_path / "raw"
    path.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(DataError, match="header longer than the file"):
        load_shard(path)


def edit_manifest(data_copy, edit) -> None:
    path = data_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["splits"]["train"]["shards"][0].pop("sha256"), "splits.train.shards[0].sha256 is missing"),
    (lambda m: m["splits"]["train"]["shards"][0].update(sha256="abc"), "splits.train.shards[0].sha256 is not a sha256"),
    (lambda m: m["splits"]["train"]["shards"][0].update(file="../x"), "splits.train.shards[0].file is \"../x\"; shard paths are relative"),
    (lambda m: m["splits"]["train"]["shards"][0].update(file="/etc/passwd"), "splits.train.shards[0].file is \"/etc/passwd\""),
    (lambda m: m["splits"]["train"].update(instances=m["splits"]["train"]["instances"] + 1), "splits.train.instances is"),
    (lambda m: m["splits"]["validation"]["shards"][0].update(instances=True), "splits.validation.shards[0].instances is true, not an integer"),
    (lambda m: m["splits"].pop("validation"), "splits.validation is missing"),
    (lambda m: m["tokenizer"].update(vocab_size=2**40), "tokenizer.vocab_size is 1099511627776, outside"),
    (lambda m: m["tokenizer"]["special_ids"].update(mask=5000), "tokenizer.special_ids.mask is 5000, outside"),
    (lambda m: m["options"].update(max_predictions=62), "options.max_predictions is 62, outside [1, 61]"),
    (lambda m: m["options"].update(masked_lm_prob=float("nan")), "options.masked_lm_prob is nan, not a finite number"),
    (lambda m: m.update(token_dtype="int32"), "token_dtype is \"int32\", but a vocabulary of 2000 is stored as uint16"),
    (lambda m: m["splits"]["train"]["shards"].append(dict(m["splits"]["train"]["shards"][0])), "listed twice"),
])
def test_load_manifest_refuses_each_damage_naming_the_field(data_copy, edit, message):
    from bertcli.shards import load_manifest

    edit_manifest(data_copy, edit)
    with pytest.raises(DataError) as e:
        load_manifest(data_copy)
    assert message in str(e.value) and "manifest.json" in str(e.value) and "\n" not in str(e.value)
