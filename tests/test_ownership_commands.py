"""Every command that writes a directory deletes only what bertcli wrote there (issue 22, §1-3).

For each command, a user's file is put at each depth of an output it made; `--overwrite` then
stops with one line naming the file (exit 2) and the file, and the output, stay as they were.
An export's README.md model card is the exception: it is kept through the replacement.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil

import pytest

from bertcli.errors import UsageError
from bertcli.fsutil import TOKEN, DirLock, read_owner
from bertcli.train import pretrain
from conftest import SAMPLE, tiny_config


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def plant(out, where: str) -> None:
    path = out / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("the user's own")


def assert_refused(code: int, err: str, out, where: str, before: dict) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    named = re.search(r"holds '([^']*)', which bertcli did not write", lines[0]).group(1)
    assert where.startswith(named)
    assert files_of(out) == before  # nothing was deleted, the user's file included


@pytest.fixture(scope="module")
def tokenizer_out(tmp_path_factory):
    from bertcli.corpus import Corpus
    from bertcli.tokenizer import TrainOptions, train

    out = tmp_path_factory.mktemp("own-tok") / "tok"
    train(Corpus([SAMPLE]), out, TrainOptions(vocab_size=400, threads=1, seed=7))
    return out


@pytest.mark.parametrize("where", ["notes.txt", "sub/notes.txt", ".tmp-anything"])
@pytest.mark.parametrize("from_inside", [False, True])
def test_tokenize_overwrite_keeps_a_users_file(cli, tokenizer_out, tmp_path, monkeypatch, where, from_inside):
    out = tmp_path / "tok"
    shutil.copytree(tokenizer_out, out)
    plant(out, where)
    before = files_of(out)
    if from_inside:
        monkeypatch.chdir(out)  # `--out .` from inside the directory
    code, _, err = cli("tokenize", SAMPLE, "--out", "." if from_inside else out, "--vocab-size", 400,
                       "--threads", 1, "--overwrite")
    assert_refused(code, err, out, where, before)


@pytest.fixture(scope="module")
def run_out(trained_run):
    """conftest's run (checkpoints at steps 3 and 4); tests copy it before they touch it."""
    return trained_run


@pytest.fixture(scope="module")
def export_out(run_out, tmp_path_factory):
    from bertcli.export import export

    out = tmp_path_factory.mktemp("own-export") / "export"
    export(run_out, out)
    return out


@pytest.mark.parametrize("where", ["notes.txt", "sub/notes.txt", "config.json.orig"])
def test_export_overwrite_keeps_a_users_file(cli, run_out, export_out, tmp_path, where):
    out = tmp_path / "export"
    shutil.copytree(export_out, out)
    plant(out, where)
    before = files_of(out)
    code, _, err = cli("export", "--checkpoint", run_out, "--out", out, "--overwrite")
    assert_refused(code, err, out, where, before)


def test_export_overwrite_keeps_the_model_card(cli, run_out, export_out, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(export_out, out)
    (out / "README.md").write_text("---\nlicense: apache-2.0\n---\n# my model\n")
    code, _, err = cli("export", "--checkpoint", run_out, "--out", out, "--overwrite", "--dtype", "bfloat16")
    assert code == 0, err
    assert (out / "README.md").read_text().endswith("# my model\n")
    assert '"bfloat16"' in (out / "config.json").read_text()  # the rest was replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize("where", ["notes.txt", "checkpoints/step-0000003/user.txt", "checkpoints/notes.txt",
                                   "tensorboard/mine.txt", "checkpoints/step-0000003/tokenizer/x.txt", "export"])
def test_pretrain_overwrite_keeps_a_users_file(data_dir, run_out, export_out, tmp_path, where):
    run = tmp_path / "run"
    shutil.copytree(run_out, run)
    if where == "export":  # a whole export the user put into the run directory (a bertcli marker of its own)
        shutil.copytree(export_out, run / "export")
    else:
        plant(run, where)
    before = files_of(run)
    with pytest.raises(UsageError) as e:
        pretrain(tiny_config(data_dir, run, "train.max_steps=2"), overwrite=True, show_progress=False)
    assert_refused(2, str(e.value), run, where, before)


