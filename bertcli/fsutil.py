"""Output directories: claim, overwrite, refuse overlaps, lock, write atomically. Nothing a user
owns is ever lost.

This module is the one owner of these rules; every command that writes a directory goes through
it and never deletes anything itself. It does not know what goes into an output; the commands do.

How a command uses it:

    check_output_dir(out, kind, overwrite=overwrite, inputs=inputs)   # first, before any work
    ...the work...
    with output_dir(out, kind, overwrite=overwrite, inputs=inputs, keep=keep) as tmp:
        ...write the files into tmp...   # swapped into place at the end; on failure, the old output stays

A command that writes in place over a long time (pretrain's run directory, make-data's resumable
output) calls `lock = claim_directory(out, kind, ...)` instead, records each file it writes with
`own(out, names)`, and releases the lock at the end (`lock.release()`). `remove_owned` deletes
what a directory's marker says bertcli wrote, and nothing else.

The rules:
- Ownership is per file. Every directory bertcli makes carries `.bertcli-owner.json`: its kind,
  the files bertcli wrote there with their sizes (None for a file bertcli rewrites or appends
  to), subdirectories that carry their own marker (a checkpoint in a run), and the tokens of the
  processes that wrote there. `--overwrite` and `--resume` delete only those files. Any other
  entry, at any depth, and any recorded file whose size has changed, stops the command with one
  line naming it (exit 2) - except the names a command keeps (`keep`): an export keeps a user's
  `README.md` model card, which moves into the new export (Hugging Face's convention).
- Everything is written under a temporary name and renamed into place, so a crash, a full disk
  or a kill leaves the old output or the new one, never a mix. Temporary names end in
  `.<token>.<pid>`: the token is random per process and recorded in the marker, so a later run can
  prove a leftover is bertcli's (a temporary directory also carries a pending marker with its
  writer's pid and host) and clean it up once that writer is dead. A user's `.tmp-anything` is
  never touched.
- Locks, markers and temporary names never follow a symbolic link and never truncate a file
  bertcli did not create (O_NOFOLLOW, O_EXCL, renames over the name, lstat checks).
- One writer per output: a lock on the resolved path, so an alias through a symbolic link gets the
  same lock. A symbolic link given as the output stays a link; the new directory replaces its target.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
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
OWNER_VERSION = 2  # 2: per-file ownership (files, writers)
LOCK_SUFFIX = ".bertcli-lock"
MAX_OWNER_BYTES = 16 << 20  # a marker lists every file of its directory: shards, checkpoints
MAX_LOCK_BYTES = 4096
NESTED = "dir"  # a `files` entry (name ending in "/") for a subdirectory with its own marker
TOKEN = uuid.uuid4().hex[:12]  # this process, in each temporary name it makes and each marker it writes to
_TEMP = re.compile(r"^\.tmp-.+\.([0-9a-f]{12})\.(\d+)$")
_FULL = (errno.ENOSPC, errno.EDQUOT)


class BusyError(BertcliError):
    """Another bertcli process is writing the same output: exit 1."""

    exit_code = 1


def _write_error(path, e: OSError) -> DataError:
    """A failed write as one line (exit 1: a full disk, a read-only mount, a vanished directory)."""
    return DataError(f"cannot write {path}: {e.strerror or e}; free some space or choose another directory")


# --- atomic files ----------------------------------------------------------------------------

def tmp_name(path: Path) -> Path:
    return Path(path).with_name(f"{TMP_PREFIX}{Path(path).name}.{TOKEN}.{os.getpid()}")


def _remove_temp(path: Path) -> None:
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
        raise _write_error(tmp, e) from None
    try:
        yield tmp
        if tmp.is_file() and not tmp.is_symlink():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_temp(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:  # our own empty file, made by atomic_path
                f.write(data)
        except OSError as e:
            raise _write_error(path, e) from None


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

def _new_marker(kind: str, pending: bool = False) -> dict:
    from bertcli import __version__

    return {"format": OWNER_FORMAT, "format_version": OWNER_VERSION, "kind": kind, "id": uuid.uuid4().hex,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bertcli_version": __version__,
            "host": socket.gethostname(), "pid": os.getpid(), "pending": pending, "writers": [TOKEN], "files": {}}


def _write_marker(directory: Path, marker: dict) -> None:
    write_json_atomic(Path(directory) / OWNER_FILE, marker)  # a rename: a link planted at the name is replaced


def _entry(directory: Path, name: str, rewritten: bool):
    """What the marker records for `name`: its size, or None (a file rewritten or appended to); for a
    folder ("name/"), NESTED if it carries a marker of its own, else None."""
    if name.endswith("/"):
        return NESTED if read_owner(Path(directory) / name) is not None else None
    if rewritten:
        return None
    st = os.lstat(Path(directory) / name)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{directory}/{name} is not a regular file")  # a bug in the caller, not user input
    return st.st_size


def mark_owned(directory: Path, kind: str, files: Iterable[str] = (), rewritten: bool = False) -> dict:
    """Make `directory` bertcli's own `kind` of output, owning `files` (names relative to it)."""
    marker = _new_marker(kind)
    marker["files"] = {name: _entry(directory, name, rewritten) for name in files}
    _write_marker(directory, marker)
    return marker


