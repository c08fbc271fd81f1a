"""Load weights into a model from a bertcli checkpoint, a bertcli export or a published BERT.

All use HF BertForPreTraining's key names, so loading is a pass-through up to the variants found
in published checkpoints:
- `BertModel` checkpoints have no `bert.` prefix; `BertForMaskedLM` ones have no pooler and no
  next-sentence head. What is missing of the heads keeps its fresh initialisation, said in one line;
- old TensorFlow conversions name LayerNorm parameters `gamma`/`beta`;
- the tied decoder (`cls.predictions.decoder.*`, equal to the word embeddings and
  `cls.predictions.bias`) and `position_ids` buffers are derived here, not loaded.

A *published directory* is one with `config.json` (Hugging Face's layout: `model.safetensors` or
`pytorch_model.bin`, read with `torch.load(weights_only=True)`, never unpickled). With
`train.init_from` pointing at one, the model's shape comes from its config.json
(`model_config`), and the data's tokenizer must be the directory's: same vocabulary (words put
into [unused…] slots by `tokenize --add-words` aside) and special ids. Anything else is a
one-line error before any training step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bertcli.checkpoint import STATE_FILE, check_torch_zip, load_weights, read_state, resolve_checkpoint
from bertcli.console import console, shown
from bertcli.errors import DataError, UsageError
from bertcli.fsutil import read_json
from bertcli.model import BertConfig, config_problems

DERIVED_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "bert.embeddings.position_ids")
SENTENCE_HEAD = ("bert.pooler.", "cls.seq_relationship.")  # what only nsp and sop models have
HEADS = ("bert.pooler.", "cls.")  # may be missing from a published checkpoint: initialised fresh
ARCHITECTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "hidden_act", "layer_norm_eps")
TRAINING_CHOICES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range")
CONFIG_FILE, SAFETENSORS_FILE, BIN_FILE = "config.json", "model.safetensors", "pytorch_model.bin"


def is_published_dir(path: Path) -> bool:
    """A Hugging Face model directory (an export or a published BERT), not a bertcli run or checkpoint."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and not (path / STATE_FILE).is_file() and not (path / "checkpoints").is_dir()


# --- the model config -----------------------------------------------------------------------------

def read_hf_config(path: Path) -> dict:
    """config.json, read with read_json's bounds (size, depth), its BERT fields checked by
    model.config_problems: the same types and ranges as the YAML's model: section and a
    checkpoint's trainer_state.json, before anything is allocated."""
    config_path = Path(path) / CONFIG_FILE
    config = read_json(config_path, "model config", max_bytes=1 << 20)
    if (where := _non_finite(config)) is not None:
        raise UsageError(f"{config_path}: {shown(where, 80)} is NaN or Infinity, which JSON does not allow and no BERT "
                         "config holds; fix config.json")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        architectures = []
    if config.get("model_type") != "bert" and not any(str(a).startswith("Bert") for a in architectures):
        raise UsageError(f"{config_path}: model_type {shown(config.get('model_type'), 40)!r} is not a BERT; train.init_from "
                         "takes BERT checkpoints (BertForPreTraining, BertForMaskedLM, BertModel)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UsageError(f"{config_path}: position_embedding_type {shown(config['position_embedding_type'], 40)!r}; "
                         "bertcli's BERT has absolute position embeddings only")
    bert_fields = {f.name for f in fields(BertConfig)}
    if problems := config_problems({k: v for k, v in config.items() if k in bert_fields}):
        raise UsageError(f"{config_path}: {problems[0]}; it is not a BERT config bertcli can build, fix or re-export it")
    return config


