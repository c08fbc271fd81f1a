"""Ownership markers, output checks, atomic directory replacement and output locks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import (OWNER_FILE, BusyError, DirLock, atomic_directory, check_output_dir, input_file_problem,
                            mark_owned, read_owner, refuse_overlap, swap_into_place)


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_marker_round_trip_and_rejects_foreign_or_damaged(tmp_path):
    marker = mark_owned(tmp_path, "data")
    assert read_owner(tmp_path) == marker and marker["kind"] == "data" and len(marker["id"]) == 32
    for text in ["", "{", "[]", '{"format": "other", "kind": "data", "id": "x"}', '{"format": "bertcli-owner"}',
                 "x" * 5000]:
        (tmp_path / OWNER_FILE).write_text(text)
        assert read_owner(tmp_path) is None


def test_non_empty_directory_needs_overwrite_and_a_matching_marker(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        check_output_dir(out, "data", overwrite=False)
    with pytest.raises(UsageError, match="not made by bertcli"):
        check_output_dir(out, "data", overwrite=True)
    mark_owned(out, "tokenizer")
    with pytest.raises(UsageError, match="holds a bertcli tokenizer, not a data"):
        check_output_dir(out, "data", overwrite=True)
    mark_owned(out, "data")
    with pytest.raises(UsageError, match="'notes.txt', which bertcli did not write"):
        check_output_dir(out, "data", overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    mark_owned(out, "data", ["notes.txt"])  # had bertcli written it, --overwrite could replace it
    check_output_dir(out, "data", overwrite=True)


def test_empty_or_missing_directory_is_fine(tmp_path):
    """Accepted without --overwrite, and checking touches nothing (a check, not a claim)."""
    assert check_output_dir(tmp_path / "new" / "deeper", "data", overwrite=False) is None
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", "data", overwrite=False) is None
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"] and not any((tmp_path / "empty").iterdir())


def test_file_in_the_way_and_broken_link(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_output_dir(tmp_path / "f", "data", overwrite=True)
    with pytest.raises(UsageError, match="a file, not a directory"):
        check_output_dir(tmp_path / "f" / "sub", "data", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="broken symbolic link"):
        check_output_dir(tmp_path / "link", "data", overwrite=True)


@pytest.mark.parametrize("relation", ["same", "output contains input", "output inside input"])
def test_overlap_with_inputs_is_refused(tmp_path, relation):
    inp = tmp_path / "corpus"
    inp.mkdir()
    (inp / "a.txt").write_text("text")
    out = {"same": inp, "output contains input": tmp_path, "output inside input": inp / "sub"}[relation]
    target = inp if relation != "output contains input" else inp / "a.txt"
    with pytest.raises(UsageError, match="input"):
        refuse_overlap(out, [target])
    with pytest.raises(UsageError, match="input"):
        check_output_dir(out, "data", overwrite=True, inputs=[target])


def test_overlap_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    with pytest.raises(UsageError):
        refuse_overlap(tmp_path / "alias", [real / "x.txt"])


def test_input_problems_say_what_is_wrong(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "named pipe" in input_file_problem(fifo)
    assert "device" in input_file_problem("/dev/null")
    assert input_file_problem(tmp_path) == "is a directory"
    assert input_file_problem(tmp_path / "missing") == "does not exist"
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    assert "broken symbolic link" in input_file_problem(tmp_path / "dangling")
    (tmp_path / "ok.txt").write_text("x")
    assert input_file_problem(tmp_path / "ok.txt") is None


def test_atomic_directory_replaces_and_marks(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final, "export") as tmp:
        (tmp / "a").write_text("first")
    assert (final / "a").read_text() == "first" and read_owner(final)["kind"] == "export"
    with atomic_directory(final, "export") as tmp:
        (tmp / "b").write_text("second")
    assert not (final / "a").exists() and (final / "b").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside it


def test_atomic_directory_failure_leaves_the_old_output(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final, "export") as tmp:
        (tmp / "a").write_text("first")
    before = snapshot(final)
    with pytest.raises(RuntimeError):
        with atomic_directory(final, "export") as tmp:
            (tmp / "a").write_text("half")
            raise RuntimeError("killed")
    assert snapshot(final) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_swap_fallback_keeps_one_directory_in_place(tmp_path, monkeypatch):
    import bertcli.fsutil as fsutil

    monkeypatch.setattr(fsutil.outdir, "_exchange", lambda a, b: False)
    final, new = tmp_path / "out", tmp_path / "new"
    final.mkdir()
    (final / "old").write_text("old")
    mark_owned(final, "data", ["old"])
    new.mkdir()
    (new / "new").write_text("new")
    swap_into_place(new, final)
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_at_dot(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with atomic_directory(".", "tokenizer") as tmp:
        (tmp / "x").write_text("1")
    assert (tmp_path / "work" / "x").read_text() == "1"


def test_unwritable_parent_is_named(tmp_path, monkeypatch):
    # Permission bits do not stop root (CI runs as root), so ask os.access what a user would get.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UsageError, match="not writable by this user"):
        check_output_dir(tmp_path / "out", "data", overwrite=False)


def test_read_only_file_system_is_named(tmp_path, monkeypatch):
    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly())
    with pytest.raises(UsageError, match="read-only file system"):
        check_output_dir(tmp_path / "out", "data", overwrite=False)


def test_second_writer_stops_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom bertcli.fsutil import DirLock\n"
        f"with DirLock({str(out)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=rf"is being written by pid {holder.pid} on "):
            with DirLock(out):
                pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with DirLock(out):  # released when the holder ended
        assert (tmp_path / ".out.bertcli-lock").is_file()
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the writer
    with DirLock(out):  # and the lock is reusable by the same process
        pass


def test_a_lock_file_left_by_a_killed_writer_is_taken_over(tmp_path):
    (tmp_path / ".out.bertcli-lock").write_text("pid 1 on elsewhere (bertcli make-data)\n")
    with DirLock(tmp_path / "out"):
        assert "pid" in (tmp_path / ".out.bertcli-lock").read_text()
    assert list(tmp_path.iterdir()) == []


def test_read_json_bounds_and_depth(tmp_path):
    from bertcli.fsutil import read_json

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply|not a JSON object"):
        read_json(deep, "manifest")
    big = tmp_path / "big.json"
    big.write_text("{}" + " " * 2048)
    with pytest.raises(DataError, match="larger than"):
        read_json(big, "manifest", max_bytes=1024)