def own(directory: Path, names: Iterable[str], rewritten: bool = False, drop: Iterable[str] = ()) -> None:
    """Record in `directory`'s marker that bertcli wrote `names` (and no longer holds `drop`).

    A name is relative to `directory`; one ending in "/" is a folder (bertcli made it; a folder
    with a marker of its own, a checkpoint, is judged by that marker).
    `rewritten`: files bertcli rewrites or appends to, so their size is not recorded.
    """
    directory = Path(directory)
    marker = read_owner(directory)
    if marker is None:
        raise DataError(f"{directory} lost its {OWNER_FILE} while bertcli was writing there; rerun with --overwrite")
    if TOKEN not in marker["writers"]:
        marker["writers"].append(TOKEN)
    for name in drop:
        marker["files"].pop(name, None)
    for name in names:
        marker["files"][name] = _entry(directory, name, rewritten)
    _write_marker(directory, marker)


def _safe_name(name) -> bool:
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def read_owner(directory: Path) -> dict | None:
    """The ownership marker of `directory` if it has a valid one (a regular file, not a link), else None.

    Every name it lists is checked to stay inside `directory`: a crafted marker cannot make
    bertcli delete anything outside it.
    """
    path = Path(directory) / OWNER_FILE
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_OWNER_BYTES:
            return None
        with open(path, "rb") as f:
            marker = json.loads(f.read(MAX_OWNER_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != OWNER_FORMAT:
        return None
    if not isinstance(marker.get("kind"), str) or not isinstance(marker.get("id"), str):
        return None
    files, writers = marker.setdefault("files", {}), marker.setdefault("writers", [])  # version 1: owns no file
    if not isinstance(files, dict) or not isinstance(writers, list):
        return None
    for name, entry in files.items():
        if not _safe_name(name) or (entry == NESTED and not name.endswith("/")):
            return None
        if entry not in (None, NESTED) and (type(entry) is not int or entry < 0 or name.endswith("/")):
            return None
    if not all(isinstance(w, str) and re.fullmatch(r"[0-9a-f]{12}", w) for w in writers):
        return None
    return marker


def _parents(name: str) -> Iterator[str]:
    parts = name.rstrip("/").split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _folders(files: dict) -> set[str]:
    """The folders bertcli made or wrote files into (relative names, without the slash)."""
    return ({p for name in files for p in _parents(name)}
            | {name[:-1] for name, entry in files.items() if name.endswith("/") and entry is None})


def _is_temp_of(name: str, writers) -> bool:
    m = _TEMP.match(name)
    return m is not None and m.group(1) in writers


def foreign_entry(directory: Path, keep: Iterable[str] = ()) -> str | None:
    """The first entry inside `directory` (a path relative to it) that bertcli cannot prove it
    wrote, at any depth; None if there is none. `keep`: top-level names allowed to stay."""
    return next(foreign_entries(directory, keep), None)


def foreign_entries(directory: Path, keep: Iterable[str] = ()) -> Iterator[str]:
    """Every such entry, in order (a folder bertcli never wrote into is one entry)."""
    directory = Path(directory)
    marker = read_owner(directory)
    if marker is None:
        yield from sorted(set(os.listdir(directory)) - set(keep))
    else:
        yield from _foreign(directory, marker, set(keep))


def _foreign(root: Path, marker: dict, keep: set[str]) -> Iterator[str]:
    files, writers = marker["files"], set(marker["writers"])
    inner = _folders(files)

    def scan(d: Path, rel: str) -> Iterator[str]:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = rel + e.name
            if not rel and (e.name == OWNER_FILE or e.name in keep):
                continue
            if e.is_symlink():
                yield name  # bertcli never makes a link
            elif _is_temp_of(e.name, writers):
                continue  # a temporary name of a process that wrote here (killed before it renamed)
            elif e.is_dir(follow_symlinks=False):
                if files.get(name + "/") == NESTED:
                    sub = read_owner(Path(e.path))
                    if sub is None:
                        yield f"{name}/{OWNER_FILE}"
                    else:
                        yield from (f"{name}/{found}" for found in _foreign(Path(e.path), sub, set()))
                elif name in inner:
                    yield from scan(Path(e.path), name + "/")
                else:
                    yield name
            elif not e.is_file(follow_symlinks=False) or name not in files:
                yield name
            elif files[name] is not None and e.stat(follow_symlinks=False).st_size != files[name]:
                yield name  # changed since bertcli wrote it: it may hold the user's edits

    return scan(root, "")


def remove_owned(directory: Path, whole: bool = False) -> bool:
    """Delete what `directory`'s marker says bertcli wrote (recursing into nested markers), the
    temporary files of its writers, the marker itself, and the directories that are then empty.
    Nothing else is touched. `whole`: also `directory` itself, if it is then empty. True if it was."""
    directory = Path(directory)
    marker = read_owner(directory)
    if marker is None:
        return False
    files, writers = marker["files"], set(marker["writers"])
    for name, entry in files.items():
        path = directory / name.rstrip("/")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if entry == NESTED:
            if stat.S_ISDIR(st.st_mode):
                remove_owned(path, whole=True)
        elif stat.S_ISREG(st.st_mode) and (entry is None or st.st_size == entry):
            path.unlink()
    remove_temps(directory, marker)
    for rel in sorted(_folders(files), key=len, reverse=True):
        if not (directory / rel).is_symlink():
            _rmdir_if_empty(directory / rel)
    (directory / OWNER_FILE).unlink(missing_ok=True)
    return whole and _rmdir_if_empty(directory)


def remove_temps(directory: Path, marker: dict | None = None) -> None:
    """Delete the temporary files and directories that `directory`'s writers left (killed before
    they renamed them), in it and in the folders bertcli wrote into; a look-alike name stays."""
    directory = Path(directory)
    marker = marker or read_owner(directory)
    if marker is None:
        return
    writers = set(marker["writers"])
    for rel in ["", *_folders(marker["files"])]:
        d = directory / rel
        if d.is_dir() and not d.is_symlink():
            for e in os.scandir(d):
                if _is_temp_of(e.name, writers) and not e.is_symlink():
                    _remove_temp(Path(e.path))


def _rmdir_if_empty(path: Path) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


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


def _entries(out: Path) -> list[str]:
    """What a directory holds besides a genuine marker (a link or other thing at the marker's name counts)."""
    names = os.listdir(out)
    return [n for n in names if n != OWNER_FILE or not stat.S_ISREG(os.lstat(out / n).st_mode)]


def check_output_dir(out: Path, kind: str, *, overwrite: bool, inputs: Iterable[Path] = (), option: str = "--out",
                     keep: Iterable[str] = (), allowed_entries: Iterable[str] | None = None) -> None:
    """Everything that must hold before an output directory is touched, each a one-line error.

    A non-empty directory is replaced only with `overwrite`, only if it carries bertcli's marker of
    the same `kind`, and only if everything in it, at any depth, is what bertcli wrote there
    (names in `keep` excepted: they stay). `allowed_entries` is accepted for callers written before
    per-file ownership, which is stricter than any list of names: it changes nothing.
    """
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise UsageError(f"{option} {out} is a broken symbolic link; remove it or choose another directory")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} is a file; give a directory")
    refuse_overlap(out, inputs, option)
    if out.is_dir() and _entries(out):
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
        refuse_foreign(out, option, keep)
    if problem := writable_problem(out):
        raise UsageError(f"{option} {out}: cannot write there ({problem}); choose another directory")


def refuse_foreign(out: Path, option: str = "--out", keep: Iterable[str] = ()) -> None:
    """Stop (exit 2) if anything inside `out` is not provably bertcli's: --overwrite would delete it."""
    if (foreign := foreign_entry(out, keep)) is not None:
        raise UsageError(f"{option} {out} also holds {foreign!r}, which bertcli did not write (or which changed since); "
                         "move it away first, or choose another directory")


def claim_directory(out: Path, kind: str, *, overwrite: bool = False, resume: bool = False,
                    inputs: Iterable[Path] = (), option: str = "--out") -> "DirLock":
    """Make `out` this process's in-place output of `kind`, and return the lock held on it.

    Under the lock: without `resume`, the checks of `check_output_dir`, then (with `overwrite`)
    delete exactly what the old output's marker lists, and mark the directory anew. With `resume`,
    `out` must be bertcli's `kind` already; nothing is deleted, and this process is added to its
    writers. Release the lock with `lock.release()` when done (also on failure).
    """
    out = Path(out)
    lock = DirLock(out, option).__enter__()
    try:
        owner = read_owner(out) if out.is_dir() else None
        if resume:
            if owner is None or owner["kind"] != kind:
                raise UsageError(f"{option} {out} is not a bertcli {kind}; nothing to resume — choose another directory")
            _refuse_replaced(out, owner, option)
            if problem := writable_problem(out):
                raise UsageError(f"{option} {out}: cannot write there ({problem}); make it writable to resume")
            own(out, [])
        else:
            check_output_dir(out, kind, overwrite=overwrite, inputs=inputs, option=option)
            if out.is_dir():
                remove_owned(out)
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _write_error(out, e) from None
            mark_owned(out, kind)
    except BaseException:
        lock.release()
        raise
    return lock


def _refuse_replaced(out: Path, owner: dict, option: str) -> None:
    """A file bertcli will write again must still be a plain file: never write through a link there."""
    for name in owner["files"]:
        path = out / name.rstrip("/")
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISDIR(mode) if name.endswith("/") else stat.S_ISREG(mode)):
            raise UsageError(f"{option} {out}: {name.rstrip('/')} was replaced by something bertcli did not write "
                             "(a link or another kind of file); move it away first")


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


