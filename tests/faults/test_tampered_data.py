"""Crafted data directories whose checksums still match: every reader refuses them in one line.

Hypothesis draws a mutation of the manifest or of one shard's arrays, the sha256 in the manifest
is fixed up so the integrity check passes, and a command that reads the data runs on it
(show-data, eval, pretrain; export and predict read the manifest to find the tokenizer). The
promise: exit 1 or 2 with one `error:` line and no traceback (or success, for a mutation that
leaves the data valid), and every file that existed before is byte-identical afterwards.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_MODEL
from faultlib import fix_checksums, one_error_line, read_shard_arrays, snapshot, write_shard_arrays

pytestmark = pytest.mark.slow  # tampered data directories, fuzzed

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
# mutations that may leave the data valid run the whole command (a training step, an evaluation): fewer
SLOW = settings(FAST, max_examples=20)

ARRAYS = ["input_ids", "offsets", "segment_b_start", "next_sentence_labels", "fallback", "masked_positions",
          "masked_offsets", "masked_ids"]


def fresh_copy(data_dir: Path, tmp_path_factory) -> Path:
    return Path(shutil.copytree(data_dir, tmp_path_factory.mktemp("tampered") / "data"))


def shard_entry(data: Path, split: str, k: int) -> tuple[dict, int]:
    """The manifest entry of shard k of `split` (k modulo the count) and the index of its first instance."""
    shards = json.loads((data / "manifest.json").read_text())["splits"][split]["shards"]
    k %= len(shards)
    return shards[k], sum(s["instances"] for s in shards[:k])


def run_reader(cli, command: str, data: Path, split: str, first: int, trained_run: Path, tmp: Path):
    """Run a command that reads `split` of `data` from instance `first` on; return (code, stderr)."""
    if command == "show-data":
        code, _, err = cli("show-data", data, "--split", split, "--start", first, "--count", 3)
    elif command == "show-data --json":
        code, _, err = cli("show-data", data, "--split", split, "--start", first, "--count", 3, "--json")
    elif command == "eval":
        code, _, err = cli("eval", "--checkpoint", trained_run, "--data", data, "--split", split, "--device", "cpu")
    else:  # pretrain reads (and verifies) both splits before its first step
        sets = [f"data.dir={data}", f"out_dir={tmp / 'run'}", *TINY_MODEL, "train.global_batch_size=8",
                "train.micro_batch_size=8", "train.max_steps=1", "train.warmup_steps=0", "system.device=cpu", "system.eval_batches=1"]
        code, _, err = cli("pretrain", *[a for s in sets for a in ("--set", s)])
    return code, err


READERS = st.sampled_from(["show-data", "show-data --json", "eval", "pretrain"])


# ---------------------------------------------------------------------------------------------
# Shards: values out of range, wrong dtypes and ranks, lengths that disagree

@st.composite
def invalid_shard_edits(draw):
    """(array name, function that makes the arrays invalid, description) — never a valid result."""
    name = draw(st.sampled_from(ARRAYS + ["dtype", "rank", "length", "missing"]))
    at = draw(st.integers(0, 10**6))
    big = draw(st.integers(1, 30000))

    def edit(arrays: dict, lengths: np.ndarray, vocab: int) -> None:
        n = len(lengths)
        if name in ("input_ids", "masked_ids"):
            a = arrays[name]
            a[at % len(a)] = min(vocab - 1 + big, np.iinfo(a.dtype).max)  # > any id of the vocabulary
        elif name in ("next_sentence_labels", "fallback"):
            arrays[name][at % n] = 2 + big % 254
        elif name == "segment_b_start":
            i = at % n
            arrays[name][i] = [0, -big, lengths[i] + big % 40][big % 3]
        elif name == "masked_positions":
            a, owner = arrays[name], np.repeat(np.arange(n), np.diff(arrays["masked_offsets"]))
            j = at % len(a)
            a[j] = [-big, lengths[owner[j]] + big % 100][big % 2]
        elif name in ("offsets", "masked_offsets"):
            a = arrays[name]
            i = 1 + at % (len(a) - 1)
            a[i] = [a[i - 1] - 1 - big % 5, a[-1] + 1 + big, -big][big % 3]  # decreasing, past the end, negative
        elif name == "dtype":
            victim = ARRAYS[at % len(ARRAYS)]
            others = [t for t in (np.int64, np.uint8, np.int16, np.int32) if np.dtype(t) != arrays[victim].dtype]
            arrays[victim] = arrays[victim].astype(others[big % len(others)])
        elif name == "rank":
            victim = ARRAYS[at % len(ARRAYS)]
            arrays[victim] = arrays[victim].reshape(1, -1) if big % 2 else arrays[victim][:, None]
        elif name == "length":
            victim = ARRAYS[at % len(ARRAYS)]
            arrays[victim] = arrays[victim][:-(1 + big % 3)] if big % 2 else np.concatenate([arrays[victim]] * 2)
        else:
            del arrays[ARRAYS[at % len(ARRAYS)]]

    return name, edit


@FAST
@given(st.sampled_from(["train", "validation"]), st.integers(0, 3), invalid_shard_edits(), READERS)
def test_invalid_shard_contents_are_refused(cli, data_dir, trained_run, tmp_path_factory, split, k, mutation, command):
    data = fresh_copy(data_dir, tmp_path_factory)
    entry, first = shard_entry(data, split, k)
    path = data / entry["file"]
    arrays, metadata = read_shard_arrays(path)
    lengths = np.diff(arrays["offsets"])
    vocab = json.loads((data / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    name, edit = mutation
    edit(arrays, lengths, vocab)
    write_shard_arrays(path, arrays, metadata)
    fix_checksums(data)
    before = snapshot(data, trained_run)
    code, err = run_reader(cli, command, data, split, first, trained_run, tmp_path_factory.mktemp("run"))
    assert code in (1, 2), (name, command, err)
    line = one_error_line(err)
    assert entry["file"].split("/")[-1] in line, line  # names the shard
    assert snapshot(data, trained_run) == before


@SLOW
@given(st.sampled_from(["train", "validation"]), st.integers(0, 3), st.sampled_from(ARRAYS),
       st.integers(0, 10**6), st.integers(-2**31, 2**31 - 1), READERS)
def test_any_value_anywhere_in_a_shard_never_crashes(cli, data_dir, trained_run, tmp_path_factory, split, k, name,
                                                     at, value, command):
    """A random element set to a random value: refused in one line, or (if still valid) read."""
    data = fresh_copy(data_dir, tmp_path_factory)
    entry, first = shard_entry(data, split, k)
    path = data / entry["file"]
    arrays, metadata = read_shard_arrays(path)
    a = arrays[name]
    info = np.iinfo(a.dtype)
    a[at % len(a)] = min(max(value, info.min), info.max)
    write_shard_arrays(path, arrays, metadata)
    fix_checksums(data)
    before = snapshot(data, trained_run)
    code, err = run_reader(cli, command, data, split, first, trained_run, tmp_path_factory.mktemp("run"))
    assert code in (0, 1, 2), (name, command, err)
    if code:
        one_error_line(err)
    else:
        assert "Traceback" not in err
    assert snapshot(data, trained_run) == before


# ---------------------------------------------------------------------------------------------
# The manifest: any field replaced by any JSON value, deleted, or made to point elsewhere

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=10), st.sampled_from(["../x", "/etc/passwd", "train", "", "a" * 300])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def field_paths(obj, prefix=()) -> list[tuple]:
    """Every path (a tuple of keys and indices) to a value in a JSON document."""
    paths = [prefix] if prefix else []
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in children:
        paths += field_paths(value, prefix + (key,))
    return paths


def set_field(obj, path: tuple, value, delete: bool) -> None:
    for key in path[:-1]:
        obj = obj[key]
    if delete and isinstance(obj, dict):
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


def dump(manifest) -> str:
    # JSON as Python writes it (NaN and Infinity included: json.loads reads them back)
    return json.dumps(manifest, indent=2)


DATA_READERS = st.sampled_from(["show-data", "show-data --json", "eval", "pretrain"])
TOKENIZER_FINDERS = st.sampled_from(["export", "predict"])


@pytest.fixture(scope="module")
def linked_run(data_dir, tmp_path_factory):
    """A copy of the data and a run trained on it: export and predict find the tokenizer through its manifest."""
    from bertcli.train import pretrain
    from conftest import tiny_config

    data = Path(shutil.copytree(data_dir, tmp_path_factory.mktemp("linked") / "data"))
    run = tmp_path_factory.mktemp("linked") / "run"
    pretrain(tiny_config(data, run, "train.max_steps=2"), show_progress=False)
    return data, run


def run_tokenizer_finder(cli, command, run, tmp):
    if command == "export":
        return cli("export", "--checkpoint", run, "--out", tmp / "hf")
    return cli("predict", "--checkpoint", run, "a [MASK] day", "--device", "cpu")


def tamper_manifest(draw, data: Path) -> tuple:
    manifest = json.loads((data / "manifest.json").read_text())
    path = draw.draw(st.sampled_from(field_paths(manifest)), label="field")
    value = draw.draw(json_values, label="value")
    set_field(manifest, path, value, delete=draw.draw(st.booleans(), label="delete"))
    (data / "manifest.json").write_text(dump(manifest))
    return path, value


def assert_clean_outcome(code: int, err: str, context) -> None:
    assert code in (0, 1, 2), (context, err)
    if code:
        line = one_error_line(err)
        assert len(line) < 800, line
    else:
        assert "Traceback" not in err


@SLOW
@given(st.data(), DATA_READERS)
def test_any_manifest_field_replaced_never_crashes(cli, data_dir, trained_run, tmp_path_factory, draw, command):
    data = fresh_copy(data_dir, tmp_path_factory)
    path, value = tamper_manifest(draw, data)
    before = snapshot(data, trained_run)
    code, err = run_reader(cli, command, data, "train", 0, trained_run, tmp_path_factory.mktemp("run"))
    assert_clean_outcome(code, err, (path, value, command))
    assert snapshot(data, trained_run) == before


@SLOW
@given(st.data(), TOKENIZER_FINDERS)
def test_export_and_predict_on_a_tampered_manifest_never_crash(cli, linked_run, tmp_path_factory, draw, command):
    data, run = linked_run
    original = (data / "manifest.json").read_bytes()
    try:
        path, value = tamper_manifest(draw, data)
        before = snapshot(data, run)
        code, _, err = run_tokenizer_finder(cli, command, run, tmp_path_factory.mktemp("out"))
        assert_clean_outcome(code, err, (path, value, command))
        assert snapshot(data, run) == before
    finally:
        (data / "manifest.json").write_bytes(original)


@st.composite
def invalid_manifest_edits(draw):
    """Edits that always make the manifest invalid, each with the field its error must name."""
    split = draw(st.sampled_from(["train", "validation"]))
    kind = draw(st.sampled_from(["escape", "absolute", "no-sha", "bad-sha", "count", "tokens", "negative", "type",
                                 "vocab", "seq", "predictions", "duplicate", "nonfinite"]))
    n = draw(st.integers(1, 10**6))

    def edit(m: dict, data: Path) -> str:
        shards = m["splits"][split]["shards"]
        s = shards[n % len(shards)]
        if kind == "escape":
            outside = data.parent / f"elsewhere-{n}"
            shutil.copytree(data / "train", outside)
            s["file"] = ["../" + outside.name + "/" + Path(s["file"]).name, f"train/../../{outside.name}/x"][n % 2]
            return "file"
        if kind == "absolute":
            s["file"] = str((data / s["file"]).resolve())
            return "file"
        if kind == "no-sha":
            del s["sha256"]
            return "sha256"
        if kind == "bad-sha":
            s["sha256"] = ["", "0" * 63, "Z" * 64, n][n % 4]
            return "sha256"
        if kind == "count":
            s["instances"] += 1 + n % 7
            return "instances"
        if kind == "tokens":
            m["splits"][split]["tokens"] += 1 + n % 7
            return "tokens"
        if kind == "negative":
            s["instances"] = -n
            return "instances"
        if kind == "type":
            key = ["instances", "tokens", "file"][n % 3]
            s[key] = [[s[key]], None, 1.5, True, {"v": 1}, str(s[key]) if key != "file" else 7][n % 6]
            return key
        if kind == "vocab":
            m["tokenizer"]["vocab_size"] = [0, -n, 2**40, "2000"][n % 4]
            return "vocab_size"
        if kind == "seq":
            m["options"]["max_seq_length"] = [0, 7, 10**6, 64.5][n % 4]
            return "max_seq_length"
        if kind == "predictions":
            m["options"]["max_predictions"] = [0, m["options"]["max_seq_length"], -1][n % 3]
            return "max_predictions"
        if kind == "duplicate":
            m["splits"][split]["shards"] = shards + [dict(s)]
            m["splits"][split]["instances"] += s["instances"]
            m["splits"][split]["tokens"] += s["tokens"]
            return "listed twice"
        m["options"]["masked_lm_prob"] = [math.nan, math.inf, -math.inf][n % 3]
        return "masked_lm_prob"

    return kind, edit


@FAST
@given(invalid_manifest_edits(), DATA_READERS)
def test_invalid_manifests_are_refused_naming_the_field(cli, data_dir, trained_run, tmp_path_factory, mutation, command):
    data = fresh_copy(data_dir, tmp_path_factory)
    manifest = json.loads((data / "manifest.json").read_text())
    kind, edit = mutation
    field = edit(manifest, data)
    (data / "manifest.json").write_text(dump(manifest))
    before = snapshot(data.parent, trained_run)
    code, err = run_reader(cli, command, data, "train", 0, trained_run, tmp_path_factory.mktemp("run"))
    assert code in (1, 2), (kind, command, err)
    line = one_error_line(err)
    assert "manifest.json" in line and field in line, line
    assert snapshot(data.parent, trained_run) == before


def test_a_symlink_out_of_the_data_directory_is_refused(cli, data_dir, tmp_path):
    data = Path(shutil.copytree(data_dir, tmp_path / "data"))
    outside = tmp_path / "outside"
    (data / "train").rename(outside)
    (data / "train").symlink_to(outside)  # train/shard-00000 now resolves outside the data directory
    code, _, err = cli("show-data", data, "--json")
    assert code == 1
    assert "leads outside the data directory" in one_error_line(err)


def test_a_fifo_listed_as_a_shard_is_refused_without_reading_it(cli, data_dir, tmp_path):
    import os

    data = Path(shutil.copytree(data_dir, tmp_path / "data"))
    shard = data / "train" / "shard-00000.safetensors"
    shard.unlink()
    os.mkfifo(shard)  # reading it would block for ever
    code, _, err = cli("show-data", data, "--json")
    assert code == 1
    assert "is not a regular file" in one_error_line(err)
