"""Atomic file and directory writes: a reader never sees a half-written output.

Everything is written under a temporary name in the same directory and renamed into place,
so a crash, a full disk or Ctrl-C leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from bertcli.errors import DataError, UsageError

TMP_PREFIX = ".tmp-"


def tmp_name(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path; on success rename it to `path`, on failure delete it."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as e:
            raise DataError(f"cannot write {path}: {e.strerror}; free some space or choose another directory") from None


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, what: str) -> dict:
    """Read a JSON file we wrote, with one-line errors for the ways it can be wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: {what} is not valid JSON ({e}); it was edited or truncated, rebuild it") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {what} is not a JSON object; rebuild it")
    return obj


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def prepare_out_dir(path: Path, overwrite: bool, what: str) -> None:
    """Refuse to clobber a non-empty directory unless asked to; create the parent."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; give a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UsageError(f"--out {path} is not empty; pass --overwrite to replace it or choose another directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
        raise UsageError(f"--out {path}: cannot create {path.parent} ({why}); choose another directory") from None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary directory into place, replacing an old one."""
    if final.exists():
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}.{os.getpid()}")
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)  # put the old output back rather than leave nothing
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
