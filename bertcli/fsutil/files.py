"""Atomic files and the checks on paths that every command shares (see the package docstring).

A file is written under a temporary name beside it (created exclusively, never through a link)
and renamed into place. The temporary name ends in `.<TOKEN>.<pid>`: TOKEN is random per process,
so ownership.py can prove that a leftover is bertcli's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from bertcli.errors import DataError, UsageError

TMP_PREFIX = ".tmp-"
TOKEN = uuid.uuid4().hex[:12]  # this process, in each temporary name it makes and each marker it writes to
TEMP_NAME = re.compile(r"^\.tmp-.+\.([0-9a-f]{12})\.(\d+)$")
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def write_error(path, e: OSError) -> DataError:
    """A failed write as one line (exit 1: a full disk, a read-only mount, a vanished directory)."""
    return DataError(f"cannot write {path}: {e.strerror or e}; free some space or choose another directory")


def tmp_name(path: Path) -> Path:
    return Path(path).with_name(f"{TMP_PREFIX}{Path(path).name}.{TOKEN}.{os.getpid()}")


def remove_temp(path: Path) -> None:
    """Delete a temporary name this process made (a link planted there is removed, never followed)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path` (created empty and exclusively: a name planted there is
    never followed); on success rename it to `path`, on failure delete it."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    except OSError as e:
        raise write_error(tmp, e) from None
    try:
        yield tmp
        if tmp.is_file() and not tmp.is_symlink():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_temp(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:  # our own empty file, made by atomic_path
                f.write(data)
        except OSError as e:
            raise write_error(path, e) from None


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, what: str, max_bytes: int = 64 << 20) -> dict:
    """Read a JSON object file, with one-line errors for the ways it can be wrong.

    `max_bytes` bounds what a crafted file can make us read into memory.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    if path.stat().st_size > max_bytes:
        raise DataError(f"{path}: {what} is larger than {max_bytes >> 20} MB; it is not one bertcli wrote, rebuild it")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise DataError(f"{path}: {what} is not valid JSON ({why}); it was edited or truncated, rebuild it") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {what} is not a JSON object; rebuild it")
    return obj


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def refuse_overlap(out: Path, inputs: Iterable[Path], option: str = "--out") -> None:
    """An output may not be, contain or lie inside any input: replacing it would delete the input."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if source == target or target in source.parents:
            raise UsageError(f"{option} {out} holds the input {given}; writing there would delete it — "
                             "choose another directory")
        if source in target.parents:
            raise UsageError(f"{option} {out} lies inside the input {given}; choose a directory outside it")


def _nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")


def writable_problem(directory: Path) -> str | None:
    """Why files cannot be created in or under `directory` (None if they can, as far as we can tell)."""
    anchor = _nearest_existing(Path(os.path.abspath(directory)))
    if not anchor.is_dir():
        return f"{anchor} is a file, not a directory"
    try:
        if os.statvfs(anchor).f_flag & os.ST_RDONLY:
            return f"{anchor} is on a read-only file system"
    except OSError:
        pass
    if not os.access(anchor, os.W_OK | os.X_OK):
        return f"{anchor} is not writable by this user"
    # Permission bits do not stop root, and some file systems (/proc, some mounts) refuse anyway:
    # the one sure test is to create a file there (and remove it again).
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}probe-", dir=anchor)
    except OSError as e:
        return f"{anchor}: {e.strerror}"
    os.close(fd)
    os.unlink(probe)
    return None


def input_file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an input file, in words (None if it can)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a broken symbolic link" if path.is_symlink() else "does not exist"
    except PermissionError:
        return "cannot be reached (permission denied on a directory above it)"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file; write the stream to a file first"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    if not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    return None
