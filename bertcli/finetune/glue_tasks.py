"""The nine GLUE tasks and the AX diagnostic set: their files, columns, labels and metrics, and
the readers that turn them into examples.

Two input layouts, per task:
- GLUE as its download script writes it (`CoLA/ SST-2/ MRPC/ STS-B/ QQP/ MNLI/ QNLI/ RTE/ WNLI/`
  and `diagnostic/diagnostic.tsv`), tab-separated and read with quoting off: the sentences hold
  stray `"` that a CSV reader would take for quotes and so swallow rows. Each task's quirks are
  handled: CoLA's headerless train/dev, MRPC's own column names (and its raw `msr_paraphrase_*`
  files where the split TSVs are missing), STS-B's float score, QQP's broken rows, MNLI's
  matched/mismatched files, a UTF-8 BOM.
- Hugging Face's `glue` dataset, one directory per config (`cola/ sst2/ … ax/`): a `save_to_disk`
  directory or the hub's Parquet files (`train-00000-of-00001.parquet`, …); test labels are -1.

Everything comes out as a `TaskData`: train examples, the validation splits a task is scored on,
the test splits that go into a leaderboard submission. This module neither trains nor scores.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from bertcli.errors import UsageError
from bertcli.fsutil import input_file_problem

# QQP's train and dev files hold a few rows broken across lines by a newline inside a question;
# like every GLUE harness, they are skipped (and counted). Beyond this many it is not QQP.
MAX_BROKEN_SHARE, MAX_BROKEN_ROWS = 0.01, 10
# MNLI's train.tsv, the largest, is about 330 MB; a file many times that is not GLUE's and would not fit.
MAX_FIELD_CHARS = 131_072  # csv's default; no GLUE sentence comes near it
MAX_FILE_BYTES = 2 << 30


@dataclass(frozen=True)
class Split:
    """One file of a task: what the harness calls it, where it lies in each layout."""

    name: str  # "validation", "matched", "test", "ax", …: the key in TaskData and predictions
    tsv: str  # path in the task's directory (GLUE layout)
    hf: str  # split name of Hugging Face's glue config
    submission: str | None = None  # test splits: the leaderboard's file name
    hf_config: str | None = None  # a split held in another config (AX: "ax")
    optional: bool = False  # may be missing (AX, or a test split a user does not have)


@dataclass(frozen=True)
class GlueTask:
    name: str  # cola, sst2, …
    directory: str  # CoLA, SST-2, … (GLUE layout)
    text: str  # GLUE TSV column of the first text
    pair: str | None  # … of the second text (None: single sentence)
    label: str  # … of the label
    hf_text: tuple[str, str | None]  # the same two columns in Hugging Face's glue
    labels: tuple[str, ...] | None  # label strings as GLUE writes them, in Hugging Face's id order; None: regression
    metrics: tuple[str, ...]  # names in results.json, as `metrics.py` computes them
    validation: tuple[Split, ...]
    test: tuple[Split, ...]
    index: str = "index"  # test files' id column
    headerless: tuple[str, ...] | None = None  # column names of train/dev files that have no header row
    skip_broken_rows: bool = False

    @property
    def regression(self) -> bool:
        return self.labels is None


def _dev(name="validation", tsv="dev.tsv", hf="validation"):
    return Split(name, tsv, hf)


def _test(submission, tsv="test.tsv", hf="test", name="test"):
    return Split(name, tsv, hf, submission=submission, optional=True)


BINARY = ("0", "1")
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")
AX = Split("ax", "../diagnostic/diagnostic.tsv", "test", submission="AX.tsv", hf_config="ax", optional=True)

TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", "sentence", None, "label", ("sentence", None), BINARY, ("matthews_correlation",),
             (_dev(),), (_test("CoLA.tsv"),), headerless=("source", "label", "original_label", "sentence")),
    GlueTask("sst2", "SST-2", "sentence", None, "label", ("sentence", None), BINARY, ("accuracy",),
             (_dev(),), (_test("SST-2.tsv"),)),
    GlueTask("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("sentence1", "sentence2"), BINARY,
             ("f1", "accuracy"), (_dev(),), (_test("MRPC.tsv"),)),
    GlueTask("stsb", "STS-B", "sentence1", "sentence2", "score", ("sentence1", "sentence2"), None,
             ("pearson", "spearman"), (_dev(),), (_test("STS-B.tsv"),)),
    GlueTask("qqp", "QQP", "question1", "question2", "is_duplicate", ("question1", "question2"), BINARY,
             ("f1", "accuracy"), (_dev(),), (_test("QQP.tsv"),), index="id", skip_broken_rows=True),
    GlueTask("mnli", "MNLI", "sentence1", "sentence2", "gold_label", ("premise", "hypothesis"), NLI3,
             ("accuracy_matched", "accuracy_mismatched"),
             (_dev("matched", "dev_matched.tsv", "validation_matched"),
              _dev("mismatched", "dev_mismatched.tsv", "validation_mismatched")),
             (_test("MNLI-m.tsv", "test_matched.tsv", "test_matched", "test_matched"),
              _test("MNLI-mm.tsv", "test_mismatched.tsv", "test_mismatched", "test_mismatched"), AX)),
    GlueTask("qnli", "QNLI", "question", "sentence", "label", ("question", "sentence"), NLI2, ("accuracy",),
             (_dev(),), (_test("QNLI.tsv"),)),
    GlueTask("rte", "RTE", "sentence1", "sentence2", "label", ("sentence1", "sentence2"), NLI2, ("accuracy",),
             (_dev(),), (_test("RTE.tsv"),)),
    GlueTask("wnli", "WNLI", "sentence1", "sentence2", "label", ("sentence1", "sentence2"), BINARY, ("accuracy",),
             (_dev(),), (_test("WNLI.tsv"),)),
)}
AX_COLUMNS = ("sentence1", "sentence2")  # diagnostic.tsv: index, sentence1, sentence2
AX_HF_COLUMNS = ("premise", "hypothesis")


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None
    label: int | float | None  # class id (into GlueTask.labels) or score; None on test splits
    index: str  # the row's id: GLUE's `index` (test files) or its position


@dataclass
class TaskData:
    task: GlueTask
    source: str  # where it was read from, for messages
    train: list[Example]
    validation: dict[str, list[Example]]
    test: dict[str, list[Example]] = field(default_factory=dict)
    skipped_rows: int = 0  # QQP's broken rows

    def sample(self, train: int, evaluate: int, seed: int = 0) -> "TaskData":
        """At most `train` and `evaluate` examples of each split, drawn at random in file order
        (--quick); no test splits, since a submission needs them whole."""
        rng = random.Random(seed)

        def draw(examples, n):
            return examples if len(examples) <= n else [examples[i] for i in sorted(rng.sample(range(len(examples)), n))]

        return TaskData(self.task, self.source, draw(self.train, train),
                        {k: draw(v, evaluate) for k, v in self.validation.items()}, {}, self.skipped_rows)


def task_names(spec: str | list[str]) -> list[str]:
    """`all`, or task names (comma- or space-separated, any case), checked and in GLUE's order."""
    names = spec if isinstance(spec, list) else [spec]
    wanted = [n.strip().lower() for item in names for n in item.replace(",", " ").split()]
    if wanted == ["all"]:
        return list(TASKS)
    for name in wanted:
        if name not in TASKS:
            raise UsageError(f"--tasks: unknown task {name!r}; GLUE's tasks are {' '.join(TASKS)} (or all)")
    if not wanted:
        raise UsageError(f"--tasks is empty; give some of {' '.join(TASKS)} (or all)")
    return [n for n in TASKS if n in wanted]


