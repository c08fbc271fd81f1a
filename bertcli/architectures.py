"""`model.architecture`: which model file builds the model, and which config class describes it.

One entry per architecture — `bert` (model.py, the default) and `modernbert` (modernbert.py) —
each a config dataclass, its validation and its pretraining model, all with the same forward
contract. The rest of bertcli asks here instead of naming a model class, so a checkpoint's
`model_config` (which carries `architecture` for every model but BERT, whose configs predate the
key) rebuilds the right model. This module holds no model code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch.nn as nn

from bertcli import model, modernbert


@dataclass(frozen=True)
class Architecture:
    name: str
    config_class: type
    model_class: type
    config_problems: object  # dict → list[str]
    sentence_task: bool  # whether the architecture has a sentence (nsp/sop) head


ARCHITECTURES = {
    "bert": Architecture("bert", model.BertConfig, model.BertForPreTraining, model.config_problems, True),
    "modernbert": Architecture("modernbert", modernbert.ModernBertConfig, modernbert.ModernBertForMaskedLM,
                               modernbert.config_problems, False),
}
DATA_FIELDS = ("vocab_size", "pad_token_id")  # set from the data, never from the YAML


def of(values: dict) -> Architecture:
    """The architecture a model config (dict) describes; BERT's configs have no `architecture` key."""
    name = values.get("architecture", "bert")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {str(name)[:40]!r}")
    return ARCHITECTURES[name]


def config_problems(values: dict) -> list[str]:
    """What is wrong with a model config given as a dict: unknown or missing keys, then values."""
    name = values.get("architecture", "bert")
    if name not in ARCHITECTURES:
        return [f"architecture must be one of {', '.join(ARCHITECTURES)}, got {str(name)[:40]!r}"]
    arch = ARCHITECTURES[name]
    names = {f.name for f in fields(arch.config_class)} | {"architecture"}
    given = set(values) | {"architecture"}
    if given != names:
        extra, missing = sorted(given - names), sorted(names - given)
        return [f"keys differ from a {name} config (unknown {extra[:3]}, missing {missing[:3]})"]
    return arch.config_problems(values)


def make_config(section: dict, vocab_size: int, pad_token_id: int):
    """The model's config from the YAML's model section (a dict with `architecture`) and the data."""
    arch = of(section)
    values = {k: v for k, v in section.items() if k != "architecture" or arch.name != "bert"}
    return arch.config_class(vocab_size=vocab_size, pad_token_id=pad_token_id, **values)


def config_from_dict(values: dict):
    """A checkpoint's model_config (validated by config_problems) back into its dataclass."""
    arch = of(values)
    return arch.config_class(**{k: v for k, v in values.items() if k != "architecture" or arch.name != "bert"})


def name_of(config) -> str:
    return getattr(config, "architecture", "bert")


def build_model(config, speed: model.Speed | None = None, sentence_task: bool = True) -> nn.Module:
    """The pretraining model of a config's architecture (sentence_task False: masked-LM only)."""
    return ARCHITECTURES[name_of(config)].model_class(config, speed, sentence_task)
