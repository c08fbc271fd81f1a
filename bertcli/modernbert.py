"""ModernBERT for masked-LM pretraining, in one file beside model.py's BERT.

ModernBERT (Warner et al. 2024, "Smarter, Better, Faster, Longer") is BERT's masked-LM objective
on a modernised encoder: pre-LayerNorm without biases, GeGLU feed-forward layers, rotary position
embeddings (no position table), alternating attention — global every `global_attn_every_n_layers`
layers, a `local_attention`-token sliding window in the others, each kind with its own rope theta —
a final norm, and a prediction head with its own dense + norm before the tied decoder.

Module names are transformers' `ModernBertForMaskedLM`'s, so `state_dict()` keys *are* its keys
(model.embeddings.tok_embeddings.weight, model.layers.0.attn.Wqkv.weight, ..., head.norm.weight,
decoder.bias) and export is a pass-through; the decoder's weight is the token embeddings and is
not stored. The config's field names and defaults are `ModernBertConfig`'s.

The forward contract is model.py's: (input_ids, token_type_ids, attention_mask, masked_positions,
masked_labels) → `PretrainingOutput`, with the masked-LM head run only at the masked positions
and the loss of model.py (`masked_lm_output`, `tied_decoder`). token_type_ids are accepted and
ignored: ModernBERT has no segment embeddings, and no sentence head (the objective is mlm).

Attention runs through `scaled_dot_product_attention` on padded (B, T) batches; the sliding window
is a boolean band mask built once per forward (`attention_masks`). That function and the
`attention` call in `ModernBertAttention.forward` are the only two places that know about padding:
an unpadded/varlen path (FlashAttention's cu_seqlens, as ModernBERT's own code does on a GPU) can
replace them without touching the recipe or the parameter names.
Left out on purpose: unpadding, inputs_embeds, hidden-state outputs, rope scaling variants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from bertcli.model import (ACTIVATIONS, Dropout, PretrainingOutput, Speed, _gather_rows, attention, masked_lm_output,
                           set_fast_dropout, tied_decoder)

LAYER_TYPES = ("full_attention", "sliding_attention")  # transformers' names for global and local layers


def _hp(default, help: str):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModernBertConfig:
    """transformers' ModernBertConfig names and defaults (ModernBERT-base's shape); vocab_size and
    pad_token_id come from the data. The config's `model:` section with `architecture: modernbert`."""

    vocab_size: int
    architecture: Literal["modernbert"] = _hp("modernbert", "bert (model.py) or modernbert (modernbert.py)")
    hidden_size: int = _hp(768, "width of every layer")
    intermediate_size: int = _hp(1152, "width of the GeGLU feed-forward layer (its input projection is twice this)")
    num_hidden_layers: int = _hp(22, "encoder layers")
    num_attention_heads: int = _hp(12, "attention heads per layer (must divide hidden_size; head size must be even)")
    hidden_activation: Literal["gelu", "gelu_new", "relu"] = _hp("gelu", "activation of the GeGLU gate: gelu (exact), "
                                                                          "gelu_new (tanh) or relu")
    max_position_embeddings: int = _hp(8192, "longest sequence the model is meant for (rotary: no position table)")
    initializer_range: float = _hp(0.02, "std of the truncated normal initialisation of weights")
    initializer_cutoff_factor: float = _hp(2.0, "truncate the initialisation at this many stds")
    norm_eps: float = _hp(1e-5, "LayerNorm epsilon")
    norm_bias: bool = _hp(False, "LayerNorms with a bias")
    global_attn_every_n_layers: int = _hp(3, "layer i attends globally when i % n == 0, else in the sliding window")
    layer_types: Optional[list[str]] = _hp(None, "per layer full_attention or sliding_attention "
                                                 "(null: from global_attn_every_n_layers)")
    local_attention: int = _hp(128, "sliding window width: a token sees local_attention // 2 tokens each side")
    global_rope_theta: float = _hp(160000.0, "rotary base of the global layers")
    local_rope_theta: float = _hp(10000.0, "rotary base of the sliding-window layers")
    attention_bias: bool = _hp(False, "biases in the attention projections")
    attention_dropout: float = _hp(0.0, "dropout on attention probabilities and on the attention output")
    embedding_dropout: float = _hp(0.0, "dropout after the embedding norm")
    mlp_bias: bool = _hp(False, "biases in the feed-forward layers")
    mlp_dropout: float = _hp(0.0, "dropout inside the feed-forward layer")
    decoder_bias: bool = _hp(True, "a bias on the masked-LM decoder")
    classifier_activation: Literal["gelu", "gelu_new", "relu"] = _hp("gelu", "activation of the prediction head")
    classifier_bias: bool = _hp(False, "a bias in the prediction head's dense layer")
    pad_token_id: int = 0

    def resolved_layer_types(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        return ["sliding_attention" if i % self.global_attn_every_n_layers else "full_attention"
                for i in range(self.num_hidden_layers)]


LIMITS = {"vocab_size": (1, 2**20), "hidden_size": (1, 8192), "num_hidden_layers": (1, 128), "num_attention_heads": (1, 128),
          "intermediate_size": (1, 65536), "max_position_embeddings": (1, 1 << 20), "global_attn_every_n_layers": (1, 128),
          "local_attention": (2, 1 << 20), "pad_token_id": (0, 2**20 - 1)}


def config_problems(values: dict) -> list[str]:
    """What is wrong with a ModernBertConfig's values (a dict), each naming its field."""
    p = []
    for name, (low, high) in LIMITS.items():
        v = values.get(name, low)
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            p.append(f"{name} must be an integer in [{low}, {high}], got {str(v)[:40]!r}")
    for name in ("attention_dropout", "embedding_dropout", "mlp_dropout"):
        v = values.get(name, 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v < 1.0:
            p.append(f"{name} must be a number in [0, 1), got {str(v)[:40]!r}")
    for name, low, high in (("initializer_range", 0.0, 1.0), ("norm_eps", 1e-30, 1.0), ("initializer_cutoff_factor", 0.0, 100.0),
                            ("global_rope_theta", 1.0, 1e12), ("local_rope_theta", 1.0, 1e12)):
        v = values.get(name, low)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (low <= v <= high):
            p.append(f"{name} must be a number in [{low:g}, {high:g}], got {str(v)[:40]!r}")
    for name in ("hidden_activation", "classifier_activation"):
        act = values.get(name, "gelu")
        if not isinstance(act, str) or act not in ACTIVATIONS:
            p.append(f"{name} must be one of {', '.join(ACTIVATIONS)}, got {str(act)[:40]!r}")
    for name in ("norm_bias", "attention_bias", "mlp_bias", "decoder_bias", "classifier_bias"):
        if not isinstance(values.get(name, False), bool):
            p.append(f"{name} must be true or false, got {str(values.get(name))[:40]!r}")
    types = values.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or any(t not in LAYER_TYPES for t in types):
            bad = next((t for t in types if t not in LAYER_TYPES), types) if isinstance(types, list) else types
            p.append(f"layer_types must be a list of {' or '.join(LAYER_TYPES)}, got {str(bad)[:40]!r}")
        elif len(types) != values.get("num_hidden_layers"):
            p.append(f"layer_types has {len(types)} entries but num_hidden_layers is {values.get('num_hidden_layers')}")
    heads, hidden = values.get("num_attention_heads"), values.get("hidden_size")
    if not p and hidden % heads:
        p.append(f"num_attention_heads ({heads}) must divide hidden_size ({hidden})")
    elif not p and (hidden // heads) % 2:
        p.append(f"the head size hidden_size / num_attention_heads ({hidden // heads}) must be even for rotary embeddings")
    if not p and "vocab_size" in values and values.get("pad_token_id", 0) >= values["vocab_size"]:
        p.append(f"pad_token_id ({values['pad_token_id']}) must be below vocab_size ({values['vocab_size']})")
    return p


# --- attention layout: the only code that knows the batch is padded -------------------------------

def attention_masks(attention_mask: torch.Tensor | None, T: int, window: int, device) -> dict[str, torch.Tensor | None]:
    """Boolean SDPA masks (True: may attend) per layer type, for padded (B, T) batches.

    full_attention: the padded keys hidden, (B, 1, 1, T), or None without padding (flash kernels).
    sliding_attention: |i - j| <= window // 2 (transformers' ModernBERT window), (1 or B, 1, T, T).
    Every query also sees itself, so a padding row whose window holds only padding stays finite
    (real rows see themselves anyway: no change to them).
    """
    pos = torch.arange(T, device=device)
    band = (pos[:, None] - pos[None, :]).abs() <= window // 2  # (T, T)
    if attention_mask is None:
        return {"full_attention": None, "sliding_attention": band[None, None]}
    keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)
    return {"full_attention": keys, "sliding_attention": (band & keys) | torch.eye(T, dtype=torch.bool, device=device)}


def _mask_rows(mask: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor | None:
    """The mask's query rows at positions (B, K): (B, 1, T, T) → (B, 1, K, T); key-only masks unchanged."""
    if mask is None or mask.size(2) == 1:
        return mask
    B, K = positions.shape
    T = mask.size(-1)
    return torch.gather(mask.expand(B, 1, T, T), 2, positions[:, None, :, None].expand(B, 1, K, T))


# --- rotary embeddings ----------------------------------------------------------------------------

class ModernBertRotaryEmbedding(nn.Module):
    """cos and sin of RoFormer's rotation per layer type (its own theta each); no parameters, no keys."""

    def __init__(self, c: ModernBertConfig):
        super().__init__()
        hs = c.hidden_size // c.num_attention_heads
        for kind, theta in (("full_attention", c.global_rope_theta), ("sliding_attention", c.local_rope_theta)):
            inv_freq = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.float) / hs))
            self.register_buffer(f"{kind}_inv_freq", inv_freq, persistent=False)

    def forward(self, T: int, device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for kind in LAYER_TYPES:
            freqs = torch.arange(T, device=device, dtype=torch.float)[:, None] * getattr(self, f"{kind}_inv_freq")
            emb = torch.cat((freqs, freqs), dim=-1)  # (T, hs): the half-split layout (rotate_half), transformers'
            out[kind] = (emb.cos(), emb.sin())
        return out


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hs) rotated by cos/sin (B or 1, 1, T, hs), in float32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


