"""Load weights into a model from a bertcli checkpoint or a Hugging Face BERT directory.

Both use HF BertForPreTraining's key names, so loading is a pass-through up to keys HF keeps and
bertcli derives: the tied decoder (`cls.predictions.decoder.*`, equal to the word embeddings and
`cls.predictions.bias`) and the `position_ids` buffer of older exports.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bertcli.checkpoint import STATE_FILE, list_checkpoints, load_weights, read_state
from bertcli.errors import DataError, UsageError

DERIVED_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "bert.embeddings.position_ids")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a checkpoint, a run directory (latest checkpoint) or an exported directory."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return load_weights(path, read_state(path))
    found = list_checkpoints(path) if path.is_dir() else []
    if found:
        return load_weights(found[-1], read_state(found[-1]))
    model_file = path / "model.safetensors"
    if model_file.is_file():
        try:
            return load_file(str(model_file))
        except (SafetensorError, OSError) as e:
            raise DataError(f"{model_file}: cannot read weights ({e})") from None
    raise UsageError(f"{path} holds no bertcli checkpoint and no model.safetensors; give a checkpoint, "
                     "a run directory or an exported model directory")


def load_pretrained(model: torch.nn.Module, path: Path) -> None:
    """Copy weights into `model`, naming any missing, unexpected or mis-shaped key."""
    weights = {k: v for k, v in read_weights(path).items() if k not in DERIVED_KEYS}
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise UsageError(f"{path}: weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         "is it a BERT with the same architecture?")
    for key, value in weights.items():
        if value.shape != own[key].shape:
            raise UsageError(f"{path}: {key} has shape {tuple(value.shape)}, the model needs {tuple(own[key].shape)}; "
                             "match the model settings (and vocabulary) to these weights")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
