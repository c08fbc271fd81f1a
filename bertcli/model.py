"""BERT for pretraining (post-LN, as in the paper), in one file.

Module names are Hugging Face's, so `state_dict()` keys *are* `BertForPreTraining`'s
(bert.embeddings.word_embeddings.weight, bert.encoder.layer.0.attention.self.query.weight, ...,
cls.predictions.bias, cls.seq_relationship.weight) and export is a pass-through. The decoder of
the masked-LM head is tied to the word embeddings and not stored.

Two things differ from HF's code, neither in the numbers: attention runs through
`scaled_dot_product_attention` (flash / memory-efficient kernels where available), and the
masked-LM head runs only at the masked positions (as Google's and NVIDIA's code do), which saves
the head's work at the other ~85% of positions. `Speed` holds further implementation choices
(the `system.*` settings): each changes float rounding or which dropout masks are drawn, never
what is computed. Left out on purpose: head masks, cross-attention, caches, return_dict —
pretraining needs none of them.

`sentence_task=False` (the mlm objective) builds the model without the pooler and the
two-way head, so its keys are exactly `BertForMaskedLM`'s and nothing is trained that no loss reaches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bertcli.limits import is_int, is_number

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # exact erf form (HF "gelu")
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # Google's tanh approximation
    "relu": F.relu,
}
IGNORE_INDEX = -100


def _hp(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class BertConfig:
    """HF BertConfig's names; vocab_size and pad_token_id come from the data, never the YAML.

    The config's `model:` section is these fields (config.py derives it from this class), each
    help text doubling as the config's documentation.
    """

    vocab_size: int
    hidden_size: int = _hp(768, "width of every layer")
    num_hidden_layers: int = _hp(12, "encoder layers")
    num_attention_heads: int = _hp(12, "attention heads per layer (must divide hidden_size)")
    intermediate_size: int = _hp(3072, "width of the feed-forward layer")
    max_position_embeddings: int = _hp(512, "longest sequence the model can take (>= the data's max_seq_length)")
    type_vocab_size: int = _hp(2, "segment types (2: A and B)")
    hidden_dropout_prob: float = _hp(0.1, "dropout on embeddings and sublayer outputs")
    attention_probs_dropout_prob: float = _hp(0.1, "dropout on attention probabilities")
    hidden_act: Literal["gelu", "gelu_new", "relu"] = _hp("gelu", "gelu (exact, HF's), gelu_new (tanh approximation, "
                                                                  "Google's) or relu")
    initializer_range: float = _hp(0.02, "std of the normal initialisation of weights")
    layer_norm_eps: float = _hp(1e-12, "LayerNorm epsilon")
    pad_token_id: int = 0


DATA_FIELDS = ("vocab_size", "pad_token_id")  # set from the data, not from the config


# Bounds no real BERT comes near (BERT-large: 1024 wide, 24 layers, 30k vocab); a config past them is
# a mistake or a crafted file, refused before anything is allocated.
LIMITS = {"vocab_size": (1, 2**20), "hidden_size": (1, 8192), "num_hidden_layers": (1, 128), "num_attention_heads": (1, 128),
          "intermediate_size": (1, 65536), "max_position_embeddings": (1, 65536), "type_vocab_size": (1, 64),
          "pad_token_id": (0, 2**20 - 1)}
MAX_PARAMETERS = 2**31  # six times BERT-large: a config past it is a mistake, refused before allocating


def config_problems(values: dict) -> list[str]:
    """What is wrong with a BertConfig's values (given as a dict), each naming its field."""
    p = []
    for name, (low, high) in LIMITS.items():
        v = values.get(name, low)  # an absent field is not checked here
        if not is_int(v) or not low <= v <= high:
            p.append(f"{name} must be an integer in [{low}, {high}], got {str(v)[:40]!r}")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        v = values.get(name, 0.0)
        if not is_number(v) or not 0.0 <= v < 1.0:
            p.append(f"{name} must be a number in [0, 1), got {str(v)[:40]!r}")
    for name, low in (("initializer_range", 0.0), ("layer_norm_eps", 1e-30)):
        v = values.get(name, 1.0)
        if not is_number(v) or not (low <= v <= 1.0):
            p.append(f"{name} must be a number in [{low:g}, 1], got {str(v)[:40]!r}")
    act = values.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in ACTIVATIONS:
        p.append(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, got {str(values.get('hidden_act'))[:40]!r}")
    heads, hidden = values.get("num_attention_heads"), values.get("hidden_size")
    if not p and isinstance(heads, int) and isinstance(hidden, int) and hidden % heads:
        p.append(f"num_attention_heads ({heads}) must divide hidden_size ({hidden})")
    if not p and "vocab_size" in values and values.get("pad_token_id", 0) >= values["vocab_size"]:
        p.append(f"pad_token_id ({values['pad_token_id']}) must be below vocab_size ({values['vocab_size']})")
    if not p and (n := approximate_parameters(values)) > MAX_PARAMETERS:
        p.append(f"the model would have about {n / 1e9:.1f} billion parameters, more than bertcli builds "
                 f"({MAX_PARAMETERS / 1e9:.1f} billion; BERT-large has 0.34): make it smaller")
    return p


def approximate_parameters(values: dict) -> int:
    """Parameters of a config (dict of BertConfig fields, defaults for those absent), to within biases."""
    v = {f.name: f.default for f in fields(BertConfig) if f.name != "vocab_size"} | {"vocab_size": 30522} | values
    h, i = v["hidden_size"], v["intermediate_size"]
    embeddings = (v["vocab_size"] + v["max_position_embeddings"] + v["type_vocab_size"]) * h
    return embeddings + v["num_hidden_layers"] * (4 * h * h + 2 * h * i) + h * h


@dataclass
class Speed:
    """How the model computes, not what: the `system.*` speed settings (see config.py)."""

    sparse_last_layer: bool = False  # run the last layer only at [CLS] and the masked positions
    fast_dropout: bool = False  # on CPU, draw dropout masks from numpy's SFC64 instead of torch's bernoulli
    pad_vocab_multiple: int = 1  # widen the decoder matmul to a multiple of this (parameters keep the real size)


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """1/(1-p) where an element is kept, 0 where dropped, from 16 random bits per element.

    torch's CPU bernoulli costs ~6 ns an element (8% of the 4-layer benchmark model's step);
    SFC64 gives four 16-bit draws per 64-bit word, ~0.6 ns an element with the comparison. p is
    rounded to k/65536 (0.1 → 0.1000061) and the scale uses the rounded p, so the expected
    activation is exactly unchanged. The seed comes from torch's generator, so torch.manual_seed
    still decides every mask.
    """
    n = shape.numel()
    seed = torch.randint(2**62, ()).numpy().item()  # a CPU tensor's numpy view: not a device read
    bits = torch.from_numpy(np.random.SFC64(seed).random_raw(-(-n // 4)).view(np.int16)[:n]).view(shape)
    dropped = round(p * 65536)  # an int16 draw below dropped - 32768 drops: probability dropped / 65536
    mask = torch.ge(bits, dropped - 32768, out=torch.empty(shape, dtype=dtype))
    return mask.mul_(65536 / (65536 - dropped))


def dropout(x: torch.Tensor, p: float, training: bool, fast: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if fast and x.device.type == "cpu" and not torch.compiler.is_compiling():
        # (under torch.compile the compiler draws its own masks inside its fused kernels)
        return x * keep_mask(x.shape, p, x.dtype)  # autograd keeps only the mask for the backward
    return F.dropout(x, p, True)


class Dropout(nn.Module):
    """nn.Dropout with the choice of mask generator (Speed.fast_dropout); no parameters, no keys."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.fast = p, False

    def forward(self, x):
        return dropout(x, self.p, self.training, self.fast)


def attention(q, k, v, attn_mask, dropout_p: float, fast_dropout: bool) -> torch.Tensor:
    """softmax(q·kᵀ/√hs + mask) · v with dropout on the probabilities; q (B, nh, K, hs), k, v (B, nh, T, hs)."""
    if not (dropout_p and fast_dropout and q.device.type == "cpu") or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    # With dropout, SDPA on the CPU takes this same unfused path; written out, it can use keep_mask.
    scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)  # (B, nh, K, T)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return dropout(scores.softmax(-1), dropout_p, True, True) @ v  # (B, nh, K, hs)


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        T = input_ids.size(1)
        positions = torch.arange(T, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.num_heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout_p = c.attention_probs_dropout_prob
        self.fast_dropout = False

    def forward(self, x, attn_mask, rows):
        """Keys and values from every position of x (B, T, C); queries only from rows (B, K, C)."""
        B, T, C = x.shape
        K, nh = rows.size(1), self.num_heads
        q = self.query(rows).view(B, K, nh, C // nh).transpose(1, 2)  # (B, nh, K, hs)
        k, v = (proj(x).view(B, T, nh, C // nh).transpose(1, 2) for proj in (self.key, self.value))  # (B, nh, T, hs)
        # scale 1/sqrt(hs); attn_mask (B, 1, 1, T) hides padded keys (None: there are none)
        y = attention(q, k, v, attn_mask, self.dropout_p if self.training else 0.0, self.fast_dropout)
        return y.transpose(1, 2).reshape(B, K, C)  # (B, K, C)


class BertSelfOutput(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(c)  # the name is HF's key: attention.self.query...
        self.output = BertSelfOutput(c)

    def forward(self, x, attn_mask, rows):
        return self.output(self.self(x, attn_mask, rows), rows)


class BertIntermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class BertOutput(BertSelfOutput):
    def __init__(self, c: BertConfig):
        super().__init__(c)
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, x, attn_mask, positions=None):
        """positions (B, K): compute the output only at these rows (every row attends to all of x)."""
        rows = x if positions is None else _gather_rows(x, positions)
        x = self.attention(x, attn_mask, rows)
        return self.output(self.intermediate(x), x)


def _gather_rows(h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """h (B, T, C), positions (B, K) → (B, K, C)."""
    return torch.gather(h, 1, positions.unsqueeze(-1).expand(*positions.shape, h.size(-1)))


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x, attn_mask, last_positions=None):
        for i, layer in enumerate(self.layer):
            x = layer(x, attn_mask, last_positions if i == len(self.layer) - 1 else None)
        return x


class BertPooler(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))  # the [CLS] position


class BertModel(nn.Module):
    def __init__(self, c: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c) if add_pooling_layer else None

    def forward(self, input_ids, token_type_ids, attention_mask=None, output_positions=None):
        """attention_mask None: no padding. output_positions (B, K), [CLS] first: h only there, (B, K, C)."""
        # bool (B, 1, 1, T): True where a key may be attended to
        attn_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        h = self.encoder(self.embeddings(input_ids, token_type_ids), attn_mask, output_positions)
        return h, None if self.pooler is None else self.pooler(h)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = ACTIVATIONS[c.hidden_act]
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(c)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))  # decoder weight: tied to word embeddings

    def forward(self, x, word_embeddings: torch.Tensor, pad_vocab_multiple: int = 1):
        return tied_decoder(self.transform(x), word_embeddings, self.bias, pad_vocab_multiple)


def tied_decoder(x, word_embeddings: torch.Tensor, bias: torch.Tensor | None, pad_vocab_multiple: int = 1):
    """(N, V + pad) logits of a decoder tied to the word embeddings; the pad columns are -inf, so
    softmax, loss and argmax ignore them. Shared by every architecture's masked-LM head."""
    pad = -word_embeddings.size(0) % pad_vocab_multiple
    weight = word_embeddings
    if pad:  # tensor cores want widths in multiples of 64; MKL too (30522 → 30528: 7% faster)
        weight = F.pad(word_embeddings, (0, 0, 0, pad))
        if bias is None:
            bias = word_embeddings.new_zeros(word_embeddings.size(0))
        bias = F.pad(bias, (0, pad), value=float("-inf"))
    return F.linear(x, weight, bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, c: BertConfig, sentence_task: bool = True):
        super().__init__()
        self.predictions = BertLMPredictionHead(c)
        # NSP or SOP: the same two-way classifier on the pooled [CLS]
        self.seq_relationship = nn.Linear(c.hidden_size, 2) if sentence_task else None


@dataclass
class PretrainingOutput:
    mlm_logits: torch.Tensor  # (N, V) at the N gathered positions
    nsp_logits: torch.Tensor | None  # (B, 2); None without a sentence task
    mlm_loss_sum: torch.Tensor | None = None  # summed over real masked positions
    nsp_loss_sum: torch.Tensor | None = None  # summed over examples
    mlm_correct: torch.Tensor | None = None
    nsp_correct: torch.Tensor | None = None
    masked_count: torch.Tensor | None = None


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) weights, zero biases and padding row, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_fast_dropout(model: nn.Module, fast: bool) -> None:
    """Every Dropout, and every attention module's dropout of probabilities (any architecture's)."""
    for m in model.modules():
        if isinstance(m, Dropout):
            m.fast = fast
        elif hasattr(m, "fast_dropout"):
            m.fast_dropout = fast


class BertForPreTraining(nn.Module):
    def __init__(self, config: BertConfig, speed: Speed | None = None, sentence_task: bool = True):
        super().__init__()
        self.config = config
        self.sentence_task = sentence_task
        self.bert = BertModel(config, add_pooling_layer=sentence_task)
        self.cls = BertPreTrainingHeads(config, sentence_task)
        self.apply(self._init_weights)
        self.set_speed(speed or Speed())

    def set_speed(self, speed: Speed) -> None:
        self.speed = speed
        set_fast_dropout(self, speed.fast_dropout)

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config.initializer_range)

    def forward(self, input_ids, token_type_ids, attention_mask, masked_positions, masked_labels=None,
                next_sentence_labels=None) -> PretrainingOutput:
        """masked_positions/masked_labels: (B, P), label -100 in padding slots; the MLM head sees B*P rows.

        attention_mask may be None when no sequence is padded (then flash attention can run).
        """
        B, P = masked_positions.shape
        if self.speed.sparse_last_layer:
            # The heads read the last layer only at [CLS] and the masked positions: compute nothing else.
            cls_and_masked = F.pad(masked_positions, (1, 0))  # (B, 1 + P), [CLS] = position 0 first
            h, pooled = self.bert(input_ids, token_type_ids, attention_mask, cls_and_masked)
            gathered = h[:, 1:]  # (B, P, C)
        else:
            h, pooled = self.bert(input_ids, token_type_ids, attention_mask)  # (B, T, C), (B, C)
            gathered = _gather_rows(h, masked_positions)  # (B, P, C)
        word_embeddings = self.bert.embeddings.word_embeddings.weight
        logits = self.cls.predictions(gathered.reshape(B * P, -1), word_embeddings, self.speed.pad_vocab_multiple)
        nsp_logits = self.cls.seq_relationship(pooled) if self.sentence_task else None
        out = masked_lm_output(logits, masked_labels, self.config.vocab_size)
        out.nsp_logits = nsp_logits
        if next_sentence_labels is not None and self.sentence_task:
            out.nsp_loss_sum = F.cross_entropy(nsp_logits.float(), next_sentence_labels, reduction="sum")
            out.nsp_correct = (nsp_logits.argmax(-1) == next_sentence_labels).sum()
        return out


class BertForSequenceClassification(nn.Module):
    """BERT's fine-tuning classifier: pooled [CLS] → dropout → linear, with HF's keys (bert.*, classifier.*).

    num_labels 1 is regression (HF's convention). The last encoder layer runs only at [CLS], the
    one row the pooler reads (Speed.sparse_last_layer's idea, always on here: the logits are the same).
    """

    def __init__(self, config: BertConfig, num_labels: int, classifier_dropout: float | None = None,
                 fast_dropout: bool = False):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(lambda m: init_weights(m, config.initializer_range))
        set_fast_dropout(self, fast_dropout)

    def forward(self, input_ids, token_type_ids, attention_mask=None) -> torch.Tensor:
        """(B, num_labels) logits; attention_mask None: no padding."""
        cls_only = input_ids.new_zeros(input_ids.size(0), 1)  # (B, 1): position 0 of every sequence
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask, cls_only)  # pooled (B, C)
        return self.classifier(self.dropout(pooled))


def masked_lm_output(logits: torch.Tensor, masked_labels: torch.Tensor | None, vocab_size: int) -> PretrainingOutput:
    """The masked-LM half of the output, from the (B*P, V + pad) logits at the gathered positions:
    the loss summed over real masked positions (normalised by the trainer), accuracy and count."""
    out = PretrainingOutput(logits[:, :vocab_size], None)
    if masked_labels is not None:
        labels = masked_labels.reshape(-1)
        real = labels != IGNORE_INDEX
        out.mlm_loss_sum = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
        out.mlm_correct = ((logits.argmax(-1) == labels) & real).sum()
        out.masked_count = real.sum()
    return out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
