"""Any model bertcli loads, as the start of a classifier: its config, its tokenizer, its encoder weights.

Sources, told apart as weights.py tells them apart:
- a bertcli checkpoint or run directory (its latest checkpoint): `trainer_state.json`'s model
  config, the tokenizer the checkpoint carries;
- a bertcli export, or a fine-tuned model bertcli wrote: `config.json`, `model.safetensors` and
  the bertcli tokenizer in `tokenizer/`;
- a published Hugging Face BERT directory: `config.json`, weights, and its WordPiece tokenizer
  (`tokenizer.json` / `vocab.txt`), adopted as `bertcli tokenize --from` adopts it.

Only the encoder (`bert.*`) is kept. The pretraining heads (`cls.*`: masked-LM and next
sentence) are dropped; an mlm model has no pooler, which then starts fresh (said in one line);
a classifier the source already has is kept when it has the same labels, else started fresh.
The tokenizer must fit the model: its ids inside the embedding table, its [PAD] the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from bertcli.errors import BertcliError, UsageError
from bertcli.model import BertConfig, BertForSequenceClassification, config_problems

POOLER = "bert.pooler."
CLASSIFIER = "classifier."


@dataclass
class ModelSpec:
    """What a fine-tuning run starts from (see load_model_for_finetune)."""

    path: Path
    kind: str  # "checkpoint", "export" or "published"
    config: BertConfig
    tokenizer: object  # a bertcli Tokenizer
    weights: dict[str, torch.Tensor]  # bert.* (and classifier.* when the source has one), HF names
    notes: list[str] = field(default_factory=list)  # one line each: what was dropped or starts fresh
    id2label: dict[int, str] | None = None  # the source's own classifier labels, if it has a classifier

    @property
    def has_pooler(self) -> bool:
        return any(k.startswith(POOLER) for k in self.weights)


def _hf_bert_config(path: Path) -> tuple[BertConfig, dict]:
    from bertcli.weights import read_hf_config

    hf = read_hf_config(path)
    defaults = {f.name: f.default for f in fields(BertConfig) if f.name != "vocab_size"}
    values = {name: hf.get(name, default) for name, default in defaults.items()}
    values["vocab_size"] = hf.get("vocab_size")
    if values["pad_token_id"] is None:
        values["pad_token_id"] = 0
    problems = config_problems(values)
    if problems:
        raise UsageError(f"{path / 'config.json'}: {problems[0]}; it is not a BERT bertcli can build")
    return BertConfig(**values), hf


def _published_tokenizer(path: Path):
    from bertcli.tokenizer import ARTIFACT_DIR, load
    from bertcli.tokenizer.wordpiece import WordPieceTokenizer, read_published

    if (path / ARTIFACT_DIR).is_dir():
        return load(path / ARTIFACT_DIR), "export"
    if not any((path / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        raise UsageError(f"{path} has no tokenizer (tokenizer.json, vocab.txt or a bertcli tokenizer/); "
                         "fine-tuning needs the model's own tokenizer: copy it into the directory")
    from bertcli.tokenizer.training import is_other_hf_tokenizer

    if is_other_hf_tokenizer(path):  # ModernBERT's byte-level BPE, and any other non-WordPiece tokenizer.json
        from bertcli.tokenizer.adopted import AdoptedTokenizer

        return AdoptedTokenizer.from_published(path), "published"
    lowercase = None if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file() else True
    vocab, options = read_published(path, lowercase)
    return WordPieceTokenizer(vocab, options, {"adopted_from": str(path.resolve())}), "published"


def load_model_for_finetune(path: Path) -> ModelSpec:
    """The config, tokenizer and encoder weights of a checkpoint, run directory, export or HF BERT directory.

    Errors (UsageError/DataError, one line) for anything that is not a loadable BERT or whose
    tokenizer does not fit it. Nothing is written.
    """
    from bertcli.architectures import config_from_dict
    from bertcli.weights import is_published_dir, published_model_type, read_weights

    path = Path(path)
    if not path.exists():
        raise UsageError(f"--model {path} does not exist; give a bertcli checkpoint, run directory, export or a "
                         "Hugging Face BERT directory")
    notes = []
    id2label = None
    try:
        if is_published_dir(path):
            config, hf = (_hf_modernbert_config if published_model_type(path) == "modernbert" else _hf_bert_config)(path)
            tokenizer, kind = _published_tokenizer(path)
            if isinstance(hf.get("id2label"), dict) and any(a.endswith("SequenceClassification") for a in hf.get("architectures") or []):
                id2label = {int(k): str(v) for k, v in hf["id2label"].items() if str(k).isdigit()}
        else:
            from bertcli.artifacts import checkpoint_tokenizer
            from bertcli.checkpoint import read_state, resolve_checkpoint

            ckpt = resolve_checkpoint(path)
            state = read_state(ckpt)
            config, kind = config_from_dict(state["model_config"]), "checkpoint"
            tokenizer = checkpoint_tokenizer(ckpt, state)
        raw = read_weights(path)
        classifier = {k: v for k, v in raw.items() if k.startswith(CLASSIFIER)}  # a fine-tuned model's head
        weights = {**_normalize(config)({k: v for k, v in raw.items() if k not in classifier}, path), **classifier}
    except BertcliError as e:
        if isinstance(e, UsageError):
            raise
        raise UsageError(f"--model {path}: cannot load it ({e})") from None
    _check_tokenizer(path, config, tokenizer, kind)
    if _is_modernbert(config):
        kept, more = _modernbert_encoder(path, weights)
        return ModelSpec(path, kind, config, tokenizer, kept, notes + more, id2label)
    heads = sorted({k.split(".")[1] for k in weights if k.startswith("cls.")})
    if heads:
        notes.append(f"{path}: pretraining heads dropped ({', '.join('cls.' + h for h in heads)})")
    kept = {k: v for k, v in weights.items() if k.startswith(("bert.", CLASSIFIER))}
    if not any(k.startswith(POOLER) for k in kept):
        notes.append(f"{path} has no pooler (an mlm model): bert.pooler initialised fresh")
    return ModelSpec(path, kind, config, tokenizer, kept, notes, id2label)


def _check_tokenizer(path: Path, config: BertConfig, tokenizer, kind: str) -> None:
    """The tokenizer must address the model's embeddings: same size (bertcli artifacts), no id past the table."""
    size = tokenizer.vocab_size
    if size > config.vocab_size or (kind != "published" and size != config.vocab_size):
        raise UsageError(f"--model {path}: its tokenizer has {size} pieces but the model's vocab_size is "
                         f"{config.vocab_size}; the tokenizer does not belong to this model")
    if tokenizer.pad_id != config.pad_token_id:
        raise UsageError(f"--model {path}: its tokenizer has [PAD]={tokenizer.pad_id} but the model's pad_token_id is "
                         f"{config.pad_token_id}; the tokenizer does not belong to this model")


