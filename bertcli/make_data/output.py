"""make-data's output directory: a fresh --out, --overwrite of earlier data, and --resume.

The rules are fsutil's (the one output-directory helper): every file make-data writes is
recorded in the directory's marker as it is written (writer.py, run.py), so --overwrite and
--resume delete only those files and the temporary files of the processes that wrote there;
anything else in --out stops them with one line naming it. `run.make_data` refuses an --out
that overlaps an input before calling in.
"""

from __future__ import annotations

from pathlib import Path

from bertcli.console import warn
from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.fsutil import (OWNER_FILE, DirLock, atomic_directory, check_output_dir, foreign_entries, mark_owned, own,
                            read_json, read_owner, remove_files, remove_owned, remove_temps, sha256_file,
                            writable_problem)
from bertcli.make_data.pool import WorkerDied
from bertcli.make_data.writer import PROGRESS, SplitState
from bertcli.shards import MANIFEST, SPLITS
from bertcli.tokenizer import ARTIFACT_DIR


def write_out_dir(out_dir: Path, resume: bool, overwrite: bool, inputs: list[Path], expected: dict, run) -> dict:
    """Call run(target directory, split states) under the lock on --out; return what it returns.

    - a new (or empty) --out is written in place and marked as bertcli's data, so that an
      interruption (Ctrl-C, SIGTERM, SIGHUP, a kill) leaves finished shards and progress.json
      for `--resume`; an expected failure (empty corpus, full disk) removes what it wrote;
    - `--overwrite` of an earlier make-data output builds the new one under a temporary name and
      swaps it in at the end: until then the old data is untouched, and stays if the run fails.
    """
    if not resume:
        _check_fresh_out_dir(out_dir, overwrite, inputs)
    with DirLock(out_dir, "make-data --out"):
        if resume:
            states = _resume_states(out_dir, expected)
        elif _has_entries(out_dir):  # checked above: --overwrite of our own data
            check_output_dir(out_dir, "data", overwrite=True, inputs=inputs)  # again, now that we hold the lock
            try:
                with atomic_directory(out_dir, "data") as tmp:
                    return run(tmp, {s: SplitState() for s in SPLITS})
            except KeyboardInterrupt:
                warn(f"make-data interrupted; {out_dir} still holds the old data (the replacement was discarded)")
                raise
        else:
            states = {s: SplitState() for s in SPLITS}
        existed = out_dir.is_dir()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if read_owner(out_dir) is None:
                mark_owned(out_dir, "data")
            else:
                own(out_dir, [])  # this process joins its writers: its temporary files are provably bertcli's
            return run(out_dir, states)
        except WorkerDied:  # killed from outside, like an interruption: what is finished stays for --resume
            raise
        except BertcliError:
            if not resume:
                remove_owned(out_dir, whole=not existed)  # what this run wrote, nothing else
            raise
        except KeyboardInterrupt:  # Ctrl-C, and SIGTERM / SIGHUP under the CLI (bertcli.stopping)
            warn(f"make-data interrupted; finished shards are kept in {out_dir}: rerun the same command with --resume")
            raise


def _load_resume_state(out_dir: Path, expected: dict) -> dict[str, SplitState]:
    progress = read_json(out_dir / PROGRESS, "make-data progress")
    for key in ("tokenizer_sha256", "options", "inputs", "reader"):
        if progress.get(key) != expected[key]:
            raise UsageError(f"--resume: {out_dir} was started with different {key.replace('_', ' ')}; "
                             "rerun with the same inputs and options, or use --overwrite to start over")
    try:
        states = {s: SplitState(**progress["splits"][s]) for s in SPLITS}
    except (KeyError, TypeError):
        raise DataError(f"--resume: {out_dir / PROGRESS} is malformed; use --overwrite to start over") from None
    keep = set()
    for split, state in states.items():
        for shard in state.shards:
            try:
                path = out_dir / shard["file"]
                intact = path.parent == out_dir / split and path.is_file() and sha256_file(path) == shard["sha256"]
            except (KeyError, TypeError, OSError):
                intact = False
            if not intact:
                raise DataError(f"--resume: {out_dir / str(shard.get('file') if isinstance(shard, dict) else '?')} is "
                                "missing or damaged; rerun with --overwrite to start over")
            keep.add(shard["file"])
    _remove_partial_shards(out_dir, keep)
    return states


def _remove_partial_shards(out_dir: Path, keep: set[str]) -> None:
    """Delete what an interrupted run wrote after its last progress record: shards the marker
    lists that progress.json does not, and the temporary files of its writers."""
    owner = read_owner(out_dir)
    remove_files(out_dir, [name for name in owner["files"]
                           if name.split("/", 1)[0] in SPLITS and not name.endswith("/") and name not in keep])
    remove_temps(out_dir)


def _has_entries(out_dir: Path) -> bool:
    return out_dir.is_dir() and any(e.name != OWNER_FILE for e in out_dir.iterdir())


def _check_fresh_out_dir(out_dir: Path, overwrite: bool, inputs: list[Path]) -> None:
    """A fresh run's --out: missing, empty, or (with --overwrite) an earlier make-data output."""
    if _has_entries(out_dir) and not overwrite:
        hint = "pass --resume to continue the interrupted run, " if (out_dir / PROGRESS).is_file() else ""
        raise UsageError(f"--out {out_dir} is not empty; {hint}pass --overwrite to replace it (only data bertcli "
                         "made is replaced), or choose another directory")
    check_output_dir(out_dir, "data", overwrite=overwrite, inputs=inputs)


def _resume_states(out_dir: Path, expected: dict) -> dict[str, SplitState]:
    """What an interrupted run in --out already wrote, checked; refuses anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a directory")
    if (out_dir / MANIFEST).is_file():
        raise UsageError(f"--resume: {out_dir} is already complete (it has {MANIFEST}); nothing to do")
    owner = read_owner(out_dir) if out_dir.is_dir() else None
    if owner is not None and owner["kind"] != "data":
        raise UsageError(f"--resume: {out_dir} holds a bertcli {owner['kind']}, not make-data output; choose "
                         "another directory")
    if owner is None and _has_entries(out_dir):
        raise UsageError(f"--resume: {out_dir} holds no make-data progress; use --overwrite to start over")
    if problem := writable_problem(out_dir):
        raise UsageError(f"--out {out_dir}: cannot write there ({problem}); choose another directory")
    fresh = {s: SplitState() for s in SPLITS}
    if owner is None:
        return fresh
    _refuse_in_the_way(out_dir)
    if (out_dir / PROGRESS).is_file():
        return _load_resume_state(out_dir, expected)
    remove_owned(out_dir)  # killed before its first progress record: nothing worth keeping
    return fresh


def _refuse_in_the_way(out_dir: Path) -> None:
    """--resume keeps a file bertcli did not write, unless it sits where make-data will write
    (a shard's name, the progress or manifest file, the tokenizer folder): that one stops it."""
    for name in foreign_entries(out_dir):
        top, _, rest = name.partition("/")
        if top in (PROGRESS, MANIFEST, ARTIFACT_DIR) or (top in SPLITS and rest.startswith("shard-")):
            raise UsageError(f"--resume: --out {out_dir} holds {name!r}, which bertcli did not write, where make-data "
                             "writes; move it away first")
