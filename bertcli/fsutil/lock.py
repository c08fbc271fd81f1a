"""One writer per output: a lock file beside the resolved output (see the package docstring)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import sys
from pathlib import Path

from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.fsutil.files import FULL_DISK

LOCK_SUFFIX = ".bertcli-lock"
MAX_LOCK_BYTES = 4096


class BusyError(BertcliError):
    """Another bertcli process is writing the same output: exit 1."""

    exit_code = 1


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
        if e.errno in FULL_DISK:
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
