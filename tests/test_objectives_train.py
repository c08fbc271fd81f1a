"""pretrain, eval and export follow the data's objective: sop trains the two-way head as sentence order, mlm has none."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertcli.batches import collate
from bertcli.config import load_config
from bertcli.errors import UsageError
from bertcli.evaluate import load_model, run_eval
from bertcli.make_data import MakeDataOptions, make_data
from bertcli.model import IGNORE_INDEX
from bertcli.objectives import remask_params
from bertcli.shards import PretrainingData
from bertcli.train import pretrain
from conftest import SAMPLE, tiny_config, tiny_overrides

HEAD_KEYS = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "cls.seq_relationship.weight",
             "cls.seq_relationship.bias"}


@pytest.fixture(scope="module")
def objective_data(tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("objectives")
    for objective in ("sop", "mlm"):
        opts = MakeDataOptions(objective=objective, max_seq_length=64, dupe_factor=2, validation_fraction=0.05,
                               workers=1, shard_size=2000)
        make_data([SAMPLE], tokenizer_dir, root / objective, opts, show_progress=False)
    return root


@pytest.fixture(scope="module")
def runs(objective_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("objective-runs")
    summaries = {}
    for objective in ("sop", "mlm"):
        summaries[objective] = pretrain(tiny_config(objective_data / objective, root / objective, "train.max_steps=4"),
                                        show_progress=False)
    return root, summaries


def metric_records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_mlm_run_has_no_sentence_head_loss_or_metric(runs):
    root, summaries = runs
    model, state, _ = load_model(root / "mlm", torch.device("cpu"))
    assert not HEAD_KEYS & set(model.state_dict()) and state["data_signature"]["objective"] == "mlm"
    train_records = [r for r in metric_records(root / "mlm") if "mlm_loss" in r]
    assert train_records and all(r["loss"] == r["mlm_loss"] for r in train_records)
    assert not any(k.startswith(("nsp", "sop")) for r in train_records for k in r)
    final = summaries["mlm"]["eval"]
    assert final["loss"] == final["masked_lm_loss"]
    assert not any("sentence" in k for k in final)


def test_sop_run_reports_sentence_order_metrics_with_their_baseline(runs, objective_data):
    root, summaries = runs
    records = [r for r in metric_records(root / "sop") if "mlm_loss" in r]
    assert all("sop_loss" in r and "sop_accuracy" in r and "nsp_loss" not in r for r in records)
    assert records[-1]["loss"] == pytest.approx(records[-1]["mlm_loss"] + records[-1]["sop_loss"])
    final = summaries["sop"]["eval"]
    assert {"sentence_order_accuracy", "sentence_order_loss", "baseline_sentence_order_accuracy"} <= set(final)
    assert not any(k.startswith("next_sentence") for k in final)
    labels = [e.next_sentence_label for e in PretrainingData(objective_data / "sop", "validation")]
    counts = np.bincount(labels, minlength=2)
    metrics = run_eval(root / "sop", objective_data / "sop", "validation", 64, 0, torch.device("cpu"),
                       lambda: torch.autocast("cpu", enabled=False))
    assert metrics["baseline_sentence_order_accuracy"] == pytest.approx(counts.max() / counts.sum())


def test_eval_across_objectives_reports_masked_lm_only(runs, data_dir):
    root, _ = runs
    metrics = run_eval(root / "mlm", data_dir, "validation", 64, 0, torch.device("cpu"),
                       lambda: torch.autocast("cpu", enabled=False))
    assert "masked_lm_accuracy" in metrics and not any("sentence" in k for k in metrics)


def test_data_of_two_objectives_in_one_run_is_one_line_exit_2(objective_data, data_dir, tmp_path, cli):
    overrides = [f"data.dir=[{objective_data / 'mlm'}, {data_dir}]", *tiny_overrides(data_dir, tmp_path / "run")[1:]]
    code, _, err = cli("pretrain", *[arg for a in overrides for arg in ("--set", a)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1
    assert "--objective nsp" in err and "mlm" in err and "one objective" in err


def test_resuming_on_data_of_another_objective_is_refused(runs, objective_data, tmp_path):
    root, _ = runs
    config = tiny_config(objective_data / "sop", root / "mlm", "train.max_steps=6")
    with pytest.raises(UsageError, match="trained with objective mlm"):
        pretrain(config, resume="auto", show_progress=False)


def test_init_from_another_objective_keeps_what_fits(runs, objective_data, tmp_path):
    root, _ = runs
    summary = pretrain(tiny_config(objective_data / "mlm", tmp_path / "from-sop", "train.max_steps=2",
                                   f"train.init_from={root / 'sop'}"), show_progress=False)
    assert summary["step"] == 2


def test_dynamic_masking_at_its_own_rate_and_split(objective_data, tokenizer_dir):
    from bertcli.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer_dir)
    data = PretrainingData(objective_data / "mlm", "train")
    options = data.manifests[0]["options"]
    params = remask_params(options, data.max_seq_length, data.max_predictions, tok, 0.3, 1.0, 0.0)
    assert data.max_predictions == 10 and params.max_predictions == 20  # ceil(64 x 0.3)
    masked = tokens = 0
    for k in range(4):
        examples = [data[i] for i in range(64 * k, 64 * (k + 1))]
        batch = collate(examples, params.max_predictions, (params, np.random.default_rng(k)))
        real = batch.masked_labels != IGNORE_INDEX
        shown = batch.input_ids.gather(1, batch.masked_positions)[real]
        assert (shown == 4).all()  # 100 % [MASK]
        masked, tokens = masked + int(real.sum()), tokens + batch.num_tokens
    assert masked / tokens == pytest.approx(0.3, abs=0.01)
    same = remask_params(options, data.max_seq_length, data.max_predictions, tok)
    assert (same.masked_lm_prob, same.max_predictions, same.mask_replace_prob, same.random_replace_prob) == (0.15, 10, 0.8, 0.1)


def test_pretrain_masks_dynamically_at_its_own_rate(objective_data, tmp_path):
    # 30 % of 64 tokens needs 20 masked slots where the data's 15 % had 10: batches must widen
    summary = pretrain(tiny_config(objective_data / "mlm", tmp_path / "run", "train.max_steps=2", "data.masking=dynamic",
                                   "data.masked_lm_prob=0.3"), show_progress=False)
    records = [r for r in metric_records(tmp_path / "run") if "mlm_loss" in r]
    assert summary["step"] == 2 and records


@pytest.mark.parametrize("assignment,expected", [
    ("data.masked_lm_prob=0.3", "applies to data.masking: dynamic only"),
    ("data.masked_lm_prob=0.7", "data.masked_lm_prob 0.7 is out of range: give a number from 0.05 to 0.5"),
    ("data.mask_replace_prob=0.95", "add up to at most 1"),
])
def test_masking_keys_are_checked(assignment, expected, tmp_path):
    extra = [] if "0.3" in assignment else ["data.masking=dynamic", "data.random_replace_prob=0.1"]
    with pytest.raises(UsageError, match=expected):
        load_config(None, [f"data.dir={tmp_path}", assignment, *extra])


# --- export -------------------------------------------------------------------------------------

def test_mlm_export_is_a_bert_for_masked_lm_with_the_same_numbers(runs, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from bertcli.export import export

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, _ = runs
    export(root / "mlm", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    hf, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert type(hf) is transformers.BertForMaskedLM
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours, _, _ = load_model(root / "mlm", torch.device("cpu"))
    hf.eval()
    ids = torch.tensor([[2, 40, 41, 4, 42, 43, 3, 44, 4, 45, 3]])
    positions = torch.tensor([[3, 8]])
    with torch.no_grad():
        out = ours(ids, torch.zeros_like(ids), None, positions)
        theirs = hf(input_ids=ids, token_type_ids=torch.zeros_like(ids)).logits
    assert out.nsp_logits is None
    torch.testing.assert_close(out.mlm_logits, theirs[0, positions[0]], atol=1e-5, rtol=0)


def test_sop_export_keeps_the_two_way_head_with_the_same_numbers(runs, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from bertcli.export import export

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, _ = runs
    export(root / "sop", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    assert json.loads((tmp_path / "hf" / "bertcli_export.json").read_text())["objective"] == "sop"
    hf, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ours, _, _ = load_model(root / "sop", torch.device("cpu"))
    hf.eval()
    ids = torch.tensor([[2, 40, 41, 4, 3, 44, 4, 45, 3]])
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1]])
    positions = torch.tensor([[3, 6]])
    with torch.no_grad():
        out = ours(ids, types, None, positions)
        theirs = hf(input_ids=ids, token_type_ids=types)
    torch.testing.assert_close(out.mlm_logits, theirs.prediction_logits[0, positions[0]], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.nsp_logits, theirs.seq_relationship_logits, atol=1e-5, rtol=0)


def test_init_from_copies_the_shared_weights_across_objectives(runs):
    from bertcli.model import BertConfig, BertForPreTraining
    from bertcli.weights import load_pretrained, read_weights

    root, _ = runs
    _, state, _ = load_model(root / "sop", torch.device("cpu"))
    mlm_model = BertForPreTraining(BertConfig(**state["model_config"]), sentence_task=False)
    load_pretrained(mlm_model, root / "sop")
    sop_weights = read_weights(root / "sop")
    assert all(torch.equal(v, sop_weights[k]) for k, v in mlm_model.state_dict().items())
    sop_model = BertForPreTraining(BertConfig(**state["model_config"]))
    head = sop_model.cls.seq_relationship.weight.clone()
    load_pretrained(sop_model, root / "mlm")
    assert torch.equal(sop_model.cls.seq_relationship.weight, head)  # left as initialised
    assert torch.equal(sop_model.bert.embeddings.word_embeddings.weight,
                       read_weights(root / "mlm")["bert.embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("name", ["roberta-base.yaml", "mosaicbert-base.yaml"])
def test_shipped_objective_configs_load(name, tmp_path):
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert config.data.masking == "dynamic"
    if name.startswith("mosaic"):
        assert (config.data.masked_lm_prob, config.data.mask_replace_prob, config.data.random_replace_prob) == (0.3, 1.0, 0.0)


def test_show_data_and_predict_speak_the_objective(runs, objective_data, cli):
    root, _ = runs
    code, _, err = cli("show-data", objective_data / "sop", "--count", "8")
    assert code == 0 and ("swapped" in err or "in order" in err) and "random next" not in err
    code, _, err = cli("show-data", objective_data / "mlm", "--count", "1")
    assert code == 0 and "packed" in err and "‖" not in err
    code, _, err = cli("predict", "--checkpoint", root / "mlm", "the [MASK] sat", "--next", "it did")
    assert code == 2 and "objective mlm" in err and "drop --next" in err
    code, out, _ = cli("predict", "--checkpoint", root / "mlm", "the [MASK] sat", "--json")
    assert code == 0 and json.loads(out.splitlines()[0])["masks"]
