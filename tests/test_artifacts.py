"""Self-contained artifacts: data directories and checkpoints carry their tokenizer (artifacts.py).

A finished run and its data, copied to a new tree with the originals deleted, still evaluate,
export, predict and show from an unrelated working directory, and export the same model.
"""

from __future__ import annotations

import json
import shutil

import pytest

from bertcli.checkpoint import list_checkpoints
from bertcli.make_data import MakeDataOptions, make_data
from bertcli.tokenizer import Tokenizer
from bertcli.train import pretrain
from conftest import SAMPLE, tiny_config


def tree_files(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def original(tokenizer_dir, tmp_path_factory):
    """A tokenizer copy, data made with it and a tiny run on that data, all under one root."""
    root = tmp_path_factory.mktemp("original")
    shutil.copytree(tokenizer_dir, root / "tok")
    make_data([SAMPLE], root / "tok", root / "data", MakeDataOptions(max_seq_length=64, dupe_factor=1,
              validation_fraction=0.05, workers=1), show_progress=False)
    pretrain(tiny_config(root / "data", root / "run", "train.max_steps=3", "data.masking=dynamic"), show_progress=False)
    return root


def test_data_and_checkpoints_carry_the_tokenizer(original):
    tok = Tokenizer.load(original / "tok")
    for where in (original / "data", *list_checkpoints(original / "run")):
        carried = Tokenizer.load(where / "tokenizer")
        assert carried.sha256 == tok.sha256 and carried.special_ids == tok.special_ids
    assert json.loads((original / "data" / "manifest.json").read_text())["tokenizer"]["dir"] == "tokenizer"


def test_a_moved_run_and_data_work_from_any_directory(cli, original, tmp_path, monkeypatch):
    export_here = tmp_path / "export-original"
    assert cli("export", "--checkpoint", original / "run", "--out", export_here)[0] == 0

    moved = tmp_path / "elsewhere" / "tree"
    shutil.copytree(original, moved, symlinks=False)
    shutil.rmtree(original)  # nothing of the original tree is left to find
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    monkeypatch.chdir(unrelated)

    code, out, err = cli("eval", "--checkpoint", moved / "run", "--data", moved / "data", "--split", "validation",
                         "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["examples"] > 0
    code, out, err = cli("predict", "--checkpoint", moved / "run", "The [MASK] sat.", "--json", "--device", "cpu")
    assert code == 0, err
    assert len(json.loads(out)["masks"]) == 1
    code, _, err = cli("show-data", moved / "data", "--count", 2)
    assert code == 0 and "#1" in err
    code, _, err = cli("export", "--checkpoint", moved / "run", "--out", "export-moved")
    assert code == 0, err

    before, after = tree_files(export_here), tree_files(unrelated / "export-moved")
    # the provenance names the checkpoint's path, which did move; the ownership marker has its own id
    differ = {"bertcli_export.json", ".bertcli-owner.json"}
    assert before.keys() == after.keys()
    assert {k: v for k, v in before.items() if k not in differ} == {k: v for k, v in after.items() if k not in differ}