def _non_finite(node) -> str | None:
    """The key path of the first NaN or Infinity in a JSON document (walked without recursion)."""
    stack = [("", node)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where or "the document"
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return None


def model_config(init_from: str | None, model_section, vocab_size: int, tokenizer) -> BertConfig:
    """The model to build: from the YAML, or, for a published init_from, from its config.json.

    A `model:` value that differs from both bertcli's default and config.json contradicts the
    checkpoint: an error. (A value equal to the default cannot be told from an unset one.)
    """
    section = asdict(model_section)
    pad = tokenizer.pad_id if tokenizer is not None else 0
    if not init_from or not is_published_dir(Path(init_from)):
        return BertConfig(vocab_size=vocab_size, pad_token_id=pad, **section)
    path = Path(init_from)
    hf = read_hf_config(path)
    defaults = {f.name: f.default for f in fields(model_section)}
    values = {}
    for name in section:
        published = hf.get(name, defaults[name])
        set_by_user = section[name] != defaults[name]
        if name in ARCHITECTURE and set_by_user and section[name] != published:
            raise UsageError(f"model.{name} is {section[name]!r} but {path / CONFIG_FILE} says {published!r}; "
                             f"with train.init_from the model's shape comes from config.json: remove model.{name}")
        values[name] = section[name] if name in TRAINING_CHOICES and set_by_user else published
    # a field config.json leaves out takes BERT-base's value (as transformers does): the whole must still fit
    if problems := config_problems({**values, "vocab_size": vocab_size, "pad_token_id": pad}):
        raise UsageError(f"{path / CONFIG_FILE}: {problems[0]} (a missing field is BERT-base's); fix config.json")
    if hf.get("vocab_size") != vocab_size:
        raise UsageError(f"{path / CONFIG_FILE} has vocab_size {hf.get('vocab_size')} but the data's tokenizer has "
                         f"{vocab_size}; make the data with the model's tokenizer (`bertcli tokenize --from {path}`)")
    if tokenizer is not None and hf.get("pad_token_id", 0) != tokenizer.pad_id:
        raise UsageError(f"{path / CONFIG_FILE} has pad_token_id {hf.get('pad_token_id')} but the data's tokenizer has "
                         f"[PAD]={tokenizer.pad_id}; make the data with the model's tokenizer (`bertcli tokenize --from {path}`)")
    if tokenizer is not None:
        check_tokenizer_matches(path, tokenizer)
    return BertConfig(vocab_size=vocab_size, pad_token_id=pad, **values)


def check_tokenizer_matches(path: Path, tokenizer) -> None:
    """The data's tokenizer must be the published directory's, [unused…] slots it filled aside."""
    from bertcli.tokenizer import ARTIFACT_DIR, load
    from bertcli.tokenizer.base import UNUSED
    from bertcli.tokenizer.wordpiece import read_published

    own_options = getattr(tokenizer, "options", None)
    if (path / ARTIFACT_DIR).is_dir():  # a bertcli export
        published = load(path / ARTIFACT_DIR)
        vocab, options = published.vocab, getattr(published, "options", None)
    elif any((path / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        vocab, options = read_published(path, None)
    elif (path / "vocab.txt").is_file():  # a bare vocab.txt does not say its case: the data's is taken
        vocab, options = read_published(path / "vocab.txt", (own_options or {}).get("lowercase", False))
    else:
        return  # weights only: the vocab size and [PAD] checks are all there is to compare
    fix = f"make the data with the model's tokenizer (`bertcli tokenize --from {path}`)"
    if len(vocab) != tokenizer.vocab_size:
        raise UsageError(f"{path}'s tokenizer has {len(vocab)} pieces but the data's has {tokenizer.vocab_size}; {fix}")
    for i, (theirs, ours) in enumerate(zip(vocab, tokenizer.vocab)):
        if theirs != ours and not UNUSED.fullmatch(theirs):
            raise UsageError(f"{path}'s tokenizer has {theirs!r} at id {i} but the data's has {ours!r}; {fix}")
    if options is not None and own_options is not None and options != own_options:
        raise UsageError(f"{path}'s tokenizer splits text with {options} but the data's with {own_options}; {fix}")


# --- the weights ----------------------------------------------------------------------------------

def _read_bin(path: Path) -> dict[str, torch.Tensor]:
    if problem := check_torch_zip(path):
        raise DataError(f"{path}: {problem}")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged, foreign or pickled-code file
        raise DataError(f"{path}: cannot load with torch.load(weights_only=True) ({type(e).__name__}); "
                        "convert it to model.safetensors with transformers") from None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise DataError(f"{path} does not hold a flat dict of named tensors; it is not a Hugging Face state dict")
    return weights


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a published/exported directory, a checkpoint or a run directory (latest checkpoint)."""
    path = Path(path)
    if is_published_dir(path) or ((path / SAFETENSORS_FILE).is_file() and not (path / STATE_FILE).is_file()):
        if (path / SAFETENSORS_FILE).is_file():
            try:
                return load_file(str(path / SAFETENSORS_FILE))
            except (SafetensorError, OSError) as e:
                raise DataError(f"{path / SAFETENSORS_FILE}: cannot read weights ({e})") from None
        if (path / BIN_FILE).is_file():
            return _read_bin(path / BIN_FILE)
        raise UsageError(f"{path} has {CONFIG_FILE} but neither {SAFETENSORS_FILE} nor {BIN_FILE}; sharded or "
                         "TensorFlow checkpoints: convert them with transformers first")
    ckpt = resolve_checkpoint(path)
    return load_weights(ckpt, read_state(ckpt))


def normalize_keys(weights: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Published key variants → bertcli's (BertForPreTraining's) names; derived keys checked and dropped."""
    out, origin = {}, {}
    for key, value in weights.items():
        given = key
        if key.endswith(".gamma"):
            key = key[:-len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[:-len("beta")] + "bias"
        if not key.startswith(("bert.", "cls.")):
            key = "bert." + key  # a BertModel saved on its own
        if key in out:
            raise UsageError(f"{where}: the weights {shown(origin[key], 80)!r} and {shown(given, 80)!r} are both "
                             f"{shown(key, 80)!r} once named as BERT's; the checkpoint is ambiguous, keep one of them")
        out[key], origin[key] = value, given
    decoder, embeddings = out.get("cls.predictions.decoder.weight"), out.get("bert.embeddings.word_embeddings.weight")
    if decoder is not None and embeddings is not None and not torch.equal(decoder, embeddings):
        raise UsageError(f"{where}: cls.predictions.decoder.weight differs from the word embeddings; bertcli ties "
                         "them, as BERT does, and cannot continue an untied model")
    return {k: v for k, v in out.items() if k not in DERIVED_KEYS and not k.endswith(".position_ids")}


def load_pretrained(model: torch.nn.Module, path: Path) -> None:
    """Copy weights into `model`, naming any missing, unexpected or mis-shaped key.

    From a published directory, missing pretraining heads keep their fresh initialisation (said
    in one line); anywhere else, every key must be there — except the sentence head (pooler and
    two-way classifier), which differs between objectives: an mlm model leaves out the one it is
    given, and an nsp/sop model starting from mlm weights initialises its own.
    """
    path = Path(path)
    published = is_published_dir(path)
    weights = normalize_keys(read_weights(path), path)
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if k in own or not k.startswith(SENTENCE_HEAD)}
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    fresh = [k for k in missing if (published and k.startswith(HEADS)) or k.startswith(SENTENCE_HEAD)]
    missing = [k for k in missing if k not in fresh]
    if missing or unexpected:
        raise UsageError(f"{path}: weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         "is it a BERT with the same architecture?")
    for key, value in weights.items():
        if value.shape != own[key].shape:
            raise UsageError(f"{path}: {key} has shape {tuple(value.shape)}, the model needs {tuple(own[key].shape)}; "
                             "match the model settings (and vocabulary) to these weights")
        if not value.is_floating_point():
            raise UsageError(f"{path}: {key} holds {value.dtype} values, not floating point; it is not a BERT weight")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()}, strict=False)
    if fresh:
        heads = sorted({k.rsplit(".", 2)[0] if k.startswith("bert.pooler") else ".".join(k.split(".")[:2]) for k in fresh})
        console.print(f"init_from {path}: {', '.join(heads)} not in the checkpoint, initialised fresh "
                      f"({len(fresh)} tensors)")
