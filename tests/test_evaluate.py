import json
import math
import shutil
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from bertcli.checkpoint import list_checkpoints
from bertcli.evaluate import load_model
from bertcli.shards import PretrainingData
from conftest import SAMPLE, run_cli


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


def straightforward_metrics(model, data):
    """Example by example, full-sequence MLM head, no batching or padding."""
    losses, correct, nsp_losses, nsp_correct, labels_seen, nsp_seen = [], 0, [], 0, Counter(), Counter()
    with torch.no_grad():
        for i in range(len(data)):
            ex = data[i]
            ids = torch.tensor(ex.input_ids.astype("int64"))[None]
            types = torch.tensor(ex.segment_ids())[None]
            h, pooled = model.bert(ids, types, torch.ones_like(ids, dtype=torch.bool))
            logits = model.cls.predictions(h[0], model.bert.embeddings.word_embeddings.weight)  # (T, V)
            for pos, label in zip(ex.masked_positions.tolist(), ex.masked_ids.tolist()):
                losses.append(F.cross_entropy(logits[pos], torch.tensor(label)).item())
                correct += int(logits[pos].argmax()) == label
                labels_seen[label] += 1
            nsp = model.cls.seq_relationship(pooled)[0]
            nsp_losses.append(F.cross_entropy(nsp, torch.tensor(ex.next_sentence_label)).item())
            nsp_correct += int(nsp.argmax()) == ex.next_sentence_label
            nsp_seen[ex.next_sentence_label] += 1
    n = len(data)
    mlm_loss, nsp_loss = sum(losses) / len(losses), sum(nsp_losses) / n
    return {"masked_lm_accuracy": correct / len(losses), "masked_lm_loss": mlm_loss,
            "next_sentence_accuracy": nsp_correct / n, "next_sentence_loss": nsp_loss, "loss": mlm_loss + nsp_loss,
            "perplexity": math.exp(mlm_loss), "examples": n, "masked_tokens": len(losses),
            "baseline_masked_lm_accuracy": max(labels_seen.values()) / len(losses),
            "baseline_next_sentence_accuracy": max(nsp_seen.values()) / n}


def test_eval_matches_straightforward_computation(run_dir, data_dir):
    proc = run_cli("eval", "--checkpoint", run_dir, "--data", data_dir, "--json", "--batch-size", "7", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    model, state, _ = load_model(run_dir, torch.device("cpu"))
    expected = straightforward_metrics(model, PretrainingData([data_dir], "validation"))
    for key in ("masked_lm_accuracy", "next_sentence_accuracy", "examples", "masked_tokens",
                "baseline_masked_lm_accuracy", "baseline_next_sentence_accuracy"):
        assert got[key] == expected[key], key
    for key in ("masked_lm_loss", "next_sentence_loss", "loss"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert got["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert got["global_step"] == 4 == state["step"]
    assert "masked_lm_accuracy" in proc.stderr  # the table goes to stderr, stdout is the JSON alone


def test_eval_is_deterministic_and_max_batches(run_dir, data_dir):
    a = run_cli("eval", "--checkpoint", run_dir, "--data", data_dir, "--json", "--max-batches", "1", "--batch-size", "5")
    b = run_cli("eval", "--checkpoint", run_dir, "--data", data_dir, "--json", "--max-batches", "1", "--batch-size", "5")
    assert a.stdout == b.stdout and json.loads(a.stdout)["examples"] == 5


@pytest.mark.slow  # six bertcli subprocesses and a tokenizer trained
def test_mismatches_and_bad_inputs(run_dir, data_dir, tokenizer_dir, tmp_path):
    from bertcli.make_data import MakeDataOptions, make_data

    other_len = tmp_path / "len48"
    make_data([SAMPLE], tokenizer_dir, other_len, MakeDataOptions(max_seq_length=48, dupe_factor=1, workers=1,
                                                                   validation_fraction=0.05), show_progress=False)
    proc = run_cli("eval", "--checkpoint", run_dir, "--data", other_len)
    assert proc.returncode == 2 and "max_seq_length" in proc.stderr and "Traceback" not in proc.stderr

    from bertcli.corpus import Corpus
    from bertcli.tokenizer import TrainOptions, train
    other_tok = tmp_path / "tok"
    train(Corpus([SAMPLE]), other_tok, TrainOptions(vocab_size=1500, threads=1))
    other_data = tmp_path / "otherdata"
    make_data([SAMPLE], other_tok, other_data, MakeDataOptions(max_seq_length=64, dupe_factor=1, workers=1,
                                                                validation_fraction=0.05), show_progress=False)
    proc = run_cli("eval", "--checkpoint", run_dir, "--data", other_data)
    assert proc.returncode == 2 and "another tokenizer" in proc.stderr

    proc = run_cli("eval", "--checkpoint", tmp_path / "nothing", "--data", data_dir)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_cli("eval", "--checkpoint", run_dir, "--data", tmp_path / "nodata")
    assert proc.returncode == 2 and "nodata" in proc.stderr
    (tmp_path / "notrun").mkdir()
    proc = run_cli("eval", "--checkpoint", tmp_path / "notrun", "--data", data_dir)
    assert proc.returncode == 2 and "neither a checkpoint" in proc.stderr

    no_val = tmp_path / "noval"
    make_data([SAMPLE], tokenizer_dir, no_val, MakeDataOptions(max_seq_length=64, dupe_factor=1, workers=1,
                                                                validation_fraction=0.0), show_progress=False)
    proc = run_cli("eval", "--checkpoint", run_dir, "--data", no_val)
    assert proc.returncode == 2 and "split" in proc.stderr and "empty" in proc.stderr
    for p in (proc,):
        assert "Traceback" not in p.stderr


def test_checkpoint_with_missing_or_damaged_weights(run_dir, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(list_checkpoints(run_dir)[-1], ckpt)
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    proc = run_cli("eval", "--checkpoint", ckpt, "--data", data_dir)
    assert proc.returncode == 1 and "model.safetensors" in proc.stderr and "sha256" in proc.stderr
    (ckpt / "model.safetensors").unlink()
    proc = run_cli("eval", "--checkpoint", ckpt, "--data", data_dir)
    assert proc.returncode == 1 and "missing" in proc.stderr and "Traceback" not in proc.stderr
