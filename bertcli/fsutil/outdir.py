"""Output directories: check, claim, replace atomically, clean up leftovers (see the package docstring)."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import socket
import stat
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from bertcli.errors import UsageError
from bertcli.fsutil.files import TMP_PREFIX, TOKEN, refuse_overlap, remove_temp, write_error, writable_problem
from bertcli.fsutil.lock import DirLock
from bertcli.fsutil.ownership import (OWNER_FILE, entry_of, foreign_entry, mark_owned, new_marker, own,
                                      read_owner, remove_owned, rmdir_if_empty, write_marker)


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
                raise write_error(out, e) from None
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
    if not rmdir_if_empty(old):
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
        write_marker(tmp, new_marker(kind, pending=True))  # a kill now leaves a provable leftover
    except OSError as e:
        remove_temp(tmp)
        raise write_error(f"{tmp.parent}/…", e) from None
    except BaseException:
        remove_temp(tmp)
        raise
    moved: list[str] = []
    try:
        yield tmp
        marker = read_owner(tmp)
        marker.update(pending=False, files={name: entry_of(tmp, name, False) for name in _files_below(tmp)})
        write_marker(tmp, marker)
        for name in keep:
            if final.is_dir() and os.path.lexists(final / name) and not os.path.lexists(tmp / name):
                os.rename(final / name, tmp / name)
                moved.append(name)
        swap_into_place(tmp, final)
    except BaseException:
        for name in moved:  # the user's files go back before the temporary directory is deleted
            if os.path.lexists(tmp / name) and not os.path.lexists(final / name):
                os.rename(tmp / name, final / name)
        remove_temp(tmp)
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
