"""show-data: JSON for scripts, a readable view for people, one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np

from bertcli.shards import PretrainingData
from bertcli.tokenizer import Tokenizer

KEYS = {"index", "input_ids", "segment_ids", "masked_positions", "masked_ids", "next_sentence_label", "original_ids"}


def test_json_lines_match_the_data(cli, data_dir):
    code, out, _ = cli("show-data", data_dir, "--start", 3, "--count", 4, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    data = PretrainingData(data_dir)
    tok = Tokenizer.load(data_dir / "tokenizer")
    assert [r["index"] for r in rows] == [3, 4, 5, 6] and all(set(r) == KEYS for r in rows)
    for r in rows:
        ex = data[r["index"]]
        assert r["input_ids"] == ex.input_ids.tolist() and r["masked_ids"] == ex.masked_ids.tolist()
        ids, original = np.array(r["input_ids"]), np.array(r["original_ids"])
        positions = np.array(r["masked_positions"], dtype=int)
        assert (original[positions] == r["masked_ids"]).all()
        unmasked = np.setdiff1d(np.arange(len(ids)), positions)
        assert (original[unmasked] == ids[unmasked]).all()
        segments = np.array(r["segment_ids"])
        b_start = ex.segment_b_start
        assert (segments[:b_start] == 0).all() and (segments[b_start:] == 1).all()
        assert original[0] == tok.cls_id and original[b_start - 1] == original[-1] == tok.sep_id
        assert r["next_sentence_label"] in (0, 1)


def test_validation_split_and_end_of_data(cli, data_dir):
    n = len(PretrainingData(data_dir, "validation"))
    code, out, _ = cli("show-data", data_dir, "--split", "validation", "--start", n - 1, "--count", 5, "--json")
    assert code == 0 and [json.loads(line)["index"] for line in out.splitlines()] == [n - 1]


def test_human_view_shows_segments_labels_and_masks(cli, data_dir):
    code, out, err = cli("show-data", data_dir, "--count", 2)
    assert code == 0 and out == ""
    assert "#0 " in err and "#1 " in err and ("actual next" in err or "random next" in err)
    assert "[CLS]" in err and "‖" in err and "⟨" in err


def test_bad_arguments_are_one_line_usage_errors(cli, data_dir, tmp_path):
    for args, message in [(["--split", "test"], "not one of train, validation"),
                          (["--start", "100000"], "is past the end"),
                          (["--count", "-1"], "--count -1 is out of range")]:
        code, _, err = cli("show-data", data_dir, *args)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, _, err = cli("show-data", tmp_path / "nothing")
    assert code == 2 and "does not exist" in err


def test_a_corrupt_shard_is_a_one_line_runtime_error(cli, data_dir, tmp_path):
    copy = shutil.copytree(data_dir, tmp_path / "data")
    shard = copy / "train" / "shard-00000.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    code, _, err = cli("show-data", copy, "--json")
    assert code == 1 and err.count("\n") == 1 and "shard-00000.safetensors: sha256 differs" in err


def test_data_reads_the_tokenizer_it_carries_wherever_it_is(cli, data_dir, tmp_path, monkeypatch):
    copy = shutil.copytree(data_dir, tmp_path / "data")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer"]["path"] = str(tmp_path / "gone")  # where it came from no longer matters
    (copy / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("show-data", "data", "--count", 1)
    assert code == 0 and "#0" in err


def test_a_tampered_carried_tokenizer_is_refused(cli, data_dir, tokenizer_dir, tmp_path):
    copy = shutil.copytree(data_dir, tmp_path / "data")
    shutil.rmtree(copy / "tokenizer")
    shutil.copytree(tokenizer_dir, copy / "tokenizer")
    (copy / "tokenizer" / "vocab.txt").write_text("edited")  # not a file the identity covers: still fine
    code, _, err = cli("show-data", copy, "--count", 1)
    assert code == 0
    (copy / "tokenizer" / "spm.model").write_bytes(b"\0")
    code, _, err = cli("show-data", copy, "--count", 1)
    assert code == 2 and err.count("\n") == 1 and "sha256" in err


def test_data_of_format_version_1_is_refused(cli, data_dir, tmp_path):
    """One reader per format: format_version 1 data (a tokenizer path instead of tokenizer/) is refused."""
    copy = shutil.copytree(data_dir, tmp_path / "data")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli("show-data", copy, "--count", 1)
    assert code == 2 and "format_version 1" in err and "reads 2" in err and err.count("\n") == 1