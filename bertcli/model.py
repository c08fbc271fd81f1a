"""BERT for pretraining (post-LN, as in the paper), in one file.

Module names are Hugging Face's, so `state_dict()` keys *are* `BertForPreTraining`'s
(bert.embeddings.word_embeddings.weight, bert.encoder.layer.0.attention.self.query.weight, ...,
cls.predictions.bias, cls.seq_relationship.weight) and export is a pass-through. The decoder of
the masked-LM head is tied to the word embeddings and not stored.

Two things differ from HF's code, neither in the numbers: attention runs through
`scaled_dot_product_attention` (flash / memory-efficient kernels where available), and the
masked-LM head runs only at the masked positions (as Google's and NVIDIA's code do), which saves
the head's work at the other ~85% of positions. Left out on purpose: head masks, cross-attention,
caches, return_dict — pretraining needs none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # exact erf form (HF "gelu")
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # Google's tanh approximation
    "relu": F.relu,
}
IGNORE_INDEX = -100


@dataclass
class BertConfig:
    """HF BertConfig's names; vocab_size and pad_token_id come from the data, never the YAML."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

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

    def forward(self, x, attn_mask):
        B, T, C = x.shape
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (proj(x).view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        # scale 1/sqrt(hs) is SDPA's default; attn_mask (B, 1, 1, T) hides padded keys
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class BertSelfOutput(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(c)  # the name is HF's key: attention.self.query...
        self.output = BertSelfOutput(c)

    def forward(self, x, attn_mask):
        return self.output(self.self(x, attn_mask), x)


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

    def forward(self, x, attn_mask):
        x = self.attention(x, attn_mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x, attn_mask):
        for layer in self.layer:
            x = layer(x, attn_mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))  # the [CLS] position


class BertModel(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c)

    def forward(self, input_ids, token_type_ids, attention_mask):
        # bool (B, 1, 1, T): True where a key may be attended to
        attn_mask = attention_mask[:, None, None, :].bool()
        h = self.encoder(self.embeddings(input_ids, token_type_ids), attn_mask)
        return h, self.pooler(h)


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

    def forward(self, x, word_embeddings: torch.Tensor):
        return F.linear(self.transform(x), word_embeddings, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(c)
        self.seq_relationship = nn.Linear(c.hidden_size, 2)


@dataclass
class PretrainingOutput:
    mlm_logits: torch.Tensor  # (N, V) at the N gathered positions
    nsp_logits: torch.Tensor  # (B, 2)
    mlm_loss_sum: torch.Tensor | None = None  # summed over real masked positions
    nsp_loss_sum: torch.Tensor | None = None  # summed over examples
    mlm_correct: torch.Tensor | None = None
    nsp_correct: torch.Tensor | None = None
    masked_count: torch.Tensor | None = None


class BertForPreTraining(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
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

    def forward(self, input_ids, token_type_ids, attention_mask, masked_positions, masked_labels=None,
                next_sentence_labels=None) -> PretrainingOutput:
        """masked_positions/masked_labels: (B, P), label -100 in padding slots; the MLM head sees B*P rows."""
        h, pooled = self.bert(input_ids, token_type_ids, attention_mask)  # (B, T, C), (B, C)
        B, P = masked_positions.shape
        gathered = torch.gather(h, 1, masked_positions.unsqueeze(-1).expand(B, P, h.size(-1)))  # (B, P, C)
        mlm_logits = self.cls.predictions(gathered.reshape(B * P, -1), self.bert.embeddings.word_embeddings.weight)
        nsp_logits = self.cls.seq_relationship(pooled)
        out = PretrainingOutput(mlm_logits, nsp_logits)
        if masked_labels is not None:
            labels = masked_labels.reshape(-1)
            real = labels != IGNORE_INDEX
            out.mlm_loss_sum = F.cross_entropy(mlm_logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
            out.mlm_correct = ((mlm_logits.argmax(-1) == labels) & real).sum()
            out.masked_count = real.sum()
        if next_sentence_labels is not None:
            out.nsp_loss_sum = F.cross_entropy(nsp_logits.float(), next_sentence_labels, reduction="sum")
            out.nsp_correct = (nsp_logits.argmax(-1) == next_sentence_labels).sum()
        return out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(c: BertConfig, seq_len: int, n_params: int) -> float:
    """Training FLOPs per token by 6·N + 12·L·d·s (PaLM's formula: weights + attention scores)."""
    return 6 * n_params + 12 * c.num_hidden_layers * c.hidden_size * seq_len