def read_task(task: GlueTask, data_dir: Path) -> TaskData:
    """Read one task from `data_dir`, in GLUE's download layout or as Hugging Face's glue."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"--data {data_dir} is not a directory; give the directory GLUE's download script wrote "
                         "(CoLA/ SST-2/ …) or a Hugging Face glue dataset (cola/ sst2/ …)")
    if (data_dir / task.directory).is_dir():
        return _read_glue_layout(task, data_dir / task.directory)
    if (data_dir / task.name).is_dir():
        return _read_hf_layout(task, data_dir)
    raise UsageError(f"--data {data_dir} has no {task.directory}/ (GLUE's download layout) and no {task.name}/ "
                     f"(Hugging Face glue, save_to_disk or Parquet); download {task.name} there or leave it out "
                     "of --tasks")


# --- GLUE's download layout ------------------------------------------------------------------

def _read_glue_layout(task: GlueTask, directory: Path) -> TaskData:
    if task.name == "mrpc" and not (directory / "train.tsv").is_file():
        train, validation = _mrpc_from_msr(task, directory)
    else:
        train = _read_tsv(task, directory / "train.tsv", labelled=True)
        validation = {s.name: _read_tsv(task, directory / s.tsv, labelled=True) for s in task.validation}
    test = {}
    if task.name == "mrpc" and not (directory / "test.tsv").is_file() and (directory / "msr_paraphrase_test.txt").is_file():
        test["test"] = _mrpc_test_from_msr(task, directory / "msr_paraphrase_test.txt")
    for split in task.test:
        if split.name in test:
            continue
        path = directory / split.tsv
        if path.is_file():
            columns = AX_COLUMNS if split.hf_config == "ax" else None
            test[split.name] = _read_tsv(task, path, labelled=False, columns=columns)
        elif not split.optional:
            raise UsageError(f"{path} is missing")
    skipped = sum(getattr(rows, "skipped", 0) for rows in [train, *validation.values()])
    return TaskData(task, str(directory), list(train), {k: list(v) for k, v in validation.items()},
                    {k: list(v) for k, v in test.items()}, skipped)


class _Rows(list):
    skipped = 0


def _tsv_rows(path: Path):
    """(line number, fields) of a tab-separated file read as GLUE's files must be: no quoting."""
    problem = input_file_problem(path)
    if problem == "does not exist":
        raise UsageError(f"{path} is missing; {path.parent} should hold GLUE's {path.parent.name} files as its "
                         "download script writes them")
    if problem:
        raise UsageError(f"{path} {problem}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UsageError(f"{path} is larger than {MAX_FILE_BYTES >> 30} GiB; GLUE's largest file is about 330 MB")
    line = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            # csv's field cap is process-wide and other readers raise it: set GLUE's own each time
            csv.field_size_limit(MAX_FIELD_CHARS)
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for fields in reader:
                line = reader.line_num
                yield line, fields
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); GLUE's files are UTF-8") from None
    except csv.Error as e:
        raise UsageError(f"{path}:{line + 1}: not a GLUE TSV row ({e})") from None


