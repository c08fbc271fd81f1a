"""GLUE's files as its download script writes them, and Hugging Face's glue, read into examples.

The fixtures under tests/fixtures/glue are tiny copies of each task's layout, quirks included:
stray double quotes, CoLA's headerless train/dev, MRPC's own column names, STS-B's ten columns,
QQP's rows broken across lines, MNLI's matched/mismatched files, and the AX diagnostic set.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bertcli.errors import UsageError
from bertcli.finetune.glue_tasks import TASKS, read_task, task_names

FIXTURES = Path(__file__).parent / "fixtures"
GLUE = FIXTURES / "glue"

# rows per split in the fixtures: train, validation split(s), test split(s)
COUNTS = {
    "cola": (8, {"validation": 4}, {"test": 3}),
    "sst2": (8, {"validation": 4}, {"test": 3}),
    "mrpc": (6, {"validation": 3}, {"test": 2}),
    "stsb": (8, {"validation": 4}, {"test": 3}),
    "qqp": (6, {"validation": 4}, {"test": 2}),
    "mnli": (9, {"matched": 3, "mismatched": 3}, {"test_matched": 2, "test_mismatched": 2, "ax": 3}),
    "qnli": (4, {"validation": 2}, {"test": 2}),
    "rte": (4, {"validation": 2}, {"test": 3}),
    "wnli": (4, {"validation": 2}, {"test": 2}),
}


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_reads_its_download_layout(name):
    data = read_task(TASKS[name], GLUE)
    train, validation, test = COUNTS[name]
    assert len(data.train) == train
    assert {k: len(v) for k, v in data.validation.items()} == validation
    assert {k: len(v) for k, v in data.test.items()} == test
    task = TASKS[name]
    for example in data.train + [e for split in data.validation.values() for e in split]:
        assert example.text and (example.text_pair is None) == (task.pair is None)
        if task.regression:
            assert isinstance(example.label, float) and 0 <= example.label <= 5
        else:
            assert example.label in range(len(task.labels))
    for split in data.test.values():
        assert [e.index for e in split] == [str(i) for i in range(len(split))] and all(e.label is None for e in split)


def test_quotes_are_text_not_quoting():
    """A stray `"` must stay in the sentence and must not swallow the rows after it."""
    sst2 = read_task(TASKS["sst2"], GLUE)
    assert sst2.validation["validation"][1].text == 'a tired , " flat mess '
    assert sst2.validation["validation"][2].text == "simply wonderful "
    assert read_task(TASKS["rte"], GLUE).test["test"][2].text == 'A "mini-earthquake hit the city.'


def test_task_quirks():
    cola = read_task(TASKS["cola"], GLUE)  # no header: the first row is an example; label in column 2
    assert cola.train[0].text.startswith("Our friends won't") and cola.train[0].label == 1
    assert cola.train[-1].label == 0 and cola.test["test"][2].text == 'Sue " sang.'
    mrpc = read_task(TASKS["mrpc"], GLUE)
    assert mrpc.train[1].label == 0 and mrpc.train[1].text.startswith("Yucaipa owned")
    stsb = read_task(TASKS["stsb"], GLUE)
    assert [e.label for e in stsb.train[:2]] == [5.0, 3.8]
    qqp = read_task(TASKS["qqp"], GLUE)  # the question broken across two lines is skipped and counted
    assert qqp.skipped_rows == 2 and "develop android" not in " ".join(e.text for e in qqp.train)
    mnli = read_task(TASKS["mnli"], GLUE)
    assert TASKS["mnli"].labels[mnli.train[0].label] == "neutral"
    assert mnli.test["ax"][2].text_pair == "A dog slept."
    rte = read_task(TASKS["rte"], GLUE)
    assert TASKS["rte"].labels[rte.train[0].label] == "not_entailment"


def test_mrpc_from_microsofts_files_splits_as_the_download_script():
    """Without train.tsv, MRPC comes from msr_paraphrase_*.txt (with their BOM) and dev_ids.tsv."""
    from_msr = read_task(TASKS["mrpc"], FIXTURES / "glue_mrpc_msr")
    from_tsv = read_task(TASKS["mrpc"], GLUE)
    assert from_msr.train == from_tsv.train and from_msr.validation == from_tsv.validation
    assert [(e.text, e.index) for e in from_msr.test["test"]] == [(e.text, e.index) for e in from_tsv.test["test"]]


def _as_hf_columns(name, examples, labelled):
    task = TASKS[name]
    first, second = task.hf_text
    columns = {first: [e.text for e in examples], "label": [e.label if labelled else -1 for e in examples],
               "idx": list(range(len(examples)))}
    if second:
        columns[second] = [e.text_pair for e in examples]
    return columns


def _hf_splits(name):
    """Each config's splits as Hugging Face's glue names them, built from the TSV fixture."""
    data = read_task(TASKS[name], GLUE)
    splits = {"train": _as_hf_columns(name, data.train, True)}
    hf = {s.name: s.hf for s in TASKS[name].validation + TASKS[name].test if s.hf_config is None}
    for split, examples in data.validation.items():
        splits[hf[split]] = _as_hf_columns(name, examples, True)
    for split, examples in data.test.items():
        if split != "ax":
            splits[hf[split]] = _as_hf_columns(name, examples, False)
    return splits


def _ax_split():
    ax = read_task(TASKS["mnli"], GLUE).test["ax"]
    return {"premise": [e.text for e in ax], "hypothesis": [e.text_pair for e in ax], "label": [-1] * len(ax),
            "idx": list(range(len(ax)))}


@pytest.fixture(scope="module")
def hf_glue(tmp_path_factory):
    """The fixtures as Hugging Face's glue: save_to_disk (one directory per config)."""
    datasets = pytest.importorskip("datasets")
    root = tmp_path_factory.mktemp("hf") / "glue"
    for name in TASKS:
        datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in _hf_splits(name).items()}).save_to_disk(
            str(root / name))
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(_ax_split())}).save_to_disk(str(root / "ax"))
    return root


