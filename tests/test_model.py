import math

import pytest
import torch
import torch.nn.functional as F

from bertcli.model import IGNORE_INDEX, BertConfig, BertForPreTraining

CONFIG = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=24)


def model(**kw):
    torch.manual_seed(0)
    return BertForPreTraining(BertConfig(**{**CONFIG.__dict__, **kw})).eval()


def random_batch(B=3, T=12, P=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, T - 3, T - 5])[:B]
    ids = torch.randint(5, CONFIG.vocab_size, (B, T), generator=g)
    mask = torch.arange(T)[None] < lengths[:, None]
    ids[~mask] = 0
    types = (torch.arange(T)[None] >= (lengths // 2)[:, None]).long() * mask
    pos = torch.stack([torch.randperm(int(l), generator=g)[:P].sort().values for l in lengths])
    labels = torch.randint(5, CONFIG.vocab_size, (B, P), generator=g)
    labels[0, -1] = IGNORE_INDEX  # a padding slot
    nsp = torch.tensor([0, 1, 1])[:B]
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, masked_positions=pos,
                masked_labels=labels, next_sentence_labels=nsp)


def test_state_dict_keys_are_hugging_faces():
    keys = set(model().state_dict())
    expected = {f"bert.embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    expected |= {"bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"}
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        for sub in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                    "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            expected |= {p + sub + ".weight", p + sub + ".bias"}
    expected |= {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "cls.predictions.bias",
                 "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                 "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                 "cls.seq_relationship.weight", "cls.seq_relationship.bias"}
    assert keys == expected


def test_bert_base_parameter_count():
    with torch.device("meta"):
        m = BertForPreTraining(BertConfig(vocab_size=30522))
    assert sum(p.numel() for p in m.parameters()) == pytest.approx(110.1e6, rel=1e-3)


def test_init_follows_bert():
    m = model(hidden_size=64, intermediate_size=128, num_attention_heads=4)
    q = m.bert.encoder.layer[0].attention.self.query
    assert abs(q.weight.std().item() - 0.02) < 0.003 and torch.all(q.bias == 0)
    assert torch.all(m.bert.embeddings.LayerNorm.weight == 1) and torch.all(m.cls.predictions.bias == 0)
    assert torch.all(m.bert.embeddings.word_embeddings.weight[0] == 0)  # [PAD] row


def reference_forward(m, b):
    """A straightforward re-computation: loops, explicit softmax attention, full-sequence MLM head."""
    c = m.config
    emb = m.bert.embeddings
    B, T = b["input_ids"].shape
    x = emb.word_embeddings.weight[b["input_ids"]] + emb.token_type_embeddings.weight[b["token_type_ids"]] \
        + emb.position_embeddings.weight[:T][None]
    x = F.layer_norm(x, (c.hidden_size,), emb.LayerNorm.weight, emb.LayerNorm.bias, c.layer_norm_eps)
    H, hs = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    for layer in m.bert.encoder.layer:
        a = layer.attention
        q, k, v = (F.linear(x, l.weight, l.bias).view(B, T, H, hs).permute(0, 2, 1, 3)
                   for l in (a.self.query, a.self.key, a.self.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hs)
        scores = scores.masked_fill(~b["attention_mask"][:, None, None, :], float("-inf"))
        ctx = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(B, T, -1)
        x = a.output.LayerNorm(a.output.dense(ctx) + x)
        inter = F.gelu(layer.intermediate.dense(x))
        x = layer.output.LayerNorm(layer.output.dense(inter) + x)
    pooled = torch.tanh(m.bert.pooler.dense(x[:, 0]))
    t = m.cls.predictions.transform
    full = F.linear(t.LayerNorm(F.gelu(t.dense(x))), emb.word_embeddings.weight, m.cls.predictions.bias)  # (B, T, V)
    mlm = torch.stack([full[i, b["masked_positions"][i]] for i in range(B)]).reshape(-1, c.vocab_size)
    return mlm, m.cls.seq_relationship(pooled)


def test_forward_matches_reference_and_losses():
    m, b = model(), random_batch()
    out = m(**b)
    mlm, nsp = reference_forward(m, b)
    assert torch.allclose(out.mlm_logits, mlm, atol=1e-5)
    assert torch.allclose(out.nsp_logits, nsp, atol=1e-5)
    labels = b["masked_labels"].reshape(-1)
    real = labels != IGNORE_INDEX
    assert out.masked_count == real.sum()
    assert torch.allclose(out.mlm_loss_sum, F.cross_entropy(mlm[real], labels[real], reduction="sum"), atol=1e-4)
    assert torch.allclose(out.nsp_loss_sum, F.cross_entropy(nsp, b["next_sentence_labels"], reduction="sum"), atol=1e-5)


def test_padding_does_not_change_results():
    m, b = model(), random_batch()
    out = m(**b)
    padded = dict(b)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        padded[key] = F.pad(b[key], (0, 8))
    out2 = m(**padded)
    assert torch.allclose(out.mlm_logits, out2.mlm_logits, atol=1e-5)
    assert torch.allclose(out.nsp_logits, out2.nsp_logits, atol=1e-5)


def test_gelu_new_and_dropout_in_training():
    m, b = model(hidden_act="gelu_new"), random_batch()
    m.train()
    torch.manual_seed(1)
    a = m(**b).mlm_logits
    torch.manual_seed(2)
    c = m(**b).mlm_logits
    assert not torch.allclose(a, c)  # dropout is active in training mode
    m.eval()
    assert torch.allclose(m(**b).mlm_logits, m(**b).mlm_logits)
