"""Per-file ownership, symlink-safe names, locks on resolved paths and leftovers (fsutil).

The commands' own tests (test_ownership_commands.py) run the same rules through the CLI.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from bertcli import fsutil
from bertcli.errors import DataError, UsageError
from bertcli.fsutil import (OWNER_FILE, TOKEN, BusyError, DirLock, atomic_directory, check_output_dir, foreign_entry,
                            lock_path_for, mark_owned, own, read_owner, remove_owned, write_bytes_atomic)


def owned_tree(root):
    """A directory bertcli wrote: files at depths 0, 1 and 2, and a nested unit with its own marker."""
    (root / "train" / "deep").mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    (root / "train" / "shard-000000.safetensors").write_bytes(b"x" * 10)
    (root / "train" / "deep" / "x.bin").write_bytes(b"y")
    unit = root / "checkpoints" / "step-1"
    unit.mkdir(parents=True)
    (unit / "model.safetensors").write_bytes(b"m")
    mark_owned(unit, "checkpoint", ["model.safetensors"])
    mark_owned(root, "data", ["manifest.json", "train/shard-000000.safetensors", "train/deep/x.bin"])
    own(root, ["checkpoints/step-1/"])
    return root


def named(message: str) -> str:
    return re.search(r"holds '([^']*)'", message).group(1)


# A user's file at every depth, in every kind of place: beside bertcli's files, in a folder bertcli
# wrote, in a nested unit, in a folder of its own, and at names that look like bertcli's temporaries.
USER_FILES = ["notes.txt", "train/notebook.ipynb", "train/deep/n.txt", "checkpoints/mine.txt",
              "checkpoints/step-1/user.txt", "newdir/x.txt", ".tmp-anything", "train/.tmp-anything",
              f"train/.tmp-shard.{'0' * 12}.1", "checkpoints/step-1/.tmp-x"]


@pytest.mark.parametrize("where", USER_FILES)
def test_a_user_file_at_any_depth_stops_overwrite_and_is_never_deleted(tmp_path, where):
    out = owned_tree(tmp_path / "out")
    user = out / where
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text("mine")
    with pytest.raises(UsageError) as e:
        check_output_dir(out, "data", overwrite=True)
    assert where.startswith(named(str(e.value))) and "\n" not in str(e.value)
    remove_owned(out, whole=True)  # even when asked to delete, only bertcli's files go
    assert user.read_text() == "mine"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [where]


def test_an_owned_directory_is_replaceable_and_removed_whole(tmp_path):
    out = owned_tree(tmp_path / "out")
    check_output_dir(out, "data", overwrite=True)
    (out / "train" / f".tmp-shard-000001.safetensors.{TOKEN}.{os.getpid()}").write_bytes(b"partial")  # ours
    assert foreign_entry(out) is None
    assert remove_owned(out, whole=True) and not out.exists()


@pytest.mark.parametrize("change", ["grown", "replaced by a link", "replaced by a directory", "marker is a link"])
def test_a_changed_file_of_bertcli_is_the_users(tmp_path, change):
    out = owned_tree(tmp_path / "out")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    shard = out / "train" / "shard-000000.safetensors"
    if change == "grown":
        shard.write_bytes(b"x" * 11)  # edited after bertcli wrote it
    elif change == "replaced by a link":
        shard.unlink()
        shard.symlink_to(victim)
    elif change == "replaced by a directory":
        shard.unlink()
        shard.mkdir()
    else:
        (tmp_path / "elsewhere").mkdir()
        mark_owned(tmp_path / "elsewhere", "data")
        (out / OWNER_FILE).unlink()
        (out / OWNER_FILE).symlink_to(tmp_path / "elsewhere" / OWNER_FILE)
    with pytest.raises(UsageError, match="did not write|not made by bertcli"):
        check_output_dir(out, "data", overwrite=True)
    remove_owned(out)
    assert victim.read_text() == "precious"
    if change != "marker is a link":
        assert os.path.lexists(shard)


@pytest.mark.parametrize("files", [{"../victim.txt": 8}, {"/etc/passwd": None}, {"a/../../victim.txt": 8},
                                   {"./victim.txt": 8}, {"x/": 5}, {"x": "dir"}, {"x": -1}, {"x": 1.5}, {"x": True}])
def test_a_crafted_marker_cannot_reach_outside_its_directory(tmp_path, files):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim.txt").write_text("precious")
    marker = mark_owned(out, "data")
    (out / OWNER_FILE).write_text(json.dumps({**marker, "files": files}))
    assert read_owner(out) is None
    remove_owned(out)
    assert (tmp_path / "victim.txt").read_text() == "precious"
    for writers in (["../.."], "x", [1]):
        (out / OWNER_FILE).write_text(json.dumps({**marker, "writers": writers}))
        assert read_owner(out) is None


def test_export_keeps_a_model_card_through_a_replacement_and_a_failure(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final, "export", keep=["README.md"]) as tmp:
        (tmp / "config.json").write_text("{}")
    (final / "README.md").write_text("# my model card")
    check_output_dir(final, "export", overwrite=True, keep=["README.md"])
    with pytest.raises(RuntimeError):
        with atomic_directory(final, "export", keep=["README.md"]) as tmp:
            (tmp / "config.json").write_text("{half")
            raise RuntimeError("killed")
    assert (final / "README.md").read_text() == "# my model card"
    with atomic_directory(final, "export", keep=["README.md"]) as tmp:
        (tmp / "config.json").write_text('{"new": 1}')
    assert (final / "README.md").read_text() == "# my model card" and "new" in (final / "config.json").read_text()
    assert "README.md" not in read_owner(final)["files"]  # kept, still the user's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_symlinked_output_stays_a_symlink(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    with atomic_directory(real, "tokenizer") as tmp:
        (tmp / "a").write_text("1")
    link.symlink_to(real)
    check_output_dir(link, "tokenizer", overwrite=True)
    with atomic_directory(link, "tokenizer") as tmp:
        (tmp / "b").write_text("2")
    assert link.is_symlink() and (link / "b").read_text() == "2" and not (real / "a").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


# --- names bertcli creates: never followed, never truncated -------------------------------------

@pytest.mark.parametrize("plant", ["symlink", "hardlink", "user file"])
def test_a_lock_name_planted_by_someone_else_is_never_written(tmp_path, plant):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock = tmp_path / ".out.bertcli-lock"
    {"symlink": lock.symlink_to, "hardlink": lock.hardlink_to}.get(plant, lambda v: lock.write_text("my notes"))(victim)
    with pytest.raises(UsageError, match="symbolic link|not a bertcli lock file"):
        with DirLock(tmp_path / "out"):
            pass
    assert victim.read_text() == "precious" and os.path.lexists(lock)
    if plant == "user file":
        assert lock.read_text() == "my notes"


def test_temporary_and_marker_names_are_never_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "config.json"
    fsutil.tmp_name(target).symlink_to(victim)  # the temporary name, predicted
    with pytest.raises(DataError, match="File exists"):
        write_bytes_atomic(target, b"{}")
    assert victim.read_text() == "precious" and not target.exists()
    out = tmp_path / "out"
    out.mkdir()
    (out / OWNER_FILE).symlink_to(victim)
    with pytest.raises(UsageError, match="not empty"):
        check_output_dir(out, "data", overwrite=False)
    mark_owned(out, "data")  # renamed over the link: the link goes, its target stays
    assert victim.read_text() == "precious" and not (out / OWNER_FILE).is_symlink()


def test_an_alias_through_a_symlink_gets_the_same_lock(tmp_path, monkeypatch):
    real, alias = tmp_path / "R", tmp_path / "R_alias"
    real.mkdir()
    alias.symlink_to(real)
    assert lock_path_for(alias) == lock_path_for(real)
    with DirLock(real, "out_dir"):
        with pytest.raises(BusyError, match=f"is being written by pid {os.getpid()}"):
            with DirLock(alias, "out_dir"):
                pass
        monkeypatch.chdir(real)  # `--out .` from inside
        with pytest.raises(BusyError):
            with DirLock(".", "--out"):
                pass


@pytest.mark.parametrize("call", ["pwrite", "ftruncate", "open"])
def test_a_full_disk_at_the_lock_write_is_one_line_exit_1(tmp_path, monkeypatch, call):
    real = getattr(os, call)

    def full(*args, **kwargs):
        if call != "open" or str(args[0]).endswith(".bertcli-lock"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, call, full)
    with pytest.raises(DataError) as e:
        with DirLock(tmp_path / "out"):
            pass
    assert e.value.exit_code == 1 and "No space left on device" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # no 0-byte lock file is left


# --- leftovers -------------------------------------------------------------------------------

KILLED_WRITER = """
import sys
from bertcli.fsutil import atomic_directory
with atomic_directory(sys.argv[1], "tokenizer") as tmp:
    (tmp / "vocab.txt").write_text("half")
    print(tmp, flush=True)
    sys.stdin.read()
"""


def test_a_killed_writers_temporary_directory_is_cleaned_by_the_next_run(tmp_path):
    final = tmp_path / "tok"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(final)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    left = child.stdout.readline().strip()  # it is mid-write now
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert os.path.isdir(left) and read_owner(left)["pending"] is True
    # what is not provably a dead writer's stays: a user's look-alike, a live writer's, another kind's
    keep = {f".tmp-tok.abcdef.{'1' * 12}.{child.pid}": None, f".tmp-tok.abcdef.{'2' * 12}.{os.getpid()}": "tokenizer",
            f".tmp-tok.abcdef.{'3' * 12}.{child.pid}": "export", ".tmp-tok.anything": None}
    for name, kind in keep.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "user.txt").write_text("mine")
        if kind:
            marker = fsutil.ownership.new_marker(kind, pending=True)
            marker["pid"] = int(name.rsplit(".", 1)[1])
            (tmp_path / name / OWNER_FILE).write_text(json.dumps(marker))
    with atomic_directory(final, "tokenizer") as tmp:
        (tmp / "vocab.txt").write_text("whole")
    assert not os.path.exists(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tok", *keep])
    assert all((tmp_path / name / "user.txt").read_text() == "mine" for name in keep)
