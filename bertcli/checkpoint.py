"""Checkpoints: save atomically, find the latest, load with integrity and sanity checks.

A checkpoint is a directory `out_dir/checkpoints/step-NNNNNNN/`:

    model.safetensors    weights under Hugging Face BertForPreTraining's key names
    optimizer.pt         AdamW state (torch.save; read back with weights_only=True, then checked)
    scaler.pt            the fp16 GradScaler's state, when fp16 is used
    trainer_state.json   step, tokens seen, model config, data signature, sha256 of each file above
    config.yaml          the resolved run config, so the checkpoint loads with nothing else
    tokenizer/           the training data's tokenizer (format_version 2; see artifacts.py)

It is written under a temporary name and renamed, so a kill mid-save leaves the previous
checkpoint as the latest complete one. Data position and dropout seeds derive from the step
(see batches.py and train.py), so the step is all the trainer needs to continue exactly.

Everything read back is treated as possibly crafted, even when its sha256 matches: the trainer
state is checked field by field (types, ranges, a model a real BERT could be), every file in the
directory must be listed with a checksum, and optimizer state must match the parameters' shapes
and dtypes before it reaches torch (fused AdamW trusts them and would write out of bounds).
Weights are checked finite before a checkpoint is written, so every checkpoint bertcli writes
is one a run can continue from.
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bertcli.console import shown
from bertcli.errors import DataError, UsageError
from bertcli.architectures import build_model, config_from_dict, config_problems
from bertcli.fsutil import (atomic_directory, own, read_json, read_owner, remove_owned, remove_temps, sha256_file,
                            write_json_atomic)
from bertcli.limits import MAX_COUNT, SHA256, is_int, is_number
from bertcli.objectives import checkpoint_objective
from bertcli.tokenizer import ARTIFACT_DIR

FORMAT = "bertcli-checkpoint"
FORMAT_VERSION = 2  # of trainer_state.json; a checkpoint carries its tokenizer in tokenizer/
STATE_FILE, MODEL_FILE, OPTIMIZER_FILE, SCALER_FILE, CONFIG_FILE = (
    "trainer_state.json", "model.safetensors", "optimizer.pt", "scaler.pt", "config.yaml")
REQUIRED_FILES = (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE)
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
    final = root / f"step-{step:07d}"
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # the trainer never gets here with a bad step; this guards the guarantee itself
        raise DataError(f"not writing checkpoint {final}: {bad} is not finite; the last good checkpoint is "
                        f"{last_finite_checkpoint(run_dir) or 'none'}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {root}: {e.strerror}; choose a writable out_dir") from None
    owned = read_owner(run_dir) is not None  # the run's marker lists its checkpoints (a bare directory in tests)
    if owned:
        own(run_dir, [f"{root.name}/"])  # a run killed in its first save leaves only bertcli's files here
        remove_temps(run_dir)  # what killed saves of this run left (the run's lock is ours: none is running)
    try:  # (atomic_directory also deletes what a killed save left)
        with atomic_directory(final, "checkpoint") as tmp:
            save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "pt"})
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            files = [MODEL_FILE, OPTIMIZER_FILE]
            if scaler is not None and scaler.is_enabled():
                torch.save(scaler.state_dict(), tmp / SCALER_FILE)
                files.append(SCALER_FILE)
            (tmp / CONFIG_FILE).write_text(config_yaml)
            files.append(CONFIG_FILE)
            if tokenizer is not None:  # the training data's tokenizer travels with the weights (artifacts.py)
                tokenizer.save(tmp / ARTIFACT_DIR)
            state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state,
                     "files": {name: sha256_file(tmp / name) for name in files}}
            write_json_atomic(tmp / STATE_FILE, state)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a full disk as RuntimeError
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120]
        raise DataError(f"cannot write checkpoint {final}: {reason}; free some space — "
                        "the previous checkpoint is intact") from None
    # Only checkpoints with finite weights are ever written, so the newest `keep` always include one.
    old = list_checkpoints(run_dir)[:-keep]
    for ckpt in old:
        remove_owned(ckpt, whole=True)  # what the save wrote: a file the user put there stays, with its directory
    if owned:
        own(run_dir, [f"{root.name}/{final.name}/"], drop=[f"{root.name}/{c.name}/" for c in old])
    return final


def last_finite_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run whose weights load and are all finite."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            weights = load_weights(ckpt, read_state(ckpt))
        except (DataError, UsageError):
            continue
        if all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point()):
            return ckpt
    return None


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


def _is_number(v) -> bool:
    return is_number(v) and math.isfinite(v)


def state_problems(state: dict) -> list[str]:
    """What is wrong with a trainer_state.json's fields (empty when it is sound)."""
    p = []
    for key in ("step", "tokens_seen", "epoch", "seed", "global_batch_size"):
        if key in state and not (is_int(state[key]) and 0 <= state[key] <= MAX_COUNT):
            p.append(f"{key} must be an integer in [0, 2^62], got {str(state[key])[:40]!r}")
    if "global_batch_size" in state and state["global_batch_size"] == 0:
        p.append("global_batch_size must be at least 1")
    if "elapsed" in state and not (_is_number(state["elapsed"]) and state["elapsed"] >= 0):
        p.append("elapsed must be a finite number of seconds >= 0")
    mc = state.get("model_config")
    if not isinstance(mc, dict):
        p.append("model_config must be an object")
    else:
        p.extend(f"model_config.{q}" for q in config_problems(mc))
    sig = state.get("data_signature", {})
    if not isinstance(sig, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, (str, int)))
                                            for k, v in sig.items()):
        p.append("data_signature must be an object of strings and integers")
    files = state.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) and SHA256.fullmatch(v)
                                              for k, v in files.items()):
        p.append("files must map each file name to its sha256 (64 hex digits)")
    else:
        missing = [n for n in REQUIRED_FILES if n not in files]
        unknown = [n for n in files if n not in REQUIRED_FILES + (SCALER_FILE,)]
        if missing:
            p.append(f"files lacks the checksum of {', '.join(missing)}")
        if unknown:
            p.append(f"files lists unknown {', '.join(unknown)[:80]}")
    return p


