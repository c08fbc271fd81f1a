"""bertcli finetune: data formats, encoding, the run's outputs, the HF model it writes, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bertcli.finetune import Example, Fields, load_finetune_config, load_model_for_finetune, read_split
from bertcli.finetune.data import collate, encode, label_names, truncate_pair
from bertcli.finetune.trainer import finetune_one, schedule
from bertcli.fsutil import TMP_PREFIX

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "botchan.txt"
FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "data.max_seq_length=48",
        "--set", "train.learning_rate=1e-3", "--set", "system.device=cpu"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models gain nothing from threads, and on a busy machine OpenMP's spinning threads cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lines(n: int, start: int = 0) -> list[str]:
    lines = [line.strip() for line in SAMPLE.read_text(encoding="utf-8").splitlines() if len(line.split()) > 3]
    return [line.replace("\t", " ").replace('"', "'") for line in lines[start:start + n]]


def _label(text: str) -> str:
    return "question" if "?" in text or "!" in text else "statement"


def _write_tsv(path: Path, rows: list[tuple], header=("sentence", "label")) -> Path:
    lines = ([("\t".join(header))] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict[str, Path]:
    """A tiny two-label task from sample_data: train 48, validation 16, test 8 lines."""
    root = tmp_path_factory.mktemp("task")
    texts = _lines(72)
    rows = [(t, _label(t)) for t in texts]
    return {"train": _write_tsv(root / "train.tsv", rows[:48]), "validation": _write_tsv(root / "dev.tsv", rows[48:64]),
            "test": _write_tsv(root / "test.tsv", [(t,) for t in texts[64:]], header=("sentence",))}


def _args(task, model, out, *extra):
    return ["finetune", "--model", model, "--train", task["train"], "--validation", task["validation"],
            "--text-field", "sentence", "--out", out, *FAST, *extra]


# --- data -------------------------------------------------------------------------------------

def test_every_format_reads_the_same_examples(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    rows = [("a first text", "one more", 1), ('a "quoted", text', "two", 0), ("third", "three", 1)]
    expected = [Example(a, b, y) for a, b, y in rows]
    fields = Fields("s1", "s2", "y")
    _write_tsv(tmp_path / "h.tsv", rows, header=("y0", "s1", "s2", "y")[1:])
    (tmp_path / "n.tsv").write_text("".join(f"{y}\t{a}\t{b}\n" for a, b, y in rows), encoding="utf-8")
    import csv
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("s1", "s2", "y"), *rows])
    (tmp_path / "j.jsonl").write_text("".join(json.dumps({"s1": a, "s2": b, "y": y}) + "\n" for a, b, y in rows))
    table = pa.table({"s1": [r[0] for r in rows], "s2": [r[1] for r in rows], "y": [r[2] for r in rows]})
    pq.write_table(table, tmp_path / "p.parquet")
    datasets.Dataset.from_dict(table.to_pydict()).save_to_disk(str(tmp_path / "ds"))

    def labels(examples):
        return [Example(e.text, e.text_pair, int(e.label)) for e in examples]

    assert labels(read_split(tmp_path / "h.tsv", "--train", fields)) == expected
    assert labels(read_split(tmp_path / "n.tsv", "--train", Fields("1", "2", "0"))) == expected
    for name in ("c.csv", "j.jsonl", "p.parquet", "ds"):
        assert labels(read_split(tmp_path / name, "--train", fields)) == expected, name


def test_labels_are_ordered_and_pairs_truncated_longest_first():
    assert label_names([Example("t", None, y) for y in ("10", "2", "1")], "x") == ["1", "2", "10"]
    assert label_names([Example("t", None, y) for y in ("neg", "pos", "neg")], "x") == ["neg", "pos"]
    a, b = truncate_pair(list(range(10)), list(range(4)), 8)
    assert (len(a), len(b)) == (4, 4)  # the longer loses tokens until they are equal, then B first
    a, b = truncate_pair(list(range(5)), list(range(5)), 7)
    assert (a, b) == ([0, 1, 2, 3], [0, 1, 2])


def test_encode_and_collate_give_bert_pairs_padded_to_the_batch(tokenizer_dir):
    from bertcli.tokenizer import load

    tok = load(tokenizer_dir)
    examples = [Example("a short one", "and its pair", 0), Example("a much longer text " * 20, "b " * 30, 1)]
    split = encode(tok, examples, 32, [0, 1])
    assert split.truncated == 1 and len(split.ids[1]) == 32
    batch = collate(split, np.array([0]), tok.pad_id)
    assert batch.attention_mask is None and batch.input_ids.shape[1] == len(split.ids[0])  # its own longest
    ids = split.ids[0].tolist()
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and ids.count(tok.sep_id) == 2
    b_start = ids.index(tok.sep_id) + 1
    assert batch.token_type_ids[0].tolist() == [0] * b_start + [1] * (len(ids) - b_start)
    both = collate(split, np.array([0, 1]), tok.pad_id)
    assert both.input_ids.shape == (2, 32) and both.attention_mask[0].sum() == len(ids)
    assert both.token_type_ids[0, len(ids):].sum() == 0  # padding is segment 0


def test_schedule_warms_up_over_the_ratio():
    from bertcli.train import get_lr

    cfg = load_finetune_config(None, ["train.warmup_ratio=0.25", "train.learning_rate=1e-3"])
    s = schedule(cfg, 8)
    assert s.warmup_steps == 2 and [round(get_lr(i, s), 6) for i in range(8)] == \
        [5e-4, 1e-3, 1e-3, 8.33e-4, 6.67e-4, 5e-4, 3.33e-4, 1.67e-4]


# --- a run ------------------------------------------------------------------------------------

def test_same_seed_same_run_and_the_random_baseline(trained_run, task):
    spec = load_model_for_finetune(trained_run)
    fields = Fields("sentence")
    train, dev = (read_split(task[k], "--" + k, fields) for k in ("train", "validation"))
    cfg = load_finetune_config(None, ["train.epochs=1", "train.batch_size=8", "data.max_seq_length=48"])
    labels = label_names(train, "train")
    first, again = (finetune_one(spec, train, dev, None, "classification", labels, cfg, seed=3) for _ in range(2))
    assert first.results["epochs"][0]["train_loss"] == again.results["epochs"][0]["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    random = finetune_one(spec, train, dev, None, "classification", labels, cfg, seed=3, init="random")
    pretrained_embeddings = spec.weights["bert.embeddings.word_embeddings.weight"]
    assert not torch.equal(random.model.bert.embeddings.word_embeddings.weight.cpu(), pretrained_embeddings)
    assert random.results["init"] == "random"


def test_finetune_writes_results_predictions_and_an_hf_classifier(cli, trained_run, task, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "ft"
    code, stdout, stderr = cli(*_args(task, trained_run, out, "--test", task["test"], "--seeds", "2", "--json"))
    assert code == 0, stderr
    results = json.loads(stdout)
    assert results == json.loads((out / "results.json").read_text())
    assert results["command"] == "finetune" and results["seeds"] == 2 and results["model"] == str(trained_run)
    name = task["train"].parent.name  # train.tsv: the task is named after its directory
    assert list(results["tasks"]) == [name]
    assert set(results["tasks"][name]) == {"accuracy", "f1", "matthews_correlation"}
    assert results["score"] == results["tasks"][name]["accuracy"] and results["labels"] == ["question", "statement"]
    assert [r["seed"] for r in results["runs"]] == [42, 43]
    assert "pretraining heads dropped" in stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["epoch"]) for r in records] == [(42, 1), (43, 1)]
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "results.json", "test_predictions.tsv",
                                              "model", ".bertcli-owner.json"}
    rows = (out / "test_predictions.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and len(rows) == 9
    model_dir = out / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "question", "1": "statement"} and config["label2id"] == {"question": 0, "statement": 1}
    assert not any(p.suffix == ".py" for p in model_dir.rglob("*"))  # no bertcli code
    classify = transformers.pipeline("text-classification", model=str(model_dir), device="cpu")
    texts = [line.split("\t")[0] for line in task["test"].read_text().splitlines()[1:]]
    assert [p["label"] for p in classify(texts)] == [r.split("\t")[1] for r in rows[1:]]
    # the fine-tuned model is itself a model finetune loads (its classifier kept: same labels)
    spec = load_model_for_finetune(model_dir)
    assert spec.id2label == {0: "question", 1: "statement"} and "classifier.weight" in spec.weights


def test_overwrite_replaces_only_its_own_output(cli, trained_run, task, tmp_path):
    mine = tmp_path / "theirs"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, stderr = cli(*_args(task, trained_run, mine, "--overwrite"))
    assert code == 2 and "not made by bertcli" in stderr and (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "ft"
    assert cli(*_args(task, trained_run, out))[0] == 0
    code, _, stderr = cli(*_args(task, trained_run, out))
    assert code == 2 and "--overwrite" in stderr
    assert cli(*_args(task, trained_run, out, "--overwrite", "--init", "random"))[0] == 0
    assert json.loads((out / "results.json").read_text())["init"] == "random"


def test_interrupted_run_leaves_nothing(cli, trained_run, task, tmp_path, monkeypatch):
    import bertcli.finetune.run as run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "save_classifier", interrupted)  # at the very end, with everything else written
    code, _, stderr = cli(*_args(task, trained_run, tmp_path / "ft"))
    assert code == 130
    assert list(tmp_path.iterdir()) == []  # no output, no temporary directory, no lock file


# --- bad input: one line, exit 2, nothing written ----------------------------------------------

def _published_copy(trained_run, tmp_path, edit) -> Path:
    from bertcli.export import export

    path = tmp_path / "model"
    export(trained_run, path)
    config = json.loads((path / "config.json").read_text())
    edit(path, config)
    (path / "config.json").write_text(json.dumps(config))
    return path


BAD = {
    "misspelt field": (lambda t, p: {"args": ["--text-field", "sentense"]}, "no column 'sentense'", "'sentence', 'label'"),
    "unseen label": (lambda t, p: {"validation": _write_tsv(p / "v.tsv", [("a text", "other")])}, "never occurs", "question"),
    "regression label": (lambda t, p: {"args": ["--task-type", "regression"]}, "not a finite number", "regression"),
    "empty split": (lambda t, p: {"validation": _write_tsv(p / "v.tsv", [])}, "holds no examples", "--validation"),
    "unloadable model": (lambda t, p: {"model": p}, "is neither a checkpoint", ""),
    "tokenizer mismatch": ("pad", "[PAD]=0 but the model's pad_token_id is 5", "does not belong"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_nothing_written(cli, trained_run, task, tmp_path, case):
    make, expected, also = BAD[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if make == "pad":
        given = {"model": _published_copy(trained_run, inputs, lambda path, c: c.update(pad_token_id=5))}
    else:
        given = make(task, inputs)
    out = tmp_path / "ft"
    args = ["finetune", "--model", given.get("model", trained_run), "--train", task["train"],
            "--validation", given.get("validation", task["validation"]), "--text-field", "sentence", "--out", out,
            *FAST, *given.get("args", [])]
    code, stdout, stderr = cli(*args)
    assert code == 2, stderr
    message = " ".join(stderr.split())
    assert expected in message and also in message
    assert stderr.strip().startswith("error:") and "Traceback" not in stderr
    assert not out.exists() and not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())


def test_mlm_model_without_pooler_starts_it_fresh(trained_run, tmp_path):
    from safetensors.torch import load_file, save_file

    def drop_pooler(path, config):
        weights = load_file(str(path / "model.safetensors"))
        save_file({k: v for k, v in weights.items() if not k.startswith(("bert.pooler", "cls.seq"))},
                  str(path / "model.safetensors"))
        config["architectures"] = ["BertForMaskedLM"]

    spec = load_model_for_finetune(_published_copy(trained_run, tmp_path, drop_pooler))
    assert not spec.has_pooler and any("no pooler" in n and "initialised fresh" in n for n in spec.notes)


def test_docs_options_match_help(cli, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli("finetune", "-h")
    in_help = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", out + err)) - {"--help"}
    docs = (Path(__file__).resolve().parents[1] / "docs" / "finetune.md").read_text()
    section = re.search(r"^### `bertcli finetune.*?(?=^#{2,3} )", docs, re.S | re.M).group(0)
    in_docs = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", section))
    assert in_help == in_docs, (in_help - in_docs, in_docs - in_help)



def test_regression_scores_correlations_and_saves_an_hf_regressor(trained_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    from bertcli.finetune import save_classifier

    spec = load_model_for_finetune(trained_run)
    texts = _lines(40)
    train = [Example(t, None, float(len(t.split()))) for t in texts[:32]]
    dev = [Example(t, None, str(len(t.split()))) for t in texts[32:]]  # numbers as text, as a CSV holds them
    cfg = load_finetune_config(None, ["train.epochs=1", "train.batch_size=8", "data.max_seq_length=48"])
    run = finetune_one(spec, train, dev, dev, "regression", None, cfg)
    assert set(run.results["validation"]) == {"pearson", "spearman", "mse"} and run.test_outputs.dtype.kind == "f"
    save_classifier(tmp_path / "model", spec, run, "regression", None, cfg)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert hf.config.problem_type == "regression" and hf.config.num_labels == 1