# --- the encoder ----------------------------------------------------------------------------------

def _norm(c: ModernBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(c.hidden_size, eps=c.norm_eps, bias=c.norm_bias)


class ModernBertEmbeddings(nn.Module):
    def __init__(self, c: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.norm = _norm(c)
        self.drop = Dropout(c.embedding_dropout)

    def forward(self, input_ids):
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class ModernBertAttention(nn.Module):
    def __init__(self, c: ModernBertConfig):
        super().__init__()
        self.num_heads = c.num_attention_heads
        self.Wqkv = nn.Linear(c.hidden_size, 3 * c.hidden_size, bias=c.attention_bias)
        self.Wo = nn.Linear(c.hidden_size, c.hidden_size, bias=c.attention_bias)
        self.dropout_p = c.attention_dropout
        self.out_drop = Dropout(c.attention_dropout)
        self.fast_dropout = False

    def forward(self, x, rows, mask, cos, sin, positions=None):
        """Keys and values from every position of x (B, T, C); queries from rows (B, K, C), at positions (B, K)."""
        B, T, C = x.shape
        K, nh = rows.size(1), self.num_heads
        if positions is None:
            q, k, v = self.Wqkv(x).view(B, T, 3, nh, C // nh).transpose(1, 3).unbind(2)  # each (B, nh, T, hs)
            q_cos, q_sin = cos, sin
        else:  # only the rows' queries: the query third of Wqkv on K rows, the rest on all T
            w, b = self.Wqkv.weight, self.Wqkv.bias
            q = F.linear(rows, w[:C], None if b is None else b[:C]).view(B, K, nh, C // nh).transpose(1, 2)
            kv = F.linear(x, w[C:], None if b is None else b[C:]).view(B, T, 2, nh, C // nh)
            k, v = kv.transpose(1, 3).unbind(2)  # each (B, nh, T, hs)
            q_cos, q_sin = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)  # (B, 1, K, hs)
        q, k = rotate(q, q_cos, q_sin), rotate(k, cos, sin)
        # scale 1/sqrt(hs); mask: padding and, in sliding layers, the window (attention_masks)
        y = attention(q, k, v, mask, self.dropout_p if self.training else 0.0, self.fast_dropout)  # (B, nh, K, hs)
        return self.out_drop(self.Wo(y.transpose(1, 2).reshape(B, K, C)))


class ModernBertMLP(nn.Module):
    """GeGLU (Shazeer 2020): Wo(act(input) * gate), input and gate the two halves of Wi."""

    def __init__(self, c: ModernBertConfig):
        super().__init__()
        self.Wi = nn.Linear(c.hidden_size, 2 * c.intermediate_size, bias=c.mlp_bias)
        self.act = ACTIVATIONS[c.hidden_activation]
        self.drop = Dropout(c.mlp_dropout)
        self.Wo = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x):
        input, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(input) * gate))


class ModernBertEncoderLayer(nn.Module):
    def __init__(self, c: ModernBertConfig, index: int, attention_type: str):
        super().__init__()
        # the embeddings end in a norm, so the first layer's pre-norm would be a second one: ModernBERT has none
        self.attn_norm = nn.Identity() if index == 0 else _norm(c)
        self.attn = ModernBertAttention(c)
        self.mlp_norm = _norm(c)
        self.mlp = ModernBertMLP(c)
        self.attention_type = attention_type

    def forward(self, x, masks, rope, positions=None):
        """Pre-LN residual blocks; positions (B, K): compute the output only at these rows."""
        mask, (cos, sin) = masks[self.attention_type], rope[self.attention_type]
        h = self.attn_norm(x)
        if positions is None:
            x = x + self.attn(h, h, mask, cos, sin)
        else:
            x = _gather_rows(x, positions) + self.attn(h, _gather_rows(h, positions), _mask_rows(mask, positions),
                                                       cos, sin, positions)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertModel(nn.Module):
    def __init__(self, c: ModernBertConfig):
        super().__init__()
        self.local_attention = c.local_attention
        self.embeddings = ModernBertEmbeddings(c)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(c, i, kind) for i, kind in enumerate(c.resolved_layer_types()))
        self.final_norm = _norm(c)
        self.rotary_emb = ModernBertRotaryEmbedding(c)

    def forward(self, input_ids, attention_mask=None, output_positions=None):
        """attention_mask None: no padding. output_positions (B, K): h only there, (B, K, C), else (B, T, C)."""
        T = input_ids.size(1)
        masks = attention_masks(attention_mask, T, self.local_attention, input_ids.device)
        rope = self.rotary_emb(T, input_ids.device)
        x = self.embeddings(input_ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, masks, rope, output_positions if i == len(self.layers) - 1 else None)
        return self.final_norm(x)