@pytest.fixture(scope="module")
def hf_parquet(tmp_path_factory):
    """The fixtures as the hub's Parquet files: CONFIG/SPLIT-00000-of-00001.parquet."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("parquet") / "glue"
    for name, splits in [*((n, _hf_splits(n)) for n in TASKS), ("ax", {"test": _ax_split()})]:
        (root / name).mkdir(parents=True)
        for split, columns in splits.items():
            pq.write_table(pa.table(columns), root / name / f"{split}-00000-of-00001.parquet")
    return root


@pytest.mark.parametrize("layout", ["hf_glue", "hf_parquet"])
def test_hugging_face_glue_reads_as_the_tsv_files(layout, request):
    root = request.getfixturevalue(layout)
    for name in TASKS:
        tsv, hf = read_task(TASKS[name], GLUE), read_task(TASKS[name], root)
        assert hf.train == tsv.train, name
        assert hf.validation.keys() == tsv.validation.keys() and hf.test.keys() == tsv.test.keys()
        for split in tsv.validation:
            assert hf.validation[split] == tsv.validation[split]
        for split in tsv.test:
            assert [(e.text, e.text_pair, e.index, e.label) for e in hf.test[split]] == \
                   [(e.text, e.text_pair, e.index, e.label) for e in tsv.test[split]]


def test_task_names():
    assert task_names("all") == list(TASKS)
    assert task_names(["RTE, sst2"]) == ["sst2", "rte"]  # any case, GLUE's order
    with pytest.raises(UsageError, match="unknown task 'sst-2'.*cola sst2"):
        task_names(["sst-2"])


def _copy(tmp_path, *tasks):
    root = tmp_path / "glue"
    for t in tasks:
        shutil.copytree(GLUE / TASKS[t].directory, root / TASKS[t].directory)
    return root


@pytest.mark.parametrize("task, file, content, message", [
    ("rte", "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", r"train.tsv:2: label 'maybe' is not one of entailment, not_entailment"),
    ("rte", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\n", r"dev.tsv:2: 3 tab-separated fields where its header has 4"),
    ("sst2", "train.tsv", "text\tlabel\nfine\t1\n", r"train.tsv: no column 'sentence'"),
    ("stsb", "train.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                          "0\tg\tf\ty\to\ts\ts\ta\tb\thigh\n", r"train.tsv:2: score 'high' is not a number"),
    ("cola", "dev.tsv", "", r"dev.tsv holds no examples"),
    ("cola", "train.tsv", "gj04\t1\ttext\n", r"train.tsv:1: 3 tab-separated fields where its header has 4"),
    ("sst2", "train.tsv", b"sentence\tlabel\n\xff\xfe\t1\n", r"train.tsv: not UTF-8 text"),
    ("sst2", "dev.tsv", "sentence\tlabel\n" + "x" * 200_000 + "\t1\n", r"dev.tsv:2: not a GLUE TSV row \(field larger"),
    ("qqp", "train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n" + "1\t2\tbroken\n" * 12,
     r"train.tsv: 12 of 12 rows do not fit GLUE's QQP layout"),
])
def test_malformed_files_are_one_line_usage_errors(tmp_path, task, file, content, message):
    root = _copy(tmp_path, task)
    path = root / TASKS[task].directory / file
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UsageError, match=message) as e:
        read_task(TASKS[task], root)
    assert "\n" not in str(e.value)


def test_a_fifo_is_refused_not_read(tmp_path):
    import os

    root = _copy(tmp_path, "rte")
    (root / "RTE" / "train.tsv").unlink()
    os.mkfifo(root / "RTE" / "train.tsv")
    with pytest.raises(UsageError, match=r"train.tsv is a named pipe"):
        read_task(TASKS["rte"], root)


def test_missing_task_directory_and_file(tmp_path):
    root = _copy(tmp_path, "sst2")
    with pytest.raises(UsageError, match=r"has no RTE/ \(GLUE's download layout\) and no rte/"):
        read_task(TASKS["rte"], root)
    (root / "SST-2" / "dev.tsv").unlink()
    with pytest.raises(UsageError, match=r"dev.tsv is missing"):
        read_task(TASKS["sst2"], root)
    (root / "SST-2" / "test.tsv").unlink()  # no test split: no submission for it, not an error
    shutil.copy(GLUE / "SST-2" / "dev.tsv", root / "SST-2" / "dev.tsv")
    assert read_task(TASKS["sst2"], root).test == {}


def test_hf_label_out_of_range(tmp_path, hf_parquet):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "glue"
    shutil.copytree(hf_parquet / "rte", root / "rte")
    pq.write_table(pa.table({"sentence1": ["a"], "sentence2": ["b"], "label": [-1], "idx": [0]}),
                   root / "rte" / "validation-00000-of-00001.parquet")
    with pytest.raises(UsageError, match=r"split validation row 0: label -1 is not a class id 0..1"):
        read_task(TASKS["rte"], root)
