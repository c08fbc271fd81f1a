"""Every speed setting changes how fast, never what is computed: same loss and gradients on a fixed
batch (up to float rounding), same state-dict keys and shapes, same training curve without dropout."""

import json

import pytest
import torch
import torch.nn.functional as F

from bertcli.batches import Batch
from bertcli.config import TrainConfig, load_config
from bertcli.errors import UsageError
from bertcli.model import IGNORE_INDEX, BertConfig, BertForPreTraining, Speed, attention, keep_mask
from bertcli.runtime import make_runtime
from bertcli.train import make_optimizer, param_groups, pretrain
from conftest import tiny_config

CONFIG = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=32)


def fixed_batch(B=4, T=16, P=5, padded=True) -> Batch:
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([T, T - 3, T - 6, T - 1]) if padded else torch.full((B,), T)
    mask = torch.arange(T)[None] < lengths[:, None]
    ids = torch.randint(5, CONFIG.vocab_size, (B, T), generator=g) * mask
    types = (torch.arange(T)[None] >= (lengths // 2)[:, None]).long() * mask
    positions = torch.stack([torch.randperm(int(n) - 1, generator=g)[:P].sort().values + 1 for n in lengths])
    labels = torch.randint(5, CONFIG.vocab_size, (B, P), generator=g)
    positions[0, -1], labels[0, -1] = 0, IGNORE_INDEX  # a padding slot
    return Batch(ids, types, mask, positions, labels, torch.tensor([0, 1, 1, 0]))


def loss_and_grads(speed: Speed, batch: Batch, padded: bool = True, train: bool = False, **config):
    """Loss of the batch and every parameter's gradient, from the same initial weights."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**{**CONFIG.__dict__, **config}), speed).train(train)
    out = model(**batch.model_inputs(padded))
    loss = out.mlm_loss_sum / out.masked_count + out.nsp_loss_sum / len(batch.next_sentence_labels)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}, out


def assert_same(a, b, atol=1e-5):
    (loss_a, grads_a, out_a), (loss_b, grads_b, out_b) = a, b
    assert torch.allclose(loss_a, loss_b, atol=atol), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=atol), name
    assert out_a.mlm_logits.shape == out_b.mlm_logits.shape
    assert out_a.mlm_correct == out_b.mlm_correct and out_a.nsp_correct == out_b.nsp_correct


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-no-dropout"])
def test_sparse_last_layer_same_loss_and_gradients(train):
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = fixed_batch()
    assert_same(loss_and_grads(Speed(), batch, train=train, **no_dropout),
                loss_and_grads(Speed(sparse_last_layer=True), batch, train=train, **no_dropout))


def test_pad_vocab_same_loss_gradients_and_shapes():
    batch = fixed_batch()
    plain, padded = loss_and_grads(Speed(), batch), loss_and_grads(Speed(pad_vocab_multiple=64), batch)
    assert_same(plain, padded)
    assert padded[2].mlm_logits.shape[-1] == CONFIG.vocab_size  # the padding never leaves the model
    model = BertForPreTraining(CONFIG, Speed(pad_vocab_multiple=64))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in BertForPreTraining(CONFIG).state_dict().items()}
    assert shapes["bert.embeddings.word_embeddings.weight"][0] == shapes["cls.predictions.bias"][0] == 50


def test_no_attention_mask_for_unpadded_batch_same_loss():
    batch = fixed_batch(padded=False)
    assert not batch.is_padded and fixed_batch().is_padded
    assert_same(loss_and_grads(Speed(), batch, padded=True), loss_and_grads(Speed(), batch, padded=False))


def test_fast_dropout_is_identity_in_eval_and_without_dropout():
    batch = fixed_batch()
    assert_same(loss_and_grads(Speed(), batch), loss_and_grads(Speed(fast_dropout=True), batch))
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert_same(loss_and_grads(Speed(), batch, train=True, **no_dropout),
                loss_and_grads(Speed(fast_dropout=True), batch, train=True, **no_dropout))


def test_keep_mask_rate_scale_and_seed():
    torch.manual_seed(5)
    mask = keep_mask(torch.Size([256, 1024]), 0.1, torch.float32)
    kept = mask > 0
    assert abs(kept.float().mean().item() - 0.9) < 0.003
    assert torch.all(mask[kept] == mask[kept][0]) and mask[kept][0].item() == pytest.approx(1 / 0.9, rel=1e-4)
    assert abs(mask.mean().item() - 1.0) < 0.004  # the expected activation is unchanged
    torch.manual_seed(5)
    assert torch.equal(keep_mask(torch.Size([256, 1024]), 0.1, torch.float32), mask)  # torch's seed decides it
    assert not torch.equal(keep_mask(torch.Size([256, 1024]), 0.1, torch.float32), mask)


def test_fast_dropout_attention_is_softmax_times_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    attn_mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    attn_mask[1, ..., 3:] = False
    torch.manual_seed(9)
    got = attention(q, k, v, attn_mask, 0.25, fast_dropout=True)
    torch.manual_seed(9)
    mask = keep_mask(torch.Size([2, 3, 5, 5]), 0.25, torch.float32)
    scores = (q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~attn_mask, float("-inf"))
    assert torch.allclose(got, (scores.softmax(-1) * mask) @ v, atol=1e-6)
    assert torch.allclose(attention(q, k, v, attn_mask, 0.0, fast_dropout=True),
                          F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), atol=1e-6)


def test_fused_adamw_matches_the_reference_loop():
    torch.manual_seed(0)
    a, b = BertForPreTraining(CONFIG).eval(), BertForPreTraining(CONFIG).eval()  # eval: no dropout draws
    b.load_state_dict(a.state_dict())
    t = TrainConfig(learning_rate=1e-2)
    fused = make_optimizer(a, t)
    loop = torch.optim.AdamW(param_groups(b, t.weight_decay), lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                             eps=t.adam_epsilon, foreach=False)
    batch = fixed_batch()
    for _ in range(3):
        for model, opt in ((a, fused), (b, loop)):
            out = model(**batch.model_inputs())
            (out.mlm_loss_sum / out.masked_count + out.nsp_loss_sum / 4).backward()
            opt.step()
            opt.zero_grad()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


@pytest.mark.slow  # torch.compile: tens of seconds of compiling
def test_compile_same_loss_and_gradients():
    """torch.compile on a one-layer model (compiling takes ~10-30 s on a CPU)."""
    batch, config = fixed_batch(), dict(num_hidden_layers=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    eager = loss_and_grads(Speed(sparse_last_layer=True), batch, train=True, **config)
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**{**CONFIG.__dict__, **config}), Speed(sparse_last_layer=True))
    out = torch.compile(model)(**batch.model_inputs())
    loss = out.mlm_loss_sum / out.masked_count + out.nsp_loss_sum / 4
    loss.backward()
    assert_same(eager, (loss.detach(), {n: p.grad for n, p in model.named_parameters()}, out), atol=1e-4)


def test_cpu_threads_setting():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the suite runs on one thread (conftest): start from another count
        make_runtime("cpu", "fp32", cpu_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_invalid_speed_settings_name_the_key():
    with pytest.raises(UsageError, match="system.pad_vocab_multiple"):
        load_config(None, ["data.dir=d", "system.pad_vocab_multiple=0"])


def test_training_curve_unchanged_by_speed_settings_without_dropout(data_dir, tmp_path):
    """6 steps with every speed setting on give the plain run's losses (no dropout: no draws differ)."""
    common = ("model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0")
    pretrain(tiny_config(data_dir, tmp_path / "plain", *common, "system.pad_vocab_multiple=1",
                         "system.sparse_last_layer=false", "system.fast_dropout=false"), show_progress=False)
    pretrain(tiny_config(data_dir, tmp_path / "fast", *common, "system.sparse_last_layer=true",
                         "system.fast_dropout=true", "system.pad_vocab_multiple=64"), show_progress=False)

    def losses(run):
        return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses(tmp_path / "fast") == pytest.approx(losses(tmp_path / "plain"), rel=1e-4)


def test_training_with_fast_dropout_learns(data_dir, tmp_path):
    run = tmp_path / "run"
    pretrain(tiny_config(data_dir, run, "train.max_steps=12", "system.sparse_last_layer=true", "system.fast_dropout=true"),
             show_progress=False)
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert sum(losses[-3:]) < sum(losses[:3])