class ModernBertPredictionHead(nn.Module):
    def __init__(self, c: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size, bias=c.classifier_bias)
        self.act = ACTIVATIONS[c.classifier_activation]
        self.norm = _norm(c)

    def forward(self, x):
        return self.norm(self.act(self.dense(x)))


class TiedDecoder(nn.Module):
    """The decoder's own parameter (bias, key `decoder.bias`); its weight is the token embeddings."""

    def __init__(self, c: ModernBertConfig):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(c.vocab_size)) if c.decoder_bias else None


def init_weights(module: nn.Module, c: ModernBertConfig) -> None:
    """ModernBERT's scheme: truncated normals, std 0.02 in, 0.02/sqrt(2·layers) on the residual
    outputs, hidden_size^-0.5 for a classifier; zero biases, unit norms."""
    std_in, std_out = c.initializer_range, c.initializer_range / math.sqrt(2.0 * c.num_hidden_layers)

    def init(weight, std):
        cut = c.initializer_cutoff_factor * std
        nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cut, b=cut)

    if isinstance(module, nn.Embedding):  # the token embeddings (and the tied decoder)
        init(module.weight, std_in)
    elif isinstance(module, ModernBertAttention):
        init(module.Wqkv.weight, std_in)
        init(module.Wo.weight, std_out)
    elif isinstance(module, ModernBertMLP):
        init(module.Wi.weight, std_in)
        init(module.Wo.weight, std_out)
    elif isinstance(module, ModernBertPredictionHead):
        init(module.dense.weight, std_out)
    elif isinstance(module, ModernBertForSequenceClassification):
        init(module.classifier.weight, c.hidden_size ** -0.5)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
    if isinstance(module, (nn.Linear, nn.LayerNorm, TiedDecoder)) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