def build_classifier(spec: ModelSpec, num_labels: int, classifier_dropout: float | None = None,
                     init: str = "pretrained", fast_dropout: bool = False) -> tuple[BertForSequenceClassification, list[str]]:
    """The classifier with the source's encoder weights (init "pretrained") or none (init "random").

    Call under the seed of the initialisation stream: what starts fresh is drawn from torch's generator.
    Returns the model and what was said about it (one line each).
    """
    model = _classifier_class(spec.config)(spec.config, num_labels, classifier_dropout, fast_dropout)
    if init == "random":
        return model, [f"--init random: the {spec.config.num_hidden_layers}-layer model of {spec.path} from a random "
                       "initialisation (its weights unused)"]
    own = model.state_dict()
    weights = dict(spec.weights)
    notes = list(spec.notes)
    classifier = {k: v for k, v in weights.items() if k.startswith(CLASSIFIER)}
    if classifier and any(classifier.get(k) is None or classifier[k].shape != own[k].shape for k in own if k.startswith(CLASSIFIER)):
        notes.append(f"{spec.path}: its classifier has other labels; classifier initialised fresh")
        weights = {k: v for k, v in weights.items() if not k.startswith(CLASSIFIER)}
    elif not classifier:
        pass  # the usual case: a pretrained encoder, a new classifier
    fresh = (MODERNBERT_HEAD, CLASSIFIER) if _is_modernbert(spec.config) else (POOLER, CLASSIFIER)
    missing = [k for k in own if k not in weights and not k.startswith(fresh)]
    unexpected = [k for k in weights if k not in own]
    if missing or unexpected:
        raise UsageError(f"--model {spec.path}: weights do not fit its config (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}); is it a BERT?")
    for key, value in weights.items():
        if value.shape != own[key].shape or not value.is_floating_point():
            raise UsageError(f"--model {spec.path}: {key} has shape {tuple(value.shape)} ({value.dtype}), the config "
                             f"needs {tuple(own[key].shape)}; the weights and config.json do not belong together")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()}, strict=False)
    return model, notes


# --- ModernBERT: the same steps for a model.architecture modernbert source ----------------------------

MODERNBERT_HEAD = "head."  # the masked-LM model's dense + norm, which the classifier reuses (as transformers does)


def _is_modernbert(config) -> bool:
    return getattr(config, "architecture", "bert") == "modernbert"


def _normalize(config):
    from bertcli.weights import normalize_keys, normalize_modernbert_keys

    return normalize_modernbert_keys if _is_modernbert(config) else normalize_keys


def _classifier_class(config) -> type:
    if _is_modernbert(config):
        from bertcli.modernbert import ModernBertForSequenceClassification

        return ModernBertForSequenceClassification
    return BertForSequenceClassification


def _hf_modernbert_config(path: Path):
    """A transformers ModernBERT directory's config, validated as train.init_from validates it."""
    from bertcli.modernbert import ModernBertConfig
    from bertcli.weights import modernbert_hf_values, read_config_json

    hf = read_config_json(path / "config.json")  # bounded in size and depth, no NaN
    values = modernbert_hf_values(hf, path)
    if values["pad_token_id"] is None:
        values["pad_token_id"] = 0
    return ModernBertConfig(vocab_size=hf.get("vocab_size"), **values), hf


def _modernbert_encoder(path: Path, weights: dict) -> tuple[dict, list[str]]:
    """The encoder (model.*), the prediction head (head.*) and a classifier; the decoder's bias dropped."""
    notes = []
    if any(k.startswith("decoder.") for k in weights):
        notes.append(f"{path}: masked-LM decoder dropped (decoder.bias)")
    kept = {k: v for k, v in weights.items() if k.startswith(("model.", MODERNBERT_HEAD, CLASSIFIER))}
    if not any(k.startswith(MODERNBERT_HEAD) for k in kept):
        notes.append(f"{path} has no prediction head (a bare ModernBertModel): head initialised fresh")
    return kept, notes