def read_state(ckpt: Path) -> dict:
    path = ckpt / STATE_FILE
    if path.is_file() and path.stat().st_size > 1 << 20:
        raise DataError(f"{path} is larger than 1 MiB, far more than a trainer state; the checkpoint is damaged, use an earlier one")
    state = read_json(path, "trainer state")
    if state.get("format") != FORMAT:
        raise UsageError(f"{path} is not a bertcli checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{ckpt} has checkpoint format_version {str(state.get('format_version'))[:20]}, "
                         f"this bertcli reads {FORMAT_VERSION}")
    for key in ("step", "model_config", "files"):
        if key not in state:
            raise DataError(f"{path} lacks {key!r}; the checkpoint is damaged, use an earlier one")
    problems = state_problems(state)
    if problems:
        raise DataError(f"{path}: {problems[0]}; the checkpoint is damaged or edited, use an earlier one")
    if (ckpt / SCALER_FILE).exists() and SCALER_FILE not in state["files"]:
        raise DataError(f"{ckpt / SCALER_FILE} is not listed in {STATE_FILE}; the checkpoint was altered, use an earlier one")
    return state


def verify_files(ckpt: Path, state: dict, names: list[str]) -> None:
    """Each named file that the state lists must exist and match its sha256 (read_state made sure
    the required ones are listed, and that no file present is unlisted)."""
    for name in names:
        path = ckpt / name
        expected = state["files"].get(name)
        if expected is None:
            if name in REQUIRED_FILES or path.exists():
                raise DataError(f"{path} has no checksum in {STATE_FILE}; the checkpoint was altered, use an earlier one")
            continue
        if not path.is_file():
            raise DataError(f"{path} is missing; the checkpoint is incomplete, use an earlier one")
        if sha256_file(path) != expected:
            raise DataError(f"{path} does not match its sha256 in {STATE_FILE}; the checkpoint is damaged, use an earlier one")


def expected_shapes(config, sentence_task: bool = True) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Every weight's shape and dtype for a config, computed without allocating the model
    (sentence_task False: an mlm model, without pooler and two-way head)."""
    with torch.device("meta"):
        model = build_model(config, sentence_task=sentence_task)
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def load_weights(ckpt: Path, state: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, after checking their checksum and that they are the model its state describes."""
    verify_files(ckpt, state, [MODEL_FILE])
    path = ckpt / MODEL_FILE
    expected = expected_shapes(config_from_dict(state["model_config"]), checkpoint_objective(state, ckpt).has_sentence_task)
    try:
        with safe_open(str(path), "pt") as f:  # the header alone: shapes are checked before anything is allocated
            keys = set(f.keys())
            for key in keys & set(expected):
                if tuple(f.get_slice(key).get_shape()) != tuple(expected[key][0]):
                    raise DataError(f"{path}: {key} has shape {f.get_slice(key).get_shape()}, the model_config in "
                                    f"{STATE_FILE} needs {list(expected[key][0])}; the checkpoint was altered, use an earlier one")
        if keys != set(expected):
            raise DataError(f"{path}: weights do not match the model_config in {STATE_FILE} (missing "
                            f"{sorted(set(expected) - keys)[:2]}, unexpected {sorted(keys - set(expected))[:2]}); use an earlier checkpoint")
        weights = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise DataError(f"{path}: cannot read weights ({str(e)[:120]}); use an earlier checkpoint") from None
    for key, value in weights.items():
        if value.dtype != expected[key][1]:
            raise DataError(f"{path}: {key} is {value.dtype}, expected {expected[key][1]}; use an earlier checkpoint")
    return weights


# torch.load(weights_only=True) is what keeps a crafted .pt/.bin from running code; below torch 2.6
# it can be bypassed (CVE-2025-32434), so pyproject.toml requires 2.6 and a load refuses an older one.
MIN_SAFE_TORCH = (2, 6)


def torch_version() -> tuple[int, int]:
    major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in torch.__version__.split(".")[:2])
    return major, minor