class ModernBertForMaskedLM(nn.Module):
    def __init__(self, config: ModernBertConfig, speed: Speed | None = None, sentence_task: bool = False):
        super().__init__()
        if sentence_task:  # the trainer refuses nsp/sop data first, with the fix; this is the model's own guard
            raise ValueError("ModernBERT has no sentence head: it trains masked-LM only")
        self.config = config
        self.sentence_task = False
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = TiedDecoder(config)
        self.apply(self._init_weights)
        self.set_speed(speed or Speed())

    def set_speed(self, speed: Speed) -> None:
        self.speed = speed
        set_fast_dropout(self, speed.fast_dropout)

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config)

    def forward(self, input_ids, token_type_ids, attention_mask, masked_positions, masked_labels=None,
                next_sentence_labels=None) -> PretrainingOutput:
        """masked_positions/masked_labels: (B, P), label -100 in padding slots; the head sees B*P rows.

        token_type_ids and next_sentence_labels are accepted for the shared contract and unused.
        """
        B, P = masked_positions.shape
        if self.speed.sparse_last_layer:  # the head reads the last layer only at the masked positions
            gathered = self.model(input_ids, attention_mask, masked_positions)  # (B, P, C)
        else:
            gathered = _gather_rows(self.model(input_ids, attention_mask), masked_positions)  # (B, P, C)
        logits = tied_decoder(self.head(gathered.reshape(B * P, -1)), self.model.embeddings.tok_embeddings.weight,
                              self.decoder.bias, self.speed.pad_vocab_multiple)
        return masked_lm_output(logits, masked_labels, self.config.vocab_size)

    def logits(self, input_ids, attention_mask=None) -> torch.Tensor:
        """(B, T, V) logits at every position, as transformers' ModernBertForMaskedLM returns them."""
        h = self.head(self.model(input_ids, attention_mask))
        return tied_decoder(h, self.model.embeddings.tok_embeddings.weight, self.decoder.bias)


class ModernBertForSequenceClassification(nn.Module):
    """transformers' ModernBertForSequenceClassification (pooling "cls"): the [CLS] row of the final
    norm → the prediction head (dense + act + norm, the masked-LM model's `head.*`, kept) → dropout →
    linear. Keys model.*, head.*, classifier.*. num_labels 1 is regression. The last layer runs
    only at [CLS], the one row read (the logits are the same)."""

    def __init__(self, config: ModernBertConfig, num_labels: int, classifier_dropout: float | None = None,
                 fast_dropout: bool = False):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.drop = Dropout(0.0 if classifier_dropout is None else classifier_dropout)  # ModernBertConfig's default
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(lambda m: init_weights(m, config))
        set_fast_dropout(self, fast_dropout)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """(B, num_labels) logits; token_type_ids unused (ModernBERT has none); attention_mask None: no padding."""
        cls_only = input_ids.new_zeros(input_ids.size(0), 1)  # (B, 1): position 0 of every sequence
        h = self.model(input_ids, attention_mask, cls_only)[:, 0]  # (B, C)
        return self.classifier(self.drop(self.head(h)))