def _read_tsv(task: GlueTask, path: Path, labelled: bool, columns: tuple[str, str] | None = None) -> _Rows:
    """Examples of one GLUE TSV file; a row that does not fit the layout is an error naming its line
    (QQP: skipped and counted, up to MAX_BROKEN_SHARE)."""
    text_col, pair_col = columns or (task.text, task.pair)
    rows = _tsv_rows(path)
    if task.headerless and labelled:
        header = list(task.headerless)
    else:
        header = next((fields for _, fields in rows), None)
        if header is None:
            raise UsageError(f"{path} is empty; it should start with a header row")
    needed = [text_col] + ([pair_col] if pair_col else []) + ([task.label] if labelled else [task.index])
    missing = [c for c in needed if c not in header]
    if missing:
        raise UsageError(f"{path}: no column {missing[0]!r} (its header is {' | '.join(header)[:200]!r}); is this "
                         f"GLUE's {task.directory} {'train/dev' if labelled else 'test'} file?")
    at = {name: header.index(name) for name in needed}
    label_last = labelled and at[task.label] == len(header) - 1
    out = _Rows()
    position = 0
    for line, fields in rows:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line (files end with one)
        # STS-B and MNLI keep the label last; HF and Google's processors take it from the end of the row
        if len(fields) < len(header) or (len(fields) > len(header) and not label_last):
            if task.skip_broken_rows and labelled:
                out.skipped += 1
                continue
            raise UsageError(f"{path}:{line}: {len(fields)} tab-separated fields where its header has "
                             f"{len(header)}; the file is damaged or not GLUE's {task.directory}")
        label = None
        if labelled:
            label = _label(task, fields[-1] if label_last else fields[at[task.label]], path, line)
            if label is None:  # QQP: a broken row whose label column holds text
                out.skipped += 1
                continue
        index = fields[at[task.index]] if not labelled else str(position)
        out.append(Example(fields[at[text_col]], fields[at[pair_col]] if pair_col else None, label, index))
        position += 1
    if out.skipped > max(MAX_BROKEN_ROWS, MAX_BROKEN_SHARE * (len(out) + out.skipped)):
        raise UsageError(f"{path}: {out.skipped} of {len(out) + out.skipped} rows do not fit GLUE's "
                         f"{task.directory} layout; the file is damaged")
    if not out:
        raise UsageError(f"{path} holds no examples")
    return out