def check_torch_zip(path: Path) -> str | None:
    """What makes a torch file unsafe to hand to torch.load: a zip whose records declare more bytes
    than the file holds (torch.save stores records uncompressed, so a compressed one is an
    inflation bomb: 2 MB that expand to GBs before any check), or a torch without safe loading."""
    if torch_version() < MIN_SAFE_TORCH:
        return (f"torch {torch.__version__} can be made to run code by a crafted file even with weights_only=True "
                "(CVE-2025-32434); install torch 2.6 or newer")
    if not zipfile.is_zipfile(path):
        return None  # torch's legacy (pre-1.6) format: no compression, read as laid out
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        return f"not a readable torch file ({shown(e, 80)})"
    declared, size = sum(r.file_size for r in records), Path(path).stat().st_size
    if any(r.compress_type != zipfile.ZIP_STORED for r in records) or declared > size:
        return (f"its records declare {declared:,} bytes in a file of {size:,} (compressed records); torch.save "
                "never writes that, refused before loading")
    return None


def load_torch_state(path: Path):
    """Optimizer/scaler state: plain tensors and containers only, never arbitrary pickles."""
    if problem := check_torch_zip(path):
        raise DataError(f"{path}: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged or foreign file
        raise DataError(f"{path}: cannot load ({type(e).__name__}); the checkpoint is damaged, use an earlier one") from None


def load_optimizer_state(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """Load AdamW state after checking it fits `optimizer`'s parameters exactly: same groups, same
    hyperparameter names and types, and for every parameter a step count and two moments of its
    own shape and dtype — fused AdamW trusts these and would read and write out of bounds."""
    saved, own = load_torch_state(path), optimizer.state_dict()
    where = f"{path}: "
    fix = "; the checkpoint is damaged or altered, use an earlier one"
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise DataError(where + "not an optimizer state (expected keys state and param_groups)" + fix)
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(own["param_groups"]):
        raise DataError(where + f"param_groups must be a list of {len(own['param_groups'])} groups" + fix)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, (group, mine) in enumerate(zip(groups, own["param_groups"])):
        if not isinstance(group, dict) or set(group) != set(mine):
            raise DataError(where + f"param_groups[{i}] has other keys than AdamW's" + fix)
        if group["params"] != mine["params"]:
            raise DataError(where + f"param_groups[{i}] lists other parameters than this model has" + fix)
        for key, value in group.items():
            ok = type(value) is type(mine[key]) or (isinstance(mine[key], (int, float)) and not isinstance(mine[key], bool)
                                                    and _is_number(value))
            if key == "betas":
                ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(b) for b in value)
            elif isinstance(value, float) and not math.isfinite(value):
                ok = False
            if not ok:
                raise DataError(where + f"param_groups[{i}].{key} is {str(value)[:40]!r}, not like AdamW's {mine[key]!r}" + fix)
    state = saved["state"]
    if not isinstance(state, dict) or not all(is_int(k) and 0 <= k < len(params) for k in state):
        raise DataError(where + "state must map parameter numbers to their AdamW state" + fix)
    for k, entry in state.items():
        p = params[k]
        if not isinstance(entry, dict) or set(entry) != {"step", "exp_avg", "exp_avg_sq"}:
            raise DataError(where + f"state[{k}] must hold step, exp_avg and exp_avg_sq" + fix)
        step = entry["step"]
        if not (isinstance(step, torch.Tensor) and step.dim() == 0 and step.dtype == torch.float32
                and math.isfinite(float(step)) and 0 <= float(step) <= 2**24 and float(step) == int(step)):
            raise DataError(where + f"state[{k}].step must be a float32 scalar step count" + fix)
        for name in ("exp_avg", "exp_avg_sq"):
            t = entry[name]
            if not isinstance(t, torch.Tensor) or t.shape != p.shape or t.dtype != p.dtype or t.layout != torch.strided:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise DataError(where + f"state[{k}].{name} is {shape}, parameter {k} is {tuple(p.shape)} {p.dtype}" + fix)
            if not bool(torch.isfinite(t).all()) or (name == "exp_avg_sq" and bool((t < 0).any())):
                raise DataError(where + f"state[{k}].{name} holds non-finite or negative values" + fix)
    optimizer.load_state_dict(saved)


SCALER_KEYS = {"scale": float, "growth_factor": float, "backoff_factor": float, "growth_interval": int, "_growth_tracker": int}


def load_scaler_state(path: Path, scaler) -> None:
    saved = load_torch_state(path)
    if not isinstance(saved, dict) or set(saved) != set(SCALER_KEYS) or not all(
            _is_number(saved[k]) and (typ is float or is_int(saved[k])) and saved[k] >= 0 for k, typ in SCALER_KEYS.items()):
        raise DataError(f"{path}: not a GradScaler state (scale, growth_factor, backoff_factor, growth_interval, "
                        "_growth_tracker as finite numbers); the checkpoint is damaged, use an earlier one")
    scaler.load_state_dict(saved)