def _temp_dir_name(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{final.name}.{uuid.uuid4().hex[:6]}.{TOKEN}.{os.getpid()}")


def swap_into_place(tmp: Path, final: Path) -> None:
    """Move the finished directory `tmp` to `final`, replacing an old `final` and then deleting
    what bertcli wrote in it (`remove_owned`; an old directory still holding anything else stays,
    beside `final`, and is named in a warning).

    At every instant either the old or the new directory is at a known name: an atomic exchange
    where the kernel offers one, else rename the old aside, rename the new in, put the old back
    if that fails.
    """
    tmp, final = Path(tmp), Path(final)
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    if _exchange(tmp, final):
        old = tmp  # now holds the old directory
    else:
        old = _temp_dir_name(final)
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)
            raise
    _discard_old(old)


def _discard_old(old: Path) -> None:
    remove_owned(old)
    if not _rmdir_if_empty(old):
        from bertcli.console import warn

        warn(f"kept {old}: the replaced output holds files bertcli did not write; look at them and delete it")


def _pid_alive(pid) -> bool:
    if type(pid) is not int or pid <= 0:
        return True  # cannot tell: keep
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_leftovers(final: Path, kind: str) -> None:
    """Delete the temporary directories that killed bertcli writers of `final` left beside it.

    Only what is provably bertcli's: a directory (not a link) at one of our temporary names whose
    marker says `kind`, written on this host by a process that is no longer alive. A pending one
    (the writer died mid-write) is deleted whole; an old output swapped aside loses what its
    marker lists.
    """
    final = Path(final)
    pattern = re.compile(rf"^{re.escape(TMP_PREFIX + final.name)}\.[0-9a-f]{{6}}\.[0-9a-f]{{12}}\.(\d+)$")
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return
    for e in entries:
        m = pattern.match(e.name)
        if m is None or not e.is_dir(follow_symlinks=False):
            continue
        marker = read_owner(Path(e.path))
        if (marker is None or marker["kind"] != kind or marker.get("host") != socket.gethostname()
                or marker.get("pid") != int(m.group(1)) or _pid_alive(marker.get("pid"))):
            continue
        if marker.get("pending") is True:
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            remove_owned(Path(e.path), whole=True)


