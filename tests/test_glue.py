"""`bertcli glue`: scoring as the leaderboard does, the submission files, the table, the recipe,
and bad input.

Most tests here drive the harness with a majority-class fine-tuner (the most frequent training
label, or the mean training score), a real baseline whose scores are known by hand; the tests at
the end run the real fine-tuning core on the fixtures with a tiny model.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bertcli.errors import UsageError
from bertcli.finetune.glue import (GlueOptions, glue_score, glue_table, median_run, run_glue, score_task,
                                   task_score, write_submission)
from bertcli.finetune.glue_recipes import RECIPE, load_recipe, recipe_yaml, task_overrides
from bertcli.finetune.glue_tasks import TASKS, read_task

from conftest import REPO

GLUE = Path(__file__).parent / "fixtures" / "glue"
SUBMISSION_FILES = {"CoLA.tsv": 3, "SST-2.tsv": 3, "MRPC.tsv": 2, "STS-B.tsv": 3, "QQP.tsv": 2, "MNLI-m.tsv": 2,
                    "MNLI-mm.tsv": 2, "AX.tsv": 3, "QNLI.tsv": 2, "RTE.tsv": 3, "WNLI.tsv": 2}


class Majority:
    """Predict the most frequent training label (the mean training score for STS-B) everywhere."""

    def check(self, model, configs):
        pass

    def __call__(self, job):
        labels = [e.label for e in job.data.train]
        value = sum(labels) / len(labels) if job.task.regression else Counter(labels).most_common(1)[0][0]
        splits = {**job.data.validation, **job.data.test}
        return {name: [value] * len(examples) for name, examples in splits.items()}


majority = Majority()


def test_each_tasks_metrics_known_answers():
    """Hand-computed values of every task's metric names on the fixtures' validation splits."""
    data = {name: read_task(TASKS[name], GLUE) for name in TASKS}
    cola = score_task(TASKS["cola"], data["cola"], {"validation": [1, 1, 1, 0]})  # references 1 0 1 0
    assert cola == {"matthews_correlation": pytest.approx(1 / 3 ** 0.5)}  # (2·1 − 1·0)/sqrt(3·2·1·2)
    assert score_task(TASKS["sst2"], data["sst2"], {"validation": [1, 1, 1, 1]}) == {"accuracy": 0.5}
    mrpc = score_task(TASKS["mrpc"], data["mrpc"], {"validation": [1, 1, 1]})  # references 1 0 1
    assert mrpc == {"f1": pytest.approx(0.8), "accuracy": pytest.approx(2 / 3)}
    stsb = score_task(TASKS["stsb"], data["stsb"], {"validation": [5.0, 4.0, 4.5, 1.0]})  # refs 5 4.75 5 2.4
    assert set(stsb) == {"pearson", "spearman"} and stsb["spearman"] == pytest.approx(0.9486833)
    qqp = score_task(TASKS["qqp"], data["qqp"], {"validation": [1, 0, 0, 0]})  # references 1 0 1 0
    assert qqp == {"f1": pytest.approx(2 / 3), "accuracy": 0.75}
    # MNLI references: neutral, contradiction, entailment (ids 1 2 0) in both validation files
    mnli = score_task(TASKS["mnli"], data["mnli"], {"matched": [1, 2, 0], "mismatched": [1, 1, 1]})
    assert mnli == {"accuracy_matched": 1.0, "accuracy_mismatched": pytest.approx(1 / 3)}
    for name in ("qnli", "rte", "wnli"):
        assert score_task(TASKS[name], data[name], {"validation": [e.label for e in data[name].validation["validation"]]}) \
            == {"accuracy": 1.0}


def test_glue_average_as_the_leaderboard():
    """Two-metric tasks are averaged first, then the tasks; MNLI counts once."""
    tasks = {"cola": {"matthews_correlation": 0.5}, "mrpc": {"f1": 0.9, "accuracy": 0.8},
             "mnli": {"accuracy_matched": 0.84, "accuracy_mismatched": 0.82}}
    assert task_score(tasks["mrpc"]) == pytest.approx(0.85)
    assert glue_score(tasks) == pytest.approx((0.5 + 0.85 + 0.83) / 3)
    assert glue_score({}) is None


def test_median_run_is_the_middle_seed():
    runs = [{"score": s} for s in (0.6, 0.9, 0.7)]
    assert median_run(runs) == 2
    assert median_run([{"score": 0.6}, {"score": 0.5}]) == 1  # the lower of two middles


def test_submission_files_names_columns_and_label_strings(tmp_path):
    out = tmp_path / "out"
    results = run_glue(GlueOptions(model=tmp_path / "bert", data=GLUE, out=out, seeds=2), majority)
    files = {p.name: p.read_text().splitlines() for p in (out / "submission").iterdir()}
    assert {name: len(lines) - 1 for name, lines in files.items()} == SUBMISSION_FILES
    assert sorted(results["submission"]) == sorted(SUBMISSION_FILES)
    for lines in files.values():
        assert lines[0] == "index\tprediction"
        assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(len(lines) - 1)]
    predictions = {name: {line.split("\t")[1] for line in lines[1:]} for name, lines in files.items()}
    assert predictions["RTE.tsv"] <= {"entailment", "not_entailment"} and predictions["RTE.tsv"]
    assert predictions["QNLI.tsv"] <= {"entailment", "not_entailment"}
    assert predictions["MNLI-m.tsv"] == predictions["AX.tsv"] == {"entailment"}  # MNLI's majority, on AX too
    assert predictions["SST-2.tsv"] <= {"0", "1"} and predictions["CoLA.tsv"] <= {"0", "1"}
    assert predictions["STS-B.tsv"] == {"3.225"}  # the mean training score (25.8 / 8), three decimals
    # results.json: the report's contract
    saved = json.loads((out / "results.json").read_text())
    assert saved == results and saved["command"] == "glue" and saved["seeds"] == 2
    assert set(saved["tasks"]) == set(TASKS) and saved["score"] == pytest.approx(glue_score(saved["tasks"]))
    assert saved["tasks"]["mnli"] == {"accuracy_matched": pytest.approx(1 / 3), "accuracy_mismatched": pytest.approx(1 / 3)}
    assert saved["tasks"]["qqp"] == {"f1": pytest.approx(2 / 3), "accuracy": 0.5}  # all "1" (the first of a tie)
    assert [r["seed"] for r in saved["runs"]["rte"]] == [42, 43]  # the finetune config's seed, then the next
    assert (out / "runs" / "rte" / "seed-43").is_dir()


def test_stsb_predictions_are_clipped_to_the_leaderboards_range(tmp_path):
    data = read_task(TASKS["stsb"], GLUE)
    write_submission(tmp_path, TASKS["stsb"], data, {"test": [-0.4, 2.12345, 7.0]})
    assert (tmp_path / "STS-B.tsv").read_text() == "index\tprediction\n0\t0.000\n1\t2.123\n2\t5.000\n"


def test_table_as_printed():
    from rich.console import Console

    results = {"seeds": 3, "quick": False, "scored_tasks": 3, "score": (0.5 + 0.85 + 0.83) / 3,
               "tasks": {"cola": {"matthews_correlation": 0.5}, "mrpc": {"f1": 0.9, "accuracy": 0.8},
                         "mnli": {"accuracy_matched": 0.84, "accuracy_mismatched": 0.82}}}
    buffer = io.StringIO()
    Console(file=buffer, width=80, color_system=None).print(glue_table(results))
    assert [line.rstrip() for line in buffer.getvalue().splitlines()] == [
        "GLUE validation, median of 3 seeds",
        "",
        "  task   metrics                   score",
        " ────────────────────────────────────────",
        "  cola   mcc 50.0                   50.0",
        "  mrpc   f1 90.0  acc 80.0          85.0",
        "  mnli   acc-m 84.0  acc-mm 82.0    83.0",
        "",
        "  GLUE   average of 3 of 9 tasks    72.7",
        ""]


def test_quick_reads_samples_and_writes_no_submission(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    quick = dict(RECIPE, quick=dict(RECIPE["quick"], max_train_examples=3, max_eval_examples=2))
    recipe.write_text(yaml.safe_dump(quick))
    seen = {}

    class Record(Majority):
        def __call__(self, job):
            seen[job.task.name] = (len(job.data.train), {k: len(v) for k, v in job.data.validation.items()}, job.config)
            return super().__call__(job)

    results = run_glue(GlueOptions(model=tmp_path / "bert", data=GLUE, out=tmp_path / "out", quick=True, recipe=recipe), Record())
    assert list(seen) == ["sst2", "rte"] and seen["sst2"][:2] == (3, {"validation": 2})
    assert seen["rte"][2].train.epochs == 1 and seen["rte"][2].train.learning_rate == 1e-3
    assert seen["rte"][2].train.batch_size == 16  # the task's own recipe below quick.set
    assert results["quick"] and results["submission"] == []
    assert not (tmp_path / "out" / "submission").exists()


def test_from_mnli_starts_rte_from_the_mnli_model(tmp_path):
    starts = {}

    class Record(Majority):
        def __call__(self, job):
            starts[job.task.name] = (job.model, job.keep_model, job.work_dir)
            return super().__call__(job)

    record = Record()
    run_glue(GlueOptions(model=tmp_path / "bert", data=GLUE, out=tmp_path / "out", tasks=["rte,mnli,sst2"],
                         from_mnli=True), record)
    assert list(starts) == ["mnli", "sst2", "rte"]  # MNLI first
    assert starts["mnli"][1] and not starts["rte"][1] and starts["sst2"][0] == tmp_path / "bert"
    assert starts["rte"][0].parent.name == "seed-42" and starts["rte"][0].name == "model"
    assert starts["rte"][0].parent.parent == starts["mnli"][2].parent  # the MNLI run's directory
    with pytest.raises(UsageError, match="add mnli to --tasks"):
        run_glue(GlueOptions(model=tmp_path / "bert", data=GLUE, out=tmp_path / "o2", tasks=["rte"], from_mnli=True), record)


def test_interrupted_run_leaves_nothing(tmp_path):
    class Interrupted(Majority):
        def __call__(self, job):
            if job.task.name == "rte":
                raise KeyboardInterrupt
            return super().__call__(job)

    with pytest.raises(KeyboardInterrupt):
        run_glue(GlueOptions(model=tmp_path / "bert", data=GLUE, out=tmp_path / "out", tasks=["sst2,rte"]), Interrupted())
    assert list(tmp_path.iterdir()) == []  # no output, no temporary directory, no lock


def test_recipe_precedence_and_shipped_copy():
    assert "train.learning_rate=1.0e-05" in task_overrides(RECIPE, "rte", quick=False, sets=[])
    overrides = task_overrides(RECIPE, "rte", quick=True, sets=["train.epochs=7"])
    assert "train.learning_rate=0.001" in overrides and "train.learning_rate=1.0e-05" not in overrides
    assert overrides.index("train.epochs=1") < overrides.index("train.epochs=7")  # --set comes last, and wins
    assert (REPO / "configs" / "glue.yaml").read_text() == recipe_yaml(), "regenerate: bertcli glue --print-recipe"
    assert yaml.safe_load(recipe_yaml()) == RECIPE


@pytest.mark.parametrize("content, message", [
    ("all: {}\n", "tasks is missing"),
    (yaml.safe_dump(dict(RECIPE, tasks={"sst-2": {}})), r"tasks.sst-2: not a GLUE task"),
    (yaml.safe_dump(dict(RECIPE, from_mnli=["mnli"])), "from_mnli must list GLUE tasks other than mnli"),
    ("tasks: [\n", "not valid YAML"),
])
def test_bad_recipe(tmp_path, content, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_recipe(path)


@pytest.mark.parametrize("args, message", [
    (["--tasks", "sst2,imdb"], "unknown task 'imdb'"),
    (["--tasks", "cola"], "has no CoLA/"),
    (["--tasks", "rte", "--seeds", "0"], "--seeds 0"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, message):
    data = tmp_path / "glue"
    shutil.copytree(GLUE / "SST-2", data / "SST-2")
    shutil.copytree(GLUE / "RTE", data / "RTE")
    code, out, err = cli("glue", "--model", tmp_path, "--data", data, "--out", tmp_path / "out", *args)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_malformed_file_through_the_cli(cli, tmp_path):
    data = tmp_path / "glue"
    shutil.copytree(GLUE / "RTE", data / "RTE")
    (data / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tonly one\n")
    code, out, err = cli("glue", "--model", tmp_path, "--data", data, "--out", tmp_path / "out", "--tasks", "rte")
    assert code == 2 and "dev.tsv:2: 2 tab-separated fields where its header has 4" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_print_recipe(cli):
    code, out, err = cli("glue", "--print-recipe")
    assert code == 0 and yaml.safe_load(out) == RECIPE


# --- the real fine-tuning core, a tiny model -------------------------------------------------

from test_glue_tasks import hf_glue  # noqa: E402,F401  (the fixtures as a Hugging Face save_to_disk glue)

TINY_RUN = ["--set", "data.max_seq_length=64", "--set", "train.epochs=1", "--set", "system.device=cpu"]


def test_glue_on_every_task_with_the_core(cli, trained_run, tmp_path):
    """All nine tasks in the download layout, RTE/MRPC/STS-B from the MNLI model, through the CLI."""
    out = tmp_path / "out"
    code, stdout, err = cli("glue", "--model", trained_run, "--data", GLUE, "--out", out, "--from-mnli", "--json",
                            *TINY_RUN)
    assert code == 0, err
    printed = json.loads(stdout)
    assert set(printed) == {"tasks", "score"}
    assert {task: set(metrics) for task, metrics in printed["tasks"].items()} == {
        name: set(TASKS[name].metrics) for name in TASKS}
    assert printed["score"] == pytest.approx(glue_score(printed["tasks"]))
    assert "average of all 9 tasks" in err and "mnli seed 42 (1/1): accuracy_matched" in err
    assert sorted(p.name for p in (out / "submission").iterdir()) == sorted(SUBMISSION_FILES)
    run = out / "runs" / "rte" / "seed-42"
    assert {p.name for p in run.iterdir()} == {"config.yaml", "metrics.jsonl", "run.json"}
    assert (out / "runs" / "mnli" / "seed-42" / "model" / "config.json").is_file()  # what RTE started from
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["learning_rate"] == 1e-5  # RTE's recipe
    mnli_config = json.loads((out / "runs" / "mnli" / "seed-42" / "model" / "config.json").read_text())
    assert mnli_config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    labels = {line.split("\t")[1] for line in (out / "submission" / "AX.tsv").read_text().splitlines()[1:]}
    assert labels <= {"entailment", "neutral", "contradiction"}


def test_glue_on_a_saved_hugging_face_dataset(cli, trained_run, hf_glue, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("glue", "--model", trained_run, "--data", hf_glue, "--out", out, "--json",
                            "--tasks", "stsb,mnli", *TINY_RUN)  # regression; two validation splits; AX
    assert code == 0, err
    assert json.loads(stdout)["tasks"].keys() == {"stsb", "mnli"}
    counts = {p.name: len(p.read_text().splitlines()) - 1 for p in (out / "submission").iterdir()}
    assert counts == {k: v for k, v in SUBMISSION_FILES.items() if k.startswith(("STS-B", "MNLI", "AX"))}
    code, _, err = cli("glue", "--model", trained_run, "--data", hf_glue, "--out", out, "--tasks", "rte", *TINY_RUN)
    assert code == 2 and "pass --overwrite" in err  # and with it, only a glue output is replaced
    code, _, err = cli("glue", "--model", trained_run, "--data", hf_glue, "--out", out, "--tasks", "rte", "--overwrite",
                       *TINY_RUN)
    assert code == 0, err
    assert set(json.loads((out / "results.json").read_text())["tasks"]) == {"rte"}


def test_a_model_bertcli_cannot_load_writes_nothing(cli, tmp_path):
    code, _, err = cli("glue", "--model", tmp_path / "missing", "--data", GLUE, "--out", tmp_path / "out",
                       "--tasks", "rte")
    assert code == 2 and "--model" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# --- docs ------------------------------------------------------------------------------------

DOCS = REPO / "docs" / "finetune.md"


def _glue_section() -> str:
    text = DOCS.read_text()
    start = text.index("## GLUE: `bertcli glue`")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_help_and_docs_name_the_same_options(cli, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli("glue", "--help")
    in_help = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out)) - {"--help"}
    in_docs = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", _glue_section()))
    assert in_help == in_docs


def test_docs_recipe_table_is_the_recipe():
    rows = [line.strip("|").split("|") for line in _glue_section().splitlines() if line.startswith("| ") and
            line.split("|")[1].strip() in TASKS and len(line.split("|")) == 7]
    table = {cells[0].strip(): [float(c) for c in cells[1:]] for cells in rows}
    assert table == {name: [s["train.learning_rate"], s["train.epochs"], s["train.batch_size"], s["train.weight_decay"]]
                     for name, s in RECIPE["tasks"].items()}


def test_sequences_longer_than_the_model_are_refused_before_writing(cli, trained_run, tmp_path):
    code, _, err = cli("glue", "--model", trained_run, "--data", GLUE, "--out", tmp_path / "out", "--tasks", "rte")
    assert code == 2 and "data.max_seq_length 128 is more than the 64 positions" in err and "--set data.max_seq_length=64" in err
    assert not (tmp_path / "out").exists()