def _label(task: GlueTask, value: str, path: Path, line: int) -> int | float | None:
    value = value.strip()
    if task.regression:
        try:
            score = float(value)
        except ValueError:
            score = float("nan")
        if score == score and abs(score) != float("inf"):
            return score
        raise UsageError(f"{path}:{line}: score {value[:40]!r} is not a number")
    if value in task.labels:
        return task.labels.index(value)
    if task.skip_broken_rows:
        return None
    raise UsageError(f"{path}:{line}: label {value[:40]!r} is not one of {', '.join(task.labels)}")


def _msr_rows(source: Path):
    rows = _tsv_rows(source)
    header = next((fields for _, fields in rows), [])
    if header != ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]:
        raise UsageError(f"{source}: its header is not MRPC's (Quality, #1 ID, #2 ID, #1 String, #2 String)")
    for line, fields in rows:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(header):
            raise UsageError(f"{source}:{line}: {len(fields)} tab-separated fields where MRPC has {len(header)}")
        yield line, fields


def _mrpc_test_from_msr(task: GlueTask, source: Path) -> _Rows:
    """MRPC's test split from msr_paraphrase_test.txt, indexed by row as the download script's test.tsv."""
    out = _Rows(Example(f[3], f[4], None, str(i)) for i, (_, f) in enumerate(_msr_rows(source)))
    if not out:
        raise UsageError(f"{source} holds no examples")
    return out


def _mrpc_from_msr(task: GlueTask, directory: Path) -> tuple[_Rows, dict[str, _Rows]]:
    """MRPC from Microsoft's own files, split as GLUE's download script splits them: the pairs
    listed in dev_ids.tsv are dev, the rest of msr_paraphrase_train.txt is train."""
    source = directory / "msr_paraphrase_train.txt"
    ids_file = directory / "dev_ids.tsv"
    if not source.is_file() or not ids_file.is_file():
        raise UsageError(f"{directory} has neither train.tsv nor msr_paraphrase_train.txt with dev_ids.tsv; run "
                         "GLUE's download script for MRPC there")
    dev_ids = {tuple(fields[:2]) for _, fields in _tsv_rows(ids_file) if len(fields) >= 2}
    train, dev = _Rows(), _Rows()
    for line, fields in _msr_rows(source):
        target = dev if tuple(fields[1:3]) in dev_ids else train
        target.append(Example(fields[3], fields[4], _label(task, fields[0], source, line), str(len(target))))
    if not train or not dev:
        raise UsageError(f"{source} with {ids_file}: an empty {'train' if not train else 'dev'} split; "
                         "dev_ids.tsv does not belong to this file")
    return train, {"validation": dev}


# --- Hugging Face's glue ---------------------------------------------------------------------

