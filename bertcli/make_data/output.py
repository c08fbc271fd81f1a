"""make-data's output directory: a fresh --out, --overwrite of earlier data, and --resume.

Moved here verbatim from make_data.py; the one output-directory helper of bertcli/fsutil.py is
to replace it. `run.make_data` refuses an --out that overlaps an input before calling in.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bertcli.console import warn
from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.fsutil import (OWNER_FILE, TMP_PREFIX, DirLock, atomic_directory, check_output_dir, mark_owned, read_json,
                            read_owner, sha256_file, writable_problem)
from bertcli.make_data.writer import PROGRESS, SplitState
from bertcli.shards import MANIFEST, SPLITS


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
            return run(out_dir, states)
        except BertcliError:
            if not resume:
                _discard(out_dir, existed)
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
    for split, state in states.items():
        keep = set()
        for shard in state.shards:
            try:
                path = out_dir / shard["file"]
                intact = path.parent == out_dir / split and path.is_file() and sha256_file(path) == shard["sha256"]
            except (KeyError, TypeError, OSError):
                intact = False
            if not intact:
                raise DataError(f"--resume: {out_dir / str(shard.get('file') if isinstance(shard, dict) else '?')} is "
                                "missing or damaged; rerun with --overwrite to start over")
            keep.add(path.name)
        _remove_our_leftovers(out_dir / split, keep)
    return states


def _is_ours(name: str) -> bool:
    """A name make-data writes in a split folder: a shard, or a shard's temporary file."""
    return name.startswith(TMP_PREFIX) or (name.startswith("shard-") and name.endswith(".safetensors"))


def _remove_our_leftovers(split_dir: Path, keep: set[str]) -> None:
    """Delete partial shards after the last recorded one; anything else is not ours to delete."""
    if split_dir.is_dir():
        for stray in split_dir.iterdir():
            if stray.name not in keep and _is_ours(stray.name) and stray.is_file():
                stray.unlink()


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
    owner = read_owner(out_dir)
    if owner is not None and owner["kind"] != "data":
        raise UsageError(f"--resume: {out_dir} holds a bertcli {owner['kind']}, not make-data output; choose "
                         "another directory")
    if (out_dir / PROGRESS).is_file():
        return _load_resume_state(out_dir, expected)
    if out_dir.is_dir() and _only_leftovers(out_dir):  # killed before the first progress record
        for split in SPLITS:
            _remove_our_leftovers(out_dir / split, set())
        for leftover in out_dir.glob(f"{TMP_PREFIX}*"):
            leftover.unlink() if leftover.is_file() else None
        return {s: SplitState() for s in SPLITS}
    if _has_entries(out_dir):
        raise UsageError(f"--resume: {out_dir} holds no make-data progress; use --overwrite to start over")
    if problem := writable_problem(out_dir):
        raise UsageError(f"--out {out_dir}: cannot write there ({problem}); choose another directory")
    return {s: SplitState() for s in SPLITS}


def _only_leftovers(out_dir: Path) -> bool:
    """True when a directory holds nothing but our marker and temporary files (in it or its split folders)."""
    for child in out_dir.iterdir():
        if child.is_dir() and child.name in SPLITS:
            if any(not c.name.startswith(TMP_PREFIX) for c in child.iterdir()):
                return False
        elif not child.name.startswith(TMP_PREFIX) and child.name != OWNER_FILE:
            return False
    return True


def _discard(out_dir: Path, existed: bool) -> None:
    """Remove a failed fresh run's output (keeping a directory the user had made, empty)."""
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for child in out_dir.iterdir():
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
