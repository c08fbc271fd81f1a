"""Shared fixtures: a small tokenizer and pretraining data made once per test session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "botchan.txt"


def run_cli(*args: str, check: bool = False, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m bertcli ARGS` and capture its output (as a user would see it)."""
    proc = subprocess.run([sys.executable, "-m", "bertcli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"bertcli {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A 2,000-piece BPE tokenizer trained on sample_data (one thread, so it is reproducible)."""
    from bertcli.corpus import Corpus
    from bertcli.tokenizer import TrainOptions, train

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    # bpe named, not the default: the golden shards (tests/golden/nsp_shards.json) and loss curve were made with it
    train(Corpus([SAMPLE]), out, TrainOptions(vocab_size=2000, model_type="bpe", threads=1, seed=7))
    return out


@pytest.fixture(scope="session")
def data_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """Pretraining data from sample_data at max_seq_length 64, with a validation split."""
    from bertcli.make_data import MakeDataOptions, make_data

    out = tmp_path_factory.mktemp("data") / "data"
    opts = MakeDataOptions(max_seq_length=64, dupe_factor=2, validation_fraction=0.05, workers=1, shard_size=2000)
    make_data([SAMPLE], tokenizer_dir, out, opts, show_progress=False)
    return out


TINY_MODEL = ["model.hidden_size=32", "model.num_hidden_layers=2", "model.num_attention_heads=2",
              "model.intermediate_size=64", "model.max_position_embeddings=64"]


def tiny_overrides(data_dir: Path, out_dir: Path, *extra: str) -> list[str]:
    """--set assignments for a model that trains in a second on the fixture data."""
    return [f"data.dir={data_dir}", f"out_dir={out_dir}", *TINY_MODEL,
            "train.global_batch_size=16", "train.micro_batch_size=8", "train.max_steps=6", "train.warmup_steps=2",
            "train.learning_rate=1e-3", "system.log_interval=1", "system.checkpoint_interval=3",
            "system.device=cpu", "system.eval_batches=2", *extra]


def tiny_config(data_dir: Path, out_dir: Path, *extra: str):
    from bertcli.config import load_config

    return load_config(None, tiny_overrides(data_dir, out_dir, *extra))


@pytest.fixture
def cli(capsys):
    """Call `bertcli.cli.main` in-process (fast); return (exit code, stdout, stderr)."""
    from bertcli.cli import main

    def call(*args) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of a few hundred KB mounted at tmp_path/full (root only), unmounted afterwards."""
    def mount(size_kb: int) -> Path:
        target = tmp_path / f"full{size_kb}"
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(target)
        return target

    mounted: list[Path] = []
    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory) -> Path:
    """A run directory of the tiny model after 4 steps; tests only read it."""
    from bertcli.train import pretrain

    run = tmp_path_factory.mktemp("trained") / "run"
    pretrain(tiny_config(data_dir, run, "train.max_steps=4"), show_progress=False)
    return run
