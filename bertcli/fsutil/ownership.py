"""Ownership markers: which files in a directory bertcli wrote (see the package docstring).

`.bertcli-owner.json` lists each file bertcli wrote with its size (None: rewritten or appended
to), each folder it made ("name/"; NESTED when the folder carries a marker of its own), and the
tokens of the processes that wrote there. Everything here reads that list; nothing here deletes
a name it does not list, and a crafted marker cannot name anything outside its directory.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from bertcli.errors import DataError
from bertcli.fsutil.files import TEMP_NAME, TOKEN, remove_temp, write_json_atomic

OWNER_FILE = ".bertcli-owner.json"
OWNER_FORMAT = "bertcli-owner"
OWNER_VERSION = 2  # 2: per-file ownership (files, writers)
MAX_OWNER_BYTES = 16 << 20  # a marker lists every file of its directory: shards, checkpoints
NESTED = "dir"  # a `files` entry (name ending in "/") for a folder with a marker of its own


def new_marker(kind: str, pending: bool = False) -> dict:
    from bertcli import __version__

    return {"format": OWNER_FORMAT, "format_version": OWNER_VERSION, "kind": kind, "id": uuid.uuid4().hex,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bertcli_version": __version__,
            "host": socket.gethostname(), "pid": os.getpid(), "pending": pending, "writers": [TOKEN], "files": {}}


def write_marker(directory: Path, marker: dict) -> None:
    write_json_atomic(Path(directory) / OWNER_FILE, marker)  # a rename: a link planted at the name is replaced


def entry_of(directory: Path, name: str, rewritten: bool):
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
    marker = new_marker(kind)
    marker["files"] = {name: entry_of(directory, name, rewritten) for name in files}
    write_marker(directory, marker)
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
        marker["files"][name] = entry_of(directory, name, rewritten)
    write_marker(directory, marker)


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
    m = TEMP_NAME.match(name)
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
            rmdir_if_empty(directory / rel)
    (directory / OWNER_FILE).unlink(missing_ok=True)
    return whole and rmdir_if_empty(directory)


def remove_files(directory: Path, names: Iterable[str]) -> None:
    """Delete the files `names` (relative to `directory`) that its marker lists, and drop them from
    it; a name the marker does not list, or whose file has changed since, stays."""
    directory = Path(directory)
    marker = read_owner(directory)
    if marker is None:
        return
    gone = []
    for name in names:
        entry = marker["files"].get(name, NESTED)
        try:
            st = os.lstat(directory / name)
        except FileNotFoundError:
            gone.append(name)
            continue
        if entry != NESTED and stat.S_ISREG(st.st_mode) and (entry is None or st.st_size == entry):
            os.unlink(directory / name)
            gone.append(name)
    if gone:
        own(directory, [], drop=gone)


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
                    remove_temp(Path(e.path))


def rmdir_if_empty(path: Path) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False
