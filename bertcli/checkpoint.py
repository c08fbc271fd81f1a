"""Checkpoints: save atomically, find the latest, load with integrity checks.

A checkpoint is a directory `out_dir/checkpoints/step-NNNNNNN/`:

    model.safetensors    weights under Hugging Face BertForPreTraining's key names
    optimizer.pt         AdamW state (torch.save; read back with weights_only=True)
    scaler.pt            the fp16 GradScaler's state, when fp16 is used
    trainer_state.json   step, tokens seen, model config, data signature, sha256 of each file above
    config.yaml          the resolved run config, so the checkpoint loads with nothing else
    tokenizer/           the tokenizer of the training data (format_version 2; see artifacts.py)

It is written under a temporary name and renamed, so a kill mid-save leaves the previous
checkpoint as the latest complete one. Data position and dropout seeds derive from the step
(see batches.py and train.py), so the step is all the trainer needs to continue exactly.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bertcli.errors import DataError, UsageError
from bertcli.fsutil import TMP_PREFIX, read_json, sha256_file, write_json_atomic
from bertcli.tokenizer import ARTIFACT_DIR

FORMAT = "bertcli-checkpoint"
FORMAT_VERSION = 2  # 2: carries tokenizer/ (1 still loads: artifacts.py finds its tokenizer the old way)
STATE_FILE, MODEL_FILE, OPTIMIZER_FILE, SCALER_FILE, CONFIG_FILE = (
    "trainer_state.json", "model.safetensors", "optimizer.pt", "scaler.pt", "config.yaml")
STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories are ignored)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer, scaler, state: dict,
                    config_yaml: str, keep: int, tokenizer=None) -> Path:
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a save that was killed: never a checkpoint
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f"{TMP_PREFIX}{final.name}.{os.getpid()}"
    tmp.mkdir()
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        files = [MODEL_FILE, OPTIMIZER_FILE]
        if scaler is not None and scaler.is_enabled():
            torch.save(scaler.state_dict(), tmp / SCALER_FILE)
            files.append(SCALER_FILE)
        (tmp / CONFIG_FILE).write_text(config_yaml)
        files.append(CONFIG_FILE)
        if tokenizer is not None:
            tokenizer.save(tmp / ARTIFACT_DIR)
        state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state,
                 "files": {name: sha256_file(tmp / name) for name in files}}
        write_json_atomic(tmp / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a full disk as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120]
        raise DataError(f"cannot write checkpoint {final}: {reason}; free some space — "
                        "the previous checkpoint is intact") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory, or a run directory (its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint {path} does not exist")
    if (path / STATE_FILE).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise UsageError(f"{path} is neither a checkpoint nor a run directory with checkpoints; "
                         "give out_dir/checkpoints/step-N or a run's out_dir")
    return found[-1]


def read_state(ckpt: Path) -> dict:
    state = read_json(ckpt / STATE_FILE, "trainer state")
    if state.get("format") != FORMAT:
        raise UsageError(f"{ckpt / STATE_FILE} is not a bertcli checkpoint")
    if state.get("format_version") not in (1, FORMAT_VERSION):
        raise UsageError(f"{ckpt} has checkpoint format_version {state.get('format_version')}, this bertcli reads 1 and {FORMAT_VERSION}")
    for key in ("step", "model_config", "files"):
        if key not in state:
            raise DataError(f"{ckpt / STATE_FILE} lacks {key!r}; the checkpoint is damaged, use an earlier one")
    return state


def verify_files(ckpt: Path, state: dict, names: list[str]) -> None:
    for name in names:
        path = ckpt / name
        expected = state["files"].get(name)
        if expected is None:
            continue
        if not path.is_file():
            raise DataError(f"{path} is missing; the checkpoint is incomplete, use an earlier one")
        if sha256_file(path) != expected:
            raise DataError(f"{path} does not match its sha256 in {STATE_FILE}; the checkpoint is damaged, use an earlier one")


def load_weights(ckpt: Path, state: dict) -> dict[str, torch.Tensor]:
    verify_files(ckpt, state, [MODEL_FILE])
    try:
        return load_file(str(ckpt / MODEL_FILE))
    except (SafetensorError, OSError) as e:
        raise DataError(f"{ckpt / MODEL_FILE}: cannot read weights ({e}); use an earlier checkpoint") from None


def load_torch_state(path: Path):
    """Optimizer/scaler state: plain tensors and containers only, never arbitrary pickles."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged or foreign file
        raise DataError(f"{path}: cannot load ({type(e).__name__}); the checkpoint is damaged, use an earlier one") from None
