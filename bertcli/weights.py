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

from bertcli.checkpoint import STATE_FILE, load_weights, read_state, resolve_checkpoint
from bertcli.errors import DataError, UsageError

DERIVED_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "bert.embeddings.position_ids")
SENTENCE_HEAD = ("bert.pooler.", "cls.seq_relationship.")  # what only nsp and sop models have


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights from an exported directory, a checkpoint or a run directory (latest checkpoint)."""
    path = Path(path)
    model_file = path / "model.safetensors"
    if model_file.is_file() and not (path / STATE_FILE).is_file():  # an export (no trainer state)
        try:
            return load_file(str(model_file))
        except (SafetensorError, OSError) as e:
            raise DataError(f"{model_file}: cannot read weights ({e})") from None
    ckpt = resolve_checkpoint(path)
    return load_weights(ckpt, read_state(ckpt))


def load_pretrained(model: torch.nn.Module, path: Path) -> None:
    """Copy weights into `model`, naming any missing, unexpected or mis-shaped key.

    The sentence head (pooler and two-way classifier) may differ between objectives: weights of
    an nsp/sop model leave theirs out in an mlm model, and an mlm model's weights leave a
    sop/nsp model's head as initialised.
    """
    weights = {k: v for k, v in read_weights(path).items() if k not in DERIVED_KEYS}
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if k in own or not k.startswith(SENTENCE_HEAD)}
    own_head = {k: v for k, v in own.items() if k.startswith(SENTENCE_HEAD)}
    if own_head and not any(k.startswith(SENTENCE_HEAD) for k in weights):
        weights.update(own_head)
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
