"""make-data and the data it writes under faults: kills, Ctrl-C, corruption, a full disk, mismatches."""

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import mark_owned
from bertcli.train import pretrain
from conftest import SAMPLE, tiny_config
from faultlib import bertcli_process

pytestmark = pytest.mark.slow  # subprocess faults: kills, signals, full disks

OPTIONS = ["--max-seq-length", "64", "--dupe-factor", "2", "--window-chars", "150000", "--shard-size", "3000",
           "--workers", "1", "--validation-fraction", "0.02"]


def outputs(d: Path) -> dict:
    """Every file of a finished data directory (minus its timing), to compare runs byte for byte."""
    manifest = json.loads((d / "manifest.json").read_text())
    for key in ("seconds", "cpu_seconds"):
        manifest.pop(key, None)
    files = {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.safetensors"))}
    return {"manifest": manifest["splits"], **files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 3 MB of text (sample_data twelve times over): long enough to be killed mid-way."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    text = SAMPLE.read_bytes()
    path.write_bytes(b"\n".join([text] * 12))
    return path


@pytest.fixture(scope="module")
def reference(corpus, tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "data"
    start = time.time()
    proc = bertcli_process(["make-data", corpus, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return outputs(out), time.time() - start


# Dies (or signals itself) inside the Nth shard write, after half the shard reached its temporary
# file: a fault at a known point of the run, not after a guessed sleep.
IN_SHARD_WRITE = """
import contextlib, os, signal
import bertcli.shards.format as _shards
_atomic_path, _calls = _shards.atomic_path, [0]
@contextlib.contextmanager
def _faulty_atomic_path(path):
    with _atomic_path(path) as tmp:
        if path.name.startswith("shard-"):
            _calls[0] += 1
            if _calls[0] == {at}:
                tmp.write_bytes(b"half a shard")
                os.kill(os.getpid(), signal.{signal})
        yield tmp
_shards.atomic_path = _faulty_atomic_path
"""


@pytest.mark.parametrize("at", [1, 3, 6])
def test_sigkill_then_resume_gives_identical_shards(corpus, tokenizer_dir, tmp_path, reference, at):
    expected, _ = reference
    assert len([f for f in expected if f.startswith("train/")]) > 6
    out = tmp_path / "data"
    proc = bertcli_process(["make-data", corpus, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS],
                           preamble=IN_SHARD_WRITE.format(at=at, signal="SIGKILL"))
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    assert len(json.loads((out / "progress.json").read_text())["splits"]["train"]["shards"]) == at - 1
    resumed = bertcli_process(["make-data", corpus, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS, "--resume"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert outputs(out) == expected
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_stop_make_data_resumably(corpus, tokenizer_dir, tmp_path, reference, signame, code):
    expected, _ = reference
    out = tmp_path / "data"
    proc = bertcli_process(["make-data", corpus, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS],
                           preamble=IN_SHARD_WRITE.format(at=4, signal=signame))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "--resume" in err and f"stopped by {signame}" in err
    assert not (out / "manifest.json").exists() and not list(out.rglob(".tmp-*"))  # the half shard is gone
    assert len(json.loads((out / "progress.json").read_text())["splits"]["train"]["shards"]) == 3
    resumed = bertcli_process(["make-data", corpus, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS, "--resume"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert outputs(out) == expected


def test_sigterm_in_tokenize_leaves_nothing(tmp_path):
    out = tmp_path / "tok"
    preamble = """
import os, signal
import bertcli.tokenizer.sentencepiece_model as _t
_train = _t.train_model
def _terminated_train(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # arrives while the SentencePiece child trains
    return _train(*args, **kwargs)
_t.train_model = _terminated_train
"""
    proc = bertcli_process(["tokenize", SAMPLE, "--out", out, "--vocab-size", "2000"], preamble=preamble)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


# Holds make-data after its second shard is written (and recorded) until Ctrl-C arrives, so the
# signal always lands mid-run: never too late, never after a guessed delay.
WAIT_FOR_CTRL_C = """
import time
import bertcli.make_data.writer as _writer
_write, _calls = _writer.write_shard, [0]
def _write_then_wait(path, *args, **kwargs):
    if _calls[0] == 2:
        open({ready!r}, "w").close()
        while True:
            time.sleep(0.01)  # until SIGINT raises KeyboardInterrupt here
    _calls[0] += 1
    return _write(path, *args, **kwargs)
_writer.write_shard = _write_then_wait
"""


def test_ctrl_c_keeps_finished_shards_and_exits_130(corpus, tokenizer_dir, tmp_path, reference):
    expected, seconds = reference
    out, ready = tmp_path / "data", tmp_path / "ready"
    proc = bertcli_process(["make-data", corpus, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS],
                           preamble=WAIT_FOR_CTRL_C.format(ready=str(ready)))
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), f"make-data never reached its third shard: {proc.communicate(timeout=60)[1]}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(list(out.rglob("shard-*.safetensors"))) == 2  # the two written before the signal
    assert "Traceback" not in err and "--resume" in err
    assert not (out / "manifest.json").exists() and not list(out.rglob(".tmp-*"))
    resumed = bertcli_process(["make-data", corpus, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS, "--resume"])
    assert resumed.communicate(timeout=300)[0] is not None and resumed.returncode == 0
    assert outputs(out) == expected


def test_ctrl_c_in_tokenize_leaves_nothing(corpus, tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(corpus.read_bytes() * 4)  # unigram training on this takes several seconds
    out = tmp_path / "tok"
    proc = bertcli_process(["tokenize", big, "--out", out, "--vocab-size", "16000", "--model-type", "unigram"])
    # Signal once the work has begun (its temporary directory exists: every check passed, the
    # handlers are set), not after a guessed delay.
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".tmp-tok.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not out.exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_disk_full_while_writing_shards(tokenizer_dir, small_fs):
    fs = small_fs(256)
    out = fs / "data"
    proc = bertcli_process(["make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--workers", "1",
                            "--shard-size", "500"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "space" in err.lower()
    assert not (out / "manifest.json").exists()
    assert not list(fs.rglob(".tmp-*"))  # no partial shard that a later run could take for a good one


def corrupt_copy(data_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy


def test_truncated_shard_is_refused_before_training(data_dir, tmp_path):
    data = corrupt_copy(data_dir, tmp_path)
    shard = next((data / "train").glob("shard-*"))
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(DataError, match=shard.name):
        pretrain(tiny_config(data, tmp_path / "run"), show_progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("edit", ["instances", "sha256", "format_version", "garbage"])
def test_manifest_edited_by_hand_is_refused(data_dir, tmp_path, edit):
    data = corrupt_copy(data_dir, tmp_path)
    path = data / "manifest.json"
    manifest = json.loads(path.read_text())
    if edit == "instances":
        manifest["splits"]["train"]["shards"][0]["instances"] += 1
    elif edit == "sha256":
        manifest["splits"]["train"]["shards"][0]["sha256"] = "0" * 64
    elif edit == "format_version":
        manifest["format_version"] = 99
    path.write_text(json.dumps(manifest) if edit != "garbage" else "{ not json")
    with pytest.raises((DataError, UsageError)) as e:
        pretrain(tiny_config(data, tmp_path / "run"), show_progress=False)
    assert "manifest" in str(e.value) or "shard" in str(e.value)
    assert "\n" not in str(e.value)


def test_mismatches_between_tokenizer_data_and_checkpoint(data_dir, tokenizer_dir, tmp_path, cli):
    from bertcli.corpus import Corpus
    from bertcli.make_data import MakeDataOptions, make_data
    from bertcli.tokenizer import TrainOptions, train

    other_tok = tmp_path / "tok"
    train(Corpus([SAMPLE]), other_tok, TrainOptions(vocab_size=1800, threads=1))
    other_data = tmp_path / "other"
    make_data([SAMPLE], other_tok, other_data, MakeDataOptions(max_seq_length=64, dupe_factor=1, workers=1,
                                                                validation_fraction=0.05), show_progress=False)
    # pretrain reading two data directories made with different tokenizers
    with pytest.raises(UsageError, match="tokenizer"):
        pretrain(tiny_config(data_dir, tmp_path / "mixed", f"data.dir=[{data_dir}, {other_data}]"), show_progress=False)
    # resume a run on data from another tokenizer
    run = tmp_path / "run"
    pretrain(tiny_config(data_dir, run, "train.max_steps=2"), show_progress=False)
    with pytest.raises(UsageError):
        pretrain(tiny_config(other_data, run, "train.max_steps=4"), resume="auto", show_progress=False)
    # show-data decoding with the wrong tokenizer, make-data --resume with another tokenizer
    code, _, err = cli("show-data", data_dir, "--tokenizer", other_tok)
    assert code == 2 and "tokenizer" in err
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "progress.json").write_text(json.dumps({"tokenizer_sha256": "x", "options": {}, "inputs": [], "splits": {}}))
    mark_owned(partial, "data", ["progress.json"], rewritten=True)  # as an interrupted make-data leaves it
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", partial, "--resume")
    assert code == 2 and "different" in err
    # max_seq_length beyond the model's positions
    with pytest.raises(UsageError, match="max_position_embeddings"):
        pretrain(tiny_config(data_dir, tmp_path / "r2", "model.max_position_embeddings=16"), show_progress=False)
