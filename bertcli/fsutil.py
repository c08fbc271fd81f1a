"""Atomic writes, output ownership and output locks: nothing a user owns is ever lost.

- Everything is written under a temporary name in the same directory and renamed into place,
  so a crash, a full disk or Ctrl-C leaves either the old output or the new one, never a mix
  and never neither.
- Every directory bertcli creates carries an ownership marker (`.bertcli-owner.json`: format,
  kind, id). `--overwrite` replaces only a directory with a marker of the same kind, so a
  mistyped path can never delete a user's own files.
- One writer per output: a second bertcli process writing the same output stops at once.

This module does not know what goes into an output; the commands do.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from bertcli.errors import BertcliError, DataError, UsageError

TMP_PREFIX = ".tmp-"
OWNER_FILE = ".bertcli-owner.json"
OWNER_FORMAT = "bertcli-owner"
LOCK_SUFFIX = ".bertcli-lock"
MAX_OWNER_BYTES = 4096


class BusyError(BertcliError):
    """Another bertcli process is writing the same output: exit 1."""

    exit_code = 1


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


# --- ownership -------------------------------------------------------------------------------

def mark_owned(directory: Path, kind: str) -> dict:
    """Write the marker that makes `directory` bertcli's own `kind` of output."""
    from bertcli import __version__

    marker = {"format": OWNER_FORMAT, "format_version": 1, "kind": kind, "id": uuid.uuid4().hex,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bertcli_version": __version__}
    write_json_atomic(Path(directory) / OWNER_FILE, marker)
    return marker


def read_owner(directory: Path) -> dict | None:
    """The ownership marker of `directory` if it has a valid one, else None."""
    path = Path(directory) / OWNER_FILE
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_OWNER_BYTES:
            return None
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != OWNER_FORMAT:
        return None
    if not isinstance(marker.get("kind"), str) or not isinstance(marker.get("id"), str):
        return None
    return marker


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


def check_output_dir(out: Path, kind: str, *, overwrite: bool, inputs: Iterable[Path] = (), option: str = "--out",
                     allowed_entries: Iterable[str] | None = None) -> None:
    """Everything that must hold before an output directory is touched, each a one-line error.

    A non-empty directory is replaced only with `overwrite`, and only if it carries bertcli's
    marker of the same `kind`; with `allowed_entries`, also only if it holds nothing else.
    """
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise UsageError(f"{option} {out} is a broken symbolic link; remove it or choose another directory")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} is a file; give a directory")
    refuse_overlap(out, inputs, option)
    entries = [e for e in out.iterdir() if e.name != OWNER_FILE] if out.is_dir() else []
    if entries:
        if not overwrite:
            raise UsageError(f"{option} {out} is not empty; pass --overwrite to replace it (only an output bertcli "
                             "made is replaced) or choose another directory")
        owner = read_owner(out)
        if owner is None:
            raise UsageError(f"{option} {out} was not made by bertcli (no {OWNER_FILE}); refusing to delete it — "
                             "choose another directory")
        if owner["kind"] != kind:
            raise UsageError(f"{option} {out} holds a bertcli {owner['kind']}, not a {kind}; refusing to replace it — "
                             "choose another directory")
        if allowed_entries is not None:
            allowed = set(allowed_entries)
            foreign = sorted(e.name for e in entries if e.name not in allowed and not e.name.startswith(TMP_PREFIX))
            if foreign:
                raise UsageError(f"{option} {out} also holds {foreign[0]!r}, which bertcli did not write; move it "
                                 "away first, or choose another directory")
    if problem := writable_problem(out):
        raise UsageError(f"{option} {out}: cannot write there ({problem}); choose another directory")


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


# --- atomic directories ----------------------------------------------------------------------

def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # a file system or kernel without it: fall back to rename-aside
    raise OSError(err, os.strerror(err), str(b))


def swap_into_place(tmp: Path, final: Path) -> None:
    """Move the finished directory `tmp` to `final`, replacing (and then deleting) an old `final`.

    At every instant either the old or the new directory is at a known name: an atomic exchange
    where the kernel offers one, else rename the old aside, rename the new in, put the old back
    if that fails.
    """
    tmp, final = Path(tmp), Path(final)
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    if _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old directory
        return
    old = final.with_name(f"{TMP_PREFIX}old-{final.name}.{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(final: Path, kind: str) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final`; on success mark it as bertcli's `kind` and
    swap it into place, on any failure delete it and leave `final` as it was.

    Call `check_output_dir` first: this replaces whatever is at `final`.
    """
    final = Path(os.path.abspath(final))  # `--out .` has no name to put the temporary directory beside
    # the pid last: a later writer can tell a leftover of a killed process from one still being written
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}.{uuid.uuid4().hex[:8]}.{os.getpid()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"cannot create {tmp.parent}/…: {e.strerror}; choose another directory") from None
    try:
        yield tmp
        if read_owner(tmp) is None:
            mark_owned(tmp, kind)
        swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- one writer per output -------------------------------------------------------------------

def lock_path_for(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


class DirLock:
    """An exclusive lock on an output: a `.NAME.bertcli-lock` file beside it while a writer runs.

    flock-based, so a killed holder releases it at once (its file may stay behind, harmless: the
    next writer takes it over). A second writer fails immediately with a message naming the
    holder (pid, host, command). The holder deletes the file when done; a writer that opened the
    file just before that notices, because the path no longer leads to the file it locked, and
    tries again.
    """

    def __init__(self, path: Path, what: str = "output"):
        self.path, self.what = Path(path), what
        self.lock_path = lock_path_for(path)
        self.fd: int | None = None

    def __enter__(self) -> "DirLock":
        while self.fd is None:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise BusyError(f"{self.what} {self.path} is being written by {holder}; wait for it to finish or "
                                    "choose another directory") from None
                raise UsageError(f"{self.what} {self.path}: cannot lock {self.lock_path} ({e.strerror})") from None
            try:
                current = os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:  # the previous holder deleted it after we opened it
                os.close(fd)
                continue
            self.fd = fd
        command = " ".join(["bertcli", *sys.argv[1:]])[:200]
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()} ({command})\n".encode(), 0)
        return self

    def _open(self) -> int:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"{self.what} {self.path}: cannot create the lock file {self.lock_path} ({e.strerror}); "
                             "choose a writable location") from None

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                self.lock_path.unlink(missing_ok=True)  # while still holding it: see the class docstring
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
