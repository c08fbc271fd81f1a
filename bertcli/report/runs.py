"""What a report reads: a run directory's metrics.jsonl, config.yaml, its data's manifest, and
fine-tuning results — each read as a crafted file could be written, none of it required.

A run may be finished, still running (its last line half written), copied without its data
directory, or from an older bertcli whose records lack keys; each case gives what there is plus a
note saying what is missing. This module never imports the trainer: a report is a pure function
of files on disk.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from bertcli.errors import BertcliError, UsageError
from bertcli.fsutil import read_json

METRICS_FILE, CONFIG_FILE, MANIFEST_FILE, RESULTS_FILE = "metrics.jsonl", "config.yaml", "manifest.json", "results.json"
MAX_RECORDS = 1_000_000  # records read per run: a report of a crafted file stays bounded in memory
MAX_LINE_BYTES = 1 << 16
MAX_CONFIG_BYTES = 1 << 20
EVAL_PREFIX = "eval/"
NUMBER_TYPES = (int, float)


@dataclass
class Results:
    """One fine-tuning or GLUE results.json (the contract in docs/report.md)."""

    path: Path
    data: dict


@dataclass
class Run:
    name: str
    path: Path
    train: list[dict] = field(default_factory=list)  # training records, in file order
    evals: list[dict] = field(default_factory=list)  # records with eval/ keys (the prefix kept)
    config: dict = field(default_factory=dict)  # the resolved config, nested as in config.yaml
    manifest: dict | None = None
    manifest_path: Path | None = None
    results: list[Results] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be read, in words

    @property
    def has_metrics(self) -> bool:
        return bool(self.train or self.evals)

    @functools.cached_property
    def train_keys(self) -> set[str]:
        return {k for r in self.train for k in r}

    @functools.cached_property
    def eval_keys(self) -> set[str]:
        return {k for r in self.evals for k in r}

    def column(self, key: str, evals: bool = False) -> np.ndarray:
        """One key over the training (or eval) records as floats, NaN where a record lacks it."""
        cache = self.__dict__.setdefault("_columns", {})
        if (key, evals) not in cache:
            records = self.evals if evals else self.train
            cache[key, evals] = np.fromiter((r.get(key, np.nan) for r in records), dtype=np.float64, count=len(records))
        return cache[key, evals]


def read_metrics(path: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(training records, eval records, notes) of a metrics.jsonl; unreadable lines are counted, not fatal."""
    train, evals, notes = [], [], []
    bad = long = 0
    torn_last = False
    try:
        f = open(path, "rb")
    except OSError as e:
        return [], [], [f"{path}: cannot read it ({e.strerror})"]
    with f:
        for n, raw in enumerate(f):
            if n >= MAX_RECORDS:
                notes.append(f"{path}: only the first {MAX_RECORDS:,} records are shown")
                break
            if len(raw) > MAX_LINE_BYTES:
                long += 1
                continue
            record = _parse(raw)
            if record is None:
                bad += 1
                torn_last = not raw.endswith(b"\n")
                continue
            torn_last = False
            (evals if any(k.startswith(EVAL_PREFIX) for k in record) else train).append(record)
    if torn_last:
        bad -= 1
        notes.append(f"{path}: the last line is incomplete (a run still writing it, or cut short): left out")
    if bad or long:
        notes.append(f"{path}: {bad + long} line(s) are not metric records and were skipped")
    return train, evals, notes


def _parse(raw: bytes) -> dict | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(obj, dict):
        return None
    step = obj.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None
    # numbers only (type(), not isinstance: a bool is not a metric); NaN and infinities are kept, the chart
    # breaks its line there
    return {key: value for key, value in obj.items() if type(value) in NUMBER_TYPES}


def read_config(path: Path) -> tuple[dict, list[str]]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return {}, [f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MB, not a config bertcli wrote; left out"]
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, [f"{path}: not found, so the config is not shown"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return {}, [f"{path}: cannot read it ({type(e).__name__}); the config is not shown"]
    if not isinstance(config, dict):
        return {}, [f"{path}: not a mapping of sections; the config is not shown"]
    return config, []


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{'train': {'max_steps': 5}} → {'train.max_steps': 5}."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def find_manifest(run_dir: Path, config: dict) -> Path | None:
    """The first data directory's manifest: data.dir as written (relative to where pretrain ran, which
    is usually here), else relative to a directory above the run (a run copied with its data)."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    dirs = data.get("dir")
    first = dirs[0] if isinstance(dirs, list) and dirs else dirs
    if not isinstance(first, str) or not first:
        return None
    candidates = [Path(first)]
    if not Path(first).is_absolute():
        candidates += [parent / first for parent in run_dir.resolve().parents]
    for candidate in candidates:
        if (candidate / MANIFEST_FILE).is_file():
            return candidate / MANIFEST_FILE
    return None


def find_results(directory: Path) -> list[Results]:
    """results.json in `directory` and in its immediate subdirectories."""
    paths = [directory / RESULTS_FILE]
    try:
        paths += sorted(p / RESULTS_FILE for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        pass
    return [r for p in paths if p.is_file() and (r := read_results(p)) is not None]


def read_results(path: Path) -> Results | None:
    try:
        data = read_json(path, "fine-tuning results", max_bytes=16 << 20)
    except BertcliError:
        return None
    if data.get("command") not in ("finetune", "glue") or not isinstance(data.get("tasks"), dict):
        return None
    return Results(path, data)


def read_run(path: Path, name: str) -> Run:
    """Everything a report shows about one RUN argument: a run directory, a fine-tuning output, or a results.json."""
    path = Path(path)
    if path.is_file() and path.name == RESULTS_FILE:
        results = read_results(path)
        if results is None:
            raise UsageError(f"{path} is not a bertcli finetune/glue results.json (command and tasks are missing)")
        return Run(name, path.parent, results=[results])
    if not path.is_dir():
        raise UsageError(f"run {path} does not exist or is not a directory; give a pretrain run directory "
                         "(it holds metrics.jsonl) or a finetune/glue output (it holds results.json)")
    run = Run(name, path)
    if (path / METRICS_FILE).is_file():
        run.train, run.evals, run.notes = read_metrics(path / METRICS_FILE)
    run.results = find_results(path)
    if not (path / METRICS_FILE).is_file() and not run.results:
        raise UsageError(f"run {path} holds no {METRICS_FILE} and no {RESULTS_FILE}; give a pretrain run directory "
                         "or a finetune/glue output directory")
    if (path / METRICS_FILE).is_file():
        run.config, notes = read_config(path / CONFIG_FILE)
        run.notes += notes
        manifest_path = find_manifest(path, run.config)
        if manifest_path is None:
            run.notes.append("the data directory named in config.yaml (data.dir) was not found: no data summary "
                             "(a copied run? copy the data directory beside it)")
        else:
            try:
                run.manifest, run.manifest_path = read_json(manifest_path, "manifest"), manifest_path
            except BertcliError as e:
                run.notes.append(str(e))
        if not run.has_metrics:
            run.notes.append(f"{path / METRICS_FILE} holds no records yet")
    return run


def run_names(paths: list[Path]) -> list[str]:
    """Short, distinct names: the directory's name, with its parents added while two collide."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            return names
        depth += 1


def finite(v: float) -> bool:
    return isinstance(v, int) or math.isfinite(v)
