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

A transformers ModernBERT directory (`model_type: modernbert`) is read the same way by the
functions at the end of this file: its config.json (both the layer_types/rope_parameters of
transformers >= 5 and the older global_attn_every_n_layers/*_rope_theta keys) gives a
modernbert.ModernBertConfig, and its tokenizer.json, vocabulary and special ids must be the data's.
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
from bertcli.errors import BertcliError, DataError, UsageError
from bertcli.architectures import make_config, name_of
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
    config = read_config_json(config_path)
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


def read_config_json(config_path: Path) -> dict:
    """A config.json as a dict: bounded in size and depth (read_json), no NaN or Infinity anywhere."""
    config = read_json(config_path, "model config", max_bytes=1 << 20)
    if (where := _non_finite(config)) is not None:
        raise UsageError(f"{config_path}: {shown(where, 80)} is NaN or Infinity, which JSON does not allow and no "
                         "model config holds; fix config.json")
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
        return make_config(section, vocab_size, pad)
    path = Path(init_from)
    if published_model_type(path) == "modernbert" or section["architecture"] == "modernbert":
        return modernbert_config(path, section, vocab_size, tokenizer)
    hf = read_hf_config(path)
    section.pop("architecture")
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
    modern = name_of(model.config) == "modernbert"
    weights = (normalize_modernbert_keys if modern else normalize_keys)(read_weights(path), path)
    heads = MODERNBERT_HEADS if modern else HEADS
    own = model.state_dict()
    weights = {k: v for k, v in weights.items() if k in own or not k.startswith(SENTENCE_HEAD)}
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    fresh = [k for k in missing if (published and k.startswith(heads)) or k.startswith(SENTENCE_HEAD)]
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
        names = sorted({k.rsplit(".", 2)[0] if k.startswith("bert.pooler") else ".".join(k.split(".")[:2]) for k in fresh})
        console.print(f"init_from {path}: {', '.join(names)} not in the checkpoint, initialised fresh "
                      f"({len(fresh)} tensors)")


# --- ModernBERT: a transformers ModernBertForMaskedLM / ModernBertModel directory ------------------

MODERNBERT_HEADS = ("head.", "decoder.")  # a bare ModernBertModel has neither: initialised fresh
MODERNBERT_SHAPE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_activation",
                    "norm_eps", "norm_bias", "layer_types", "local_attention", "global_rope_theta", "local_rope_theta",
                    "attention_bias", "mlp_bias", "decoder_bias", "classifier_activation", "classifier_bias",
                    "max_position_embeddings")
MODERNBERT_SPECIALS = (("pad_token_id", "pad"), ("cls_token_id", "cls"), ("sep_token_id", "sep"))


def published_model_type(path: Path) -> str | None:
    """config.json's model_type, or None when it is unreadable (read_hf_config then says why)."""
    try:
        config = read_config_json(Path(path) / CONFIG_FILE)
    except BertcliError:
        return None
    return config.get("model_type")


def _rope_theta(hf: dict, kind: str, legacy: str, default: float, where: Path) -> float:
    """A layer kind's rotary base: transformers >= 5's rope_parameters, or the older <kind>_rope_theta keys."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and isinstance(params.get(kind), dict):
        rope = params[kind]
        if rope.get("rope_type", "default") != "default":
            raise UsageError(f"{where}: rope_parameters.{kind}.rope_type {str(rope.get('rope_type'))[:40]!r}; bertcli's "
                             "ModernBERT has the default rotary embedding only")
        if "rope_theta" in rope:
            return rope["rope_theta"]
    value = hf.get(legacy)
    if value is None and legacy == "local_rope_theta":  # transformers: no local theta means the global one
        return _rope_theta(hf, "full_attention", "global_rope_theta", default, where)
    return default if value is None else value


def modernbert_hf_values(hf: dict, where: Path) -> dict:
    """ModernBertConfig's values (bertcli's fields) from a transformers config.json, validated."""
    from bertcli.modernbert import ModernBertConfig, config_problems

    defaults = {f.name: f.default for f in fields(ModernBertConfig) if f.name not in ("vocab_size", "architecture")}
    values = {name: hf.get(name, default) for name, default in defaults.items()}
    values["pad_token_id"] = hf.get("pad_token_id", 0)
    every = hf.get("global_attn_every_n_layers", 3)
    values["global_attn_every_n_layers"] = every
    if hf.get("layer_types") is None and isinstance(every, int) and every >= 1 and isinstance(values["num_hidden_layers"], int):
        values["layer_types"] = ["sliding_attention" if i % every else "full_attention"
                                 for i in range(values["num_hidden_layers"])]
    values["global_rope_theta"] = _rope_theta(hf, "full_attention", "global_rope_theta", 160000.0, where)
    values["local_rope_theta"] = _rope_theta(hf, "sliding_attention", "local_rope_theta", 10000.0, where)
    problems = config_problems({**values, "vocab_size": hf.get("vocab_size")})
    if problems:
        raise UsageError(f"{where}: {problems[0]}; it is not a ModernBERT config bertcli can continue")
    return values


def modernbert_config(path: Path, section: dict, vocab_size: int, tokenizer):
    """The model for a published ModernBERT init_from: its config.json decides the shape.

    A model: value that contradicts config.json is an error (as for BERT); the dropouts and the
    initialisation are training choices the YAML may change.
    """
    from bertcli.modernbert import ModernBertConfig

    config_path = path / CONFIG_FILE
    hf = read_config_json(config_path)
    if not isinstance(hf, dict) or hf.get("model_type") != "modernbert":
        got = hf.get("model_type") if isinstance(hf, dict) else None
        raise UsageError(f"{config_path}: model_type {str(got)[:40]!r} is not modernbert, but model.architecture is "
                         "modernbert; give a ModernBERT directory or set model.architecture: bert")
    values = modernbert_hf_values(hf, path)
    if section["architecture"] == "modernbert":
        defaults = {f.name: f.default for f in fields(ModernBertConfig)}
        for name, value in section.items():
            if name == "architecture" or value == defaults[name]:
                continue
            if name in MODERNBERT_SHAPE and value != values[name]:
                raise UsageError(f"model.{name} is {str(value)[:40]!r} but {config_path} says {str(values[name])[:40]!r}; "
                                 f"with train.init_from the model's shape comes from config.json: remove model.{name}")
            if name not in MODERNBERT_SHAPE:
                values[name] = value  # dropouts, initialisation: the YAML's
    else:  # a BERT model section: only untouched defaults can go with a ModernBERT
        from bertcli.config import ModelConfig

        changed = [f.name for f in fields(ModelConfig) if section.get(f.name, f.default) != f.default]
        if changed:
            raise UsageError(f"{config_path} is a ModernBERT but the config sets BERT's model.{changed[0]}; set "
                             "model.architecture: modernbert and use ModernBertConfig's keys (see docs/modernbert.md)")
    fix = f"make the data with the model's tokenizer (`bertcli tokenize --from {path}`)"
    if hf.get("vocab_size") != vocab_size:
        raise UsageError(f"{config_path} has vocab_size {hf.get('vocab_size')} but the data's tokenizer has {vocab_size}; {fix}")
    if tokenizer is not None:
        for key, name in MODERNBERT_SPECIALS:
            if hf.get(key) is not None and hf[key] != tokenizer.special_ids[name]:
                raise UsageError(f"{config_path} has {key} {hf[key]} but the data's tokenizer has "
                                 f"{name} id {tokenizer.special_ids[name]}; {fix}")
        check_adopted_tokenizer_matches(path, tokenizer)
    values["pad_token_id"] = tokenizer.pad_id if tokenizer is not None else values["pad_token_id"]
    return ModernBertConfig(vocab_size=vocab_size, **values)


def check_adopted_tokenizer_matches(path: Path, tokenizer) -> None:
    """The data's tokenizer must be the directory's tokenizer.json (same pieces at the same ids)."""
    from bertcli.tokenizer import ARTIFACT_DIR, load
    from bertcli.tokenizer.adopted import AdoptedTokenizer

    fix = f"make the data with the model's tokenizer (`bertcli tokenize --from {path}`)"
    if (path / ARTIFACT_DIR).is_dir():  # a bertcli export carries the tokenizer itself
        if load(path / ARTIFACT_DIR).sha256 != tokenizer.sha256:
            raise UsageError(f"{path}'s tokenizer is not the data's; {fix}")
        return
    if not (path / "tokenizer.json").is_file():
        return  # weights only: vocab size and special ids are all there is to compare
    published = AdoptedTokenizer.from_published(path)
    if published.vocab_size != tokenizer.vocab_size:
        raise UsageError(f"{path}'s tokenizer has {published.vocab_size} pieces but the data's has {tokenizer.vocab_size}; {fix}")
    for i, (theirs, ours) in enumerate(zip(published.vocab, tokenizer.vocab)):
        if theirs != ours:
            raise UsageError(f"{path}'s tokenizer has {theirs[:40]!r} at id {i} but the data's has {ours[:40]!r}; {fix}")
    if published.special_ids != tokenizer.special_ids:
        raise UsageError(f"{path}'s tokenizer has special ids {published.special_ids} but the data's "
                         f"{tokenizer.special_ids}; {fix}")


def normalize_modernbert_keys(weights: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """ModernBertModel keys (no `model.` prefix) → ModernBertForMaskedLM's; the tied decoder weight checked, dropped."""
    out = {k if k.startswith(("model.", "head.", "decoder.")) else "model." + k: v for k, v in weights.items()}
    decoder, embeddings = out.pop("decoder.weight", None), out.get("model.embeddings.tok_embeddings.weight")
    if decoder is not None and embeddings is not None and not torch.equal(decoder, embeddings):
        raise UsageError(f"{where}: decoder.weight differs from the token embeddings; bertcli ties them, as "
                         "ModernBERT does, and cannot continue an untied model")
    return out