def _read_hf_layout(task: GlueTask, data_dir: Path) -> TaskData:
    tables = {}
    for split in [Split("train", "", "train"), *task.validation, *task.test]:
        config = split.hf_config or task.name
        columns = AX_HF_COLUMNS if config == "ax" else task.hf_text
        table = _hf_split(data_dir / config, split.hf, [c for c in columns if c] + ["label", "idx"],
                          split.optional)
        if table is not None:
            tables[split.name] = _hf_examples(task, table, columns, data_dir / config, split.hf,
                                              labelled=split.submission is None)
    train = tables.pop("train")
    validation = {s.name: tables.pop(s.name) for s in task.validation}
    return TaskData(task, str(data_dir / task.name), train, validation, tables)


def _hf_split(directory: Path, split: str, columns: list[str], optional: bool) -> dict | None:
    """The named columns of one split as lists, from a save_to_disk directory or Parquet files."""
    if not directory.is_dir():
        if optional:
            return None
        raise UsageError(f"{directory} is missing")
    if (directory / "dataset_dict.json").is_file():
        try:
            import datasets
        except ImportError:
            raise UsageError(f"{directory} is a Hugging Face save_to_disk directory: reading it needs "
                             "pip install 'bertcli[datasets]'") from None
        try:
            saved = datasets.load_from_disk(str(directory))
        except Exception as e:  # datasets raises many types for a damaged directory
            raise UsageError(f"{directory}: cannot load it with datasets.load_from_disk ({' '.join(str(e).split())[:200]})") from None
        if split not in saved:
            if optional:
                return None
            raise UsageError(f"{directory} has no split {split!r}; its splits are {', '.join(saved)}")
        names = saved[split].column_names
        _check_columns(columns, names, f"{directory} split {split}")
        return {c: saved[split][c] for c in columns}
    files = sorted(directory.glob(f"{split}-*.parquet")) or sorted(directory.glob(f"{split}.parquet"))
    if not files:
        if optional:
            return None
        raise UsageError(f"{directory} holds neither dataset_dict.json (save_to_disk) nor {split}-*.parquet; give "
                         "Hugging Face's glue there")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{files[0]}: reading Parquet needs pip install 'bertcli[parquet]'") from None
    out = {c: [] for c in columns}
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
            _check_columns(columns, parquet.schema_arrow.names, str(path))
            table = parquet.read(columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise UsageError(f"{path}: not a readable Parquet file ({e})") from None
        for c in columns:
            out[c].extend(table.column(c).to_pylist())
    return out


def _check_columns(wanted: list[str], names: list[str], where: str) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise UsageError(f"{where}: no column {missing[0]!r}; its columns are {', '.join(names)} — is this "
                         "Hugging Face's glue?")


def _hf_examples(task: GlueTask, table: dict, columns, directory: Path, split: str, labelled: bool) -> list[Example]:
    text_col, pair_col = columns
    out = []
    for row, (text, label, idx) in enumerate(zip(table[text_col], table["label"], table["idx"])):
        pair = table[pair_col][row] if pair_col else None
        if not isinstance(text, str) or (pair_col and not isinstance(pair, str)):
            raise UsageError(f"{directory} split {split} row {row}: the text is not a string")
        if labelled:
            label = _hf_label(task, label, directory, split, row)
        out.append(Example(text, pair, label if labelled else None, str(idx)))
    if not out:
        raise UsageError(f"{directory} split {split} holds no examples")
    return out


def _hf_label(task: GlueTask, label, directory: Path, split: str, row: int) -> int | float:
    where = f"{directory} split {split} row {row}"
    if task.regression:
        if isinstance(label, (int, float)) and not isinstance(label, bool) and label == label:
            return float(label)
        raise UsageError(f"{where}: label {label!r} is not a number")
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(task.labels):
        return label
    raise UsageError(f"{where}: label {label!r} is not a class id 0..{len(task.labels) - 1} (-1 only on test)")