def test_pretrain_overwrite_replaces_its_own_run(data_dir, run_out, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_out, run)
    (run / "checkpoints" / f".tmp-step-0000009.abcdef.{TOKEN}.{os.getpid()}").mkdir()  # a killed save of a writer
    owner = read_owner(run)
    owner["writers"].append(TOKEN)
    (run / ".bertcli-owner.json").write_text(json.dumps(owner))
    pretrain(tiny_config(data_dir, run, "train.max_steps=2"), overwrite=True, show_progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002"]


@pytest.mark.slow  # two pretrain runs
def test_a_user_file_in_a_rotated_checkpoint_survives(data_dir, tmp_path):
    run = tmp_path / "run"
    pretrain(tiny_config(data_dir, run, "train.max_steps=3", "system.keep_checkpoints=1"), show_progress=False)
    plant(run, "checkpoints/step-0000003/notes.txt")
    pretrain(tiny_config(data_dir, run, "train.max_steps=6", "system.keep_checkpoints=1"), resume="auto",
             show_progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    assert os.listdir(run / "checkpoints" / "step-0000003") == ["notes.txt"]  # the rest of the old one went


def test_a_second_run_through_an_alias_gets_the_lock(data_dir, run_out, tmp_path):
    from bertcli.fsutil import BusyError

    run, alias = tmp_path / "R", tmp_path / "R_alias"
    shutil.copytree(run_out, run)
    alias.symlink_to(run)
    before = files_of(run)
    with DirLock(run, "out_dir"):  # the first run, still writing
        with pytest.raises(BusyError, match="is being written by"):
            pretrain(tiny_config(data_dir, alias, "train.max_steps=2"), overwrite=True, show_progress=False)
    assert files_of(run) == before


@pytest.mark.parametrize("command", ["tokenize", "pretrain"])
def test_a_full_disk_at_the_lock_write_is_one_line_exit_1(cli, data_dir, tokenizer_out, run_out, tmp_path,
                                                          monkeypatch, command):
    from conftest import tiny_overrides

    out = tmp_path / "out"
    shutil.copytree(tokenizer_out if command == "tokenize" else run_out, out)
    before = files_of(out)

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)  # the lock's holder line is the first thing written
    if command == "tokenize":
        code, _, err = cli("tokenize", SAMPLE, "--out", out, "--vocab-size", 400, "--threads", 1, "--overwrite")
    else:
        sets = [a for s in tiny_overrides(data_dir, out, "train.max_steps=2") for a in ("--set", s)]
        code, _, err = cli("pretrain", *sets, "--overwrite")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "No space left on device" in err, err
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file left behind


def dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("command", ["tokenize", "export"])
def test_a_killed_runs_temporary_directory_is_cleaned_by_the_next_run(cli, run_out, tmp_path, command):
    from bertcli import fsutil

    out = tmp_path / "out"
    pid = dead_pid()
    left = tmp_path / f".tmp-out.abcdef.{'9' * 12}.{pid}"  # what kill -9 mid-write leaves
    left.mkdir()
    (left / "model.safetensors").write_bytes(b"\0" * 4096)
    marker = fsutil.ownership.new_marker("tokenizer" if command == "tokenize" else "export", pending=True)
    marker["pid"] = pid
    (left / fsutil.OWNER_FILE).write_text(json.dumps(marker))
    (tmp_path / ".out.bertcli-lock").write_text(f"pid {pid} on {os.uname().nodename} (bertcli {command})\n")
    if command == "tokenize":
        code, _, err = cli("tokenize", SAMPLE, "--out", out, "--vocab-size", 400, "--threads", 1)
    else:
        code, _, err = cli("export", "--checkpoint", run_out, "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the leftover and the stale lock file went


MAKE_DATA = ["--max-seq-length", 64, "--dupe-factor", 2, "--validation-fraction", 0.05, "--workers", 1,
             "--shard-size", 2000]  # the options of conftest's data_dir


@pytest.mark.parametrize("where", ["notes.txt", "train/notebook.ipynb", "validation/x/y.txt", "tokenizer/notes.txt",
                                   "train/.tmp-anything"])
def test_make_data_overwrite_keeps_a_users_file(cli, tokenizer_dir, data_dir, tmp_path, where):
    out = tmp_path / "data"
    shutil.copytree(data_dir, out)
    plant(out, where)
    before = files_of(out)
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--overwrite", *MAKE_DATA)
    assert_refused(code, err, out, where, before)


@pytest.mark.parametrize("where", ["notes.txt", "train/.tmp-anything", "train/notebook.ipynb", "train/shard-00009.safetensors"])
def test_make_data_resume_never_deletes_a_users_file(tokenizer_dir, tmp_path, monkeypatch, where):
    from test_make_data import SMALL, interrupt_after, make, output_files

    part = tmp_path / "part"
    interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        make(part, tokenizer_dir, workers=1, **SMALL)
    monkeypatch.undo()
    plant(part, where)
    if where.endswith(".safetensors"):  # at a name make-data is about to write: refused, kept
        with pytest.raises(UsageError, match=f"holds '{where}', which bertcli did not write"):
            make(part, tokenizer_dir, workers=1, resume=True, **SMALL)
        assert (part / where).read_text() == "the user's own"
        (part / where).unlink()
    make(part, tokenizer_dir, workers=1, resume=True, **SMALL)
    if not where.endswith(".safetensors"):
        assert (part / where).read_text() == "the user's own"
        (part / where).unlink()
    make(tmp_path / "full", tokenizer_dir, workers=1, **SMALL)
    assert output_files(part) == output_files(tmp_path / "full")


def run_command(cli, command, out, tokenizer_dir, data_dir, run_out, *extra):
    from conftest import tiny_overrides

    if command == "tokenize":
        return cli("tokenize", SAMPLE, "--out", out, "--vocab-size", 400, "--threads", 1, *extra)
    if command == "make-data":
        return cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, *MAKE_DATA, *extra)
    if command == "export":
        return cli("export", "--checkpoint", run_out, "--out", out, *extra)
    sets = [a for s in tiny_overrides(data_dir, out, "train.max_steps=2") for a in ("--set", s)]
    return cli("pretrain", *sets, *extra)


@pytest.mark.parametrize("name", [".out.bertcli-lock", "out/.bertcli-owner.json"])
@pytest.mark.parametrize("command", ["tokenize", "make-data", "export", "pretrain"])
def test_a_symlink_at_a_name_bertcli_creates_is_never_followed(cli, tokenizer_dir, data_dir, run_out, tmp_path,
                                                               command, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(victim)
    code, _, err = run_command(cli, command, tmp_path / "out", tokenizer_dir, data_dir, run_out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert victim.read_text() == "precious" and link.is_symlink()


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.yaml"])
def test_resume_never_writes_through_a_link_put_in_a_run(data_dir, run_out, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(run_out, run)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / name).unlink()
    (run / name).symlink_to(victim)
    with pytest.raises(UsageError, match=f"{name} was replaced by something bertcli did not write"):
        pretrain(tiny_config(data_dir, run, "train.max_steps=6"), resume="auto", show_progress=False)
    assert victim.read_text() == "precious"


@pytest.mark.slow  # two pretrain runs
def test_a_run_killed_in_its_first_save_starts_afresh_with_resume_auto(data_dir, tmp_path, monkeypatch):
    import bertcli.checkpoint as checkpoint

    run = tmp_path / "run"
    real = checkpoint.save_file

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # inside the first save, its temporary directory half written

    monkeypatch.setattr(checkpoint, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config(data_dir, run, "train.max_steps=3"), show_progress=False)
    monkeypatch.undo()
    pretrain(tiny_config(data_dir, run, "train.max_steps=3"), resume="auto", show_progress=False)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000003"]


def run_main(args) -> None:
    from bertcli.cli import main

    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code in (0, None)


def overwrite_a_copy_refused(cli, made, args, tmp_path, where) -> None:
    """Copy the output `args` made, put a user's file at `where`, rerun with --overwrite: refused."""
    out = tmp_path / made.name
    shutil.copytree(made, out)
    plant(out, where)
    before = files_of(out)
    code, _, err = cli(*[str(out) if a == made else a for a in args], "--overwrite")
    assert_refused(code, err, out, where, before)


@pytest.fixture(scope="module")
def finetune_out(trained_run, tmp_path_factory):
    from test_finetune import FAST, _lines, _label, _write_tsv

    root = tmp_path_factory.mktemp("own-ft")
    rows = [(t, _label(t)) for t in _lines(64)]  # as test_finetune's task
    task = {"train": _write_tsv(root / "train.tsv", rows[:48]), "validation": _write_tsv(root / "dev.tsv", rows[48:])}
    out = root / "ft"
    args = ["finetune", "--model", trained_run, "--train", task["train"], "--validation", task["validation"],
            "--text-field", "sentence", "--out", out, *FAST]
    run_main(args)
    return out, args


@pytest.mark.parametrize("where", ["notes.txt", "model/notes.txt", "model/sub/x.txt", "model/README.md"])
def test_finetune_overwrite_keeps_a_users_file(cli, finetune_out, tmp_path, where):
    overwrite_a_copy_refused(cli, *finetune_out, tmp_path, where)


@pytest.fixture(scope="module")
def glue_out(trained_run, tmp_path_factory):
    from test_glue import GLUE, TINY_RUN

    out = tmp_path_factory.mktemp("own-glue") / "glue"
    args = ["glue", "--model", trained_run, "--data", GLUE, "--out", out, "--tasks", "rte", "--seeds", 1, *TINY_RUN]
    run_main(args)
    return out, args


@pytest.mark.slow  # a GLUE run (about 10 s)
@pytest.mark.parametrize("where", ["notes.txt", "submission/notes.txt", "runs/rte/mine.txt"])
def test_glue_overwrite_keeps_a_users_file(cli, glue_out, tmp_path, where):
    overwrite_a_copy_refused(cli, *glue_out, tmp_path, where)


def test_a_symlinked_out_stays_a_symlink_through_overwrite(cli, tokenizer_out, tmp_path):
    real, link = tmp_path / "real", tmp_path / "tok"
    shutil.copytree(tokenizer_out, real)
    link.symlink_to(real)
    code, _, err = cli("tokenize", SAMPLE, "--out", link, "--vocab-size", 420, "--threads", 1, "--overwrite")
    assert code == 0, err
    from bertcli.tokenizer import Tokenizer

    assert link.is_symlink() and Tokenizer.load(real).vocab_size == 420  # the link's target was replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real", "tok"]  # no .tmp-* and no lock file left


def test_a_killed_save_is_cleaned_by_the_next_save_and_a_look_alike_stays(data_dir, run_out, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_out, run)
    writer = read_owner(run)["writers"][0]  # the process that wrote the run
    killed = run / "checkpoints" / f".tmp-step-0000099.abcdef.{writer}.1"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"half")
    plant(run, "checkpoints/.tmp-mine/x.txt")  # a look-alike: no writer of this run made it
    pretrain(tiny_config(data_dir, run, "train.max_steps=6"), resume="auto", show_progress=False)
    assert not killed.exists() and (run / "checkpoints" / ".tmp-mine" / "x.txt").read_text() == "the user's own"