@contextmanager
def atomic_directory(final: Path, kind: str, keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final`; on success record every file in it as
    bertcli's `kind`, move the `keep` names over from the old `final` (a user's model card), and
    swap it into place; on any failure delete it and leave `final` as it was.

    Call `check_output_dir` first (or use `output_dir`): this replaces what bertcli wrote at `final`.
    """
    # the resolved path: `--out .` gets a name to put the temporary directory beside, and a link
    # given as the output stays a link (its target is replaced)
    final = Path(os.path.realpath(final))
    clean_leftovers(final, kind)
    tmp = _temp_dir_name(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()  # exclusive: never an existing directory or a link
        _write_marker(tmp, _new_marker(kind, pending=True))  # a kill now leaves a provable leftover
    except OSError as e:
        _remove_temp(tmp)
        raise _write_error(f"{tmp.parent}/…", e) from None
    except BaseException:
        _remove_temp(tmp)
        raise
    moved: list[str] = []
    try:
        yield tmp
        marker = read_owner(tmp)
        marker.update(pending=False, files={name: _entry(tmp, name, False) for name in _files_below(tmp)})
        _write_marker(tmp, marker)
        for name in keep:
            if final.is_dir() and os.path.lexists(final / name) and not os.path.lexists(tmp / name):
                os.rename(final / name, tmp / name)
                moved.append(name)
        swap_into_place(tmp, final)
    except BaseException:
        for name in moved:  # the user's files go back before the temporary directory is deleted
            if os.path.lexists(tmp / name) and not os.path.lexists(final / name):
                os.rename(tmp / name, final / name)
        _remove_temp(tmp)
        raise


def _files_below(root: Path) -> list[str]:
    """Every regular file under `root` (relative names), but the marker."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            name = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
            if name != OWNER_FILE and stat.S_ISREG(os.lstat(os.path.join(dirpath, f)).st_mode):
                found.append(name)
    return sorted(found)


@contextmanager
def output_dir(out: Path, kind: str, *, overwrite: bool, inputs: Iterable[Path] = (), option: str = "--out",
               keep: Iterable[str] = ()) -> Iterator[Path]:
    """THE way to write a whole output directory: lock `out`, check it (`check_output_dir`), and
    yield a temporary directory that replaces it on success (`atomic_directory`).

    `kind` names what the directory holds ("tokenizer", "export", "finetune", ...): --overwrite
    replaces only bertcli's output of the same kind. `keep`: top-level names of the user's that
    survive a replacement (an export's README.md). Call `check_output_dir` with the same
    arguments before any long work, so that a bad `out` fails at once.
    """
    with DirLock(out, option):
        check_output_dir(out, kind, overwrite=overwrite, inputs=inputs, option=option, keep=keep)
        with atomic_directory(out, kind, keep) as tmp:
            yield tmp


# --- one writer per output -------------------------------------------------------------------

def lock_path_for(path: Path) -> Path:
    """`.NAME.bertcli-lock` beside the resolved output: every alias of one directory gets one lock."""
    path = Path(os.path.realpath(path))
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


class DirLock:
    """An exclusive lock on an output: a `.NAME.bertcli-lock` file beside it while a writer runs.

    flock-based, so a killed holder releases it at once (its file stays behind, harmless: the next
    writer takes it over, and deletes it when done). A second writer fails immediately with a
    message naming the holder (pid, host, command). The lock file is created exclusively and never
    through a link; an existing one is reused only if it is a plain file of this user's with one
    link, holding nothing but a holder line: a link or a user's file at that name stops the command
    (exit 2) untouched. The holder deletes the file when done; a writer that opened the file just
    before that notices, because the path no longer leads to the file it locked, and tries again.
    """

    def __init__(self, path: Path, what: str = "output"):
        self.path, self.what = Path(path), what
        self.lock_path = lock_path_for(path)
        self.fd: int | None = None

    def __enter__(self) -> "DirLock":
        while self.fd is None:
            fd = self._open()
            if fd is None:
                continue  # the holder deleted it between our two opens
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
                current = os.lstat(self.lock_path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:  # the previous holder deleted it after we opened it
                os.close(fd)
                continue
            self.fd = fd
        command = " ".join(["bertcli", *sys.argv[1:]])[:200]
        try:
            os.ftruncate(self.fd, 0)  # a lock file, checked in _open: never a file bertcli did not create
            line = f"pid {os.getpid()} on {socket.gethostname()} ({command})\n".encode()
            if os.pwrite(self.fd, line, 0) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            self.release()
            raise DataError(f"{self.what} {self.path}: cannot write the lock file {self.lock_path} ({e.strerror}); "
                            "free some space or choose another directory") from None
        return self

    def _open(self) -> int | None:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        except OSError as e:
            self._cannot(e)
        try:
            fd = os.open(self.lock_path, flags)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._cannot(e)
        st = os.fstat(fd)
        head = os.pread(fd, 8, 0) if stat.S_ISREG(st.st_mode) else b""
        if (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid()
                or st.st_size > MAX_LOCK_BYTES or (st.st_size and not head.startswith(b"pid "))):
            os.close(fd)
            raise UsageError(f"{self.what} {self.path}: {self.lock_path} is not a bertcli lock file; move it away "
                             "(bertcli never writes into a file it did not create)")
        return fd

    def _cannot(self, e: OSError):
        if e.errno == errno.ELOOP:
            raise UsageError(f"{self.what} {self.path}: {self.lock_path} is a symbolic link, not a bertcli lock file; "
                             "remove it (bertcli never writes through a link)") from None
        if e.errno in _FULL:
            raise DataError(f"{self.what} {self.path}: cannot create the lock file {self.lock_path} ({e.strerror}); "
                            "free some space or choose another directory") from None
        raise UsageError(f"{self.what} {self.path}: cannot create the lock file {self.lock_path} ({e.strerror}); "
                         "choose a writable location") from None

    def release(self) -> None:
        if self.fd is None:
            return
        try:  # while still holding it (see above), and only the file we locked
            if os.lstat(self.lock_path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.lock_path)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __exit__(self, *exc) -> None:
        self.release()
