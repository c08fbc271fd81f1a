"""Continue pretraining a published BERT, offline: a small random BERT stands in for bert-base.

The "published" model is a random `BertForPreTraining` saved with `save_pretrained`, with a
WordPiece tokenizer in Google's layout ([PAD]=0, [unused0-98], [UNK]=100, [CLS]=101, [SEP]=102,
[MASK]=103) trained with `tokenizers`. It goes through `tokenize --from`, make-data, pretrain with
`train.init_from`, export, and back into transformers.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from bertcli.batches import eval_batches  # noqa: E402
from bertcli.config import ModelConfig  # noqa: E402
from bertcli.evaluate import load_model  # noqa: E402
from bertcli.make_data import MakeDataOptions, make_data  # noqa: E402
from bertcli.model import BertForPreTraining  # noqa: E402
from bertcli.shards import PretrainingData  # noqa: E402
from bertcli.tokenizer import Tokenizer  # noqa: E402
from bertcli.weights import load_pretrained, model_config, normalize_keys  # noqa: E402
from conftest import SAMPLE  # noqa: E402
from test_export import assert_same_outputs  # noqa: E402

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["The old man was [MASK] with the school.", "I am a cat. As yet I have no name.", "naïve CAFÉ, 日本!"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def random_bert(cls, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    model = cls(transformers.BertConfig(vocab_size=vocab_size, **SIZES))
    with torch.no_grad():  # off the initial values (LayerNorm 1/0, zero biases), so a wrong key shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def copy_tokenizer_files(src, dst) -> None:
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A directory as `save_pretrained` leaves it, plus the vocab.txt Google's tokenizer reads."""
    root = tmp_path_factory.mktemp("published")
    tk = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tk.train([str(SAMPLE)], tokenizers.trainers.WordPieceTrainer(vocab_size=1000, special_tokens=SPECIALS,
                                                                 show_progress=False))
    (root / "vocab").mkdir()
    vocab = "".join(piece + "\n" for piece, _ in sorted(tk.get_vocab().items(), key=lambda item: item[1]))
    (root / "vocab" / "vocab.txt").write_text(vocab, encoding="utf-8")
    fast = transformers.BertTokenizerFast.from_pretrained(root / "vocab", do_lower_case=True)
    bert = root / "bert"
    fast.save_pretrained(bert)
    shutil.copy(root / "vocab" / "vocab.txt", bert / "vocab.txt")
    random_bert(transformers.BertForPreTraining, len(fast)).save_pretrained(bert)
    return bert


@pytest.fixture(scope="module")
def adopted(published, tmp_path_factory):
    """tokenize --from, then make-data with whole-word masking."""
    from bertcli.cli import main

    root = tmp_path_factory.mktemp("adopted")
    with pytest.raises(SystemExit) as done:
        main(["tokenize", "--from", str(published), "--out", str(root / "tok")])
    assert done.value.code in (0, None)
    make_data([SAMPLE], root / "tok", root / "data", MakeDataOptions(max_seq_length=64, dupe_factor=1,
              validation_fraction=0.05, whole_word_mask=True, workers=1), show_progress=False)
    return root


def pretrain_args(data, out, init_from, *extra) -> list[str]:
    sets = [f"data.dir={data}", f"out_dir={out}", f"train.init_from={init_from}", "train.global_batch_size=16",
            "train.micro_batch_size=8", "train.max_steps=3", "train.warmup_steps=1", "train.learning_rate=1e-3",
            "system.log_interval=1", "system.checkpoint_interval=3", "system.device=cpu", "system.eval_batches=2", *extra]
    return ["pretrain", *(a for s in sets for a in ("--set", s))]


def test_the_adopted_tokenizer_keeps_the_published_ids(published, adopted):
    tok = Tokenizer.load(adopted / "tok")
    assert tok.special_ids == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    reference = transformers.AutoTokenizer.from_pretrained(published)
    for text in TEXTS[1:]:
        assert [101, *tok.encode([text])[0], 102] == reference(text)["input_ids"]
    data = PretrainingData(adopted / "data")
    ids = np.concatenate([data[i].input_ids for i in range(200)])
    assert not ((ids >= 1) & (ids <= 99)).any()  # [unused] slots never appear, not even as random replacements


def test_step_0_loss_equals_transformers_loss(published, adopted):
    tok = Tokenizer.load(adopted / "tok")
    cfg = model_config(str(published), ModelConfig(), tok.vocab_size, tok)
    ours = BertForPreTraining(cfg).eval()
    load_pretrained(ours, published)
    hf = transformers.BertForPreTraining.from_pretrained(published).eval()
    batch = next(eval_batches(PretrainingData(adopted / "data"), 8, 1))
    labels = torch.full_like(batch.input_ids, -100)
    for b in range(len(labels)):
        real = batch.masked_labels[b] != -100
        labels[b, batch.masked_positions[b, real]] = batch.masked_labels[b, real]
    with torch.no_grad():
        out = ours(**batch.model_inputs())
        theirs = hf(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids,
                    attention_mask=batch.attention_mask.long(), labels=labels, next_sentence_label=batch.next_sentence_labels)
    loss = out.mlm_loss_sum / out.masked_count + out.nsp_loss_sum / len(labels)
    assert abs(float(loss) - float(theirs.loss)) < 1e-5


def test_pretrain_logs_transformers_loss_at_step_0(cli, published, adopted, tmp_path):
    """No dropout: the first logged loss is the loss of step 0's batch before any update."""
    from bertcli.batches import BatchPlan, MicroBatches

    run = tmp_path / "run"
    code, _, err = cli(*pretrain_args(adopted / "data", run, published, "train.max_steps=1", "seed=5",
                                      "system.checkpoint_interval=1", "model.hidden_dropout_prob=0.0",
                                      "model.attention_probs_dropout_prob=0.0"))
    assert code == 0, err
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    data = PretrainingData(adopted / "data")
    plan = BatchPlan(np.diff(data.cumulative), 16, 8, 1, 5)
    hf = transformers.BertForPreTraining.from_pretrained(published).eval()
    mlm = nsp = masked = 0.0
    for micro in range(plan.accumulation):
        batch = MicroBatches(data, plan, 0, None)[micro]
        with torch.no_grad():
            out = hf(input_ids=batch.input_ids, token_type_ids=batch.token_type_ids, attention_mask=batch.attention_mask.long())
        logits = torch.gather(out.prediction_logits, 1, batch.masked_positions[..., None].expand(-1, -1, out.prediction_logits.size(-1)))
        mlm += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.masked_labels.flatten(), reduction="sum"))
        nsp += float(torch.nn.functional.cross_entropy(out.seq_relationship_logits, batch.next_sentence_labels, reduction="sum"))
        masked += batch.num_masked
    assert logged["step"] == 1 and abs(logged["loss"] - (mlm / masked + nsp / 16)) < 1e-5


def test_continue_pretraining_then_export_gives_the_published_tokenizer(cli, published, adopted, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli(*pretrain_args(adopted / "data", run, published, "data.masking=dynamic"))
    assert code == 0, err
    ours, state, _ = load_model(run, torch.device("cpu"))
    assert state["model_config"]["hidden_size"] == 32 and state["step"] == 3  # the shape came from config.json
    code, _, err = cli("export", "--checkpoint", run, "--out", tmp_path / "hf")
    assert code == 0, err
    model = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf").eval()
    assert_same_outputs(ours, model, ours.config.vocab_size)
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    original = transformers.AutoTokenizer.from_pretrained(published)
    for text in TEXTS:
        assert exported(text)["input_ids"] == original(text)["input_ids"]
        assert exported(text, "a second one.")["token_type_ids"] == original(text, "a second one.")["token_type_ids"]
    assert (tmp_path / "hf" / "vocab.txt").read_bytes() == (published / "vocab.txt").read_bytes()


def test_init_from_a_masked_lm_only_directory_initialises_the_missing_heads(cli, published, adopted, tmp_path):
    mlm = tmp_path / "mlm"
    random_bert(transformers.BertForMaskedLM, 1000).save_pretrained(mlm)
    copy_tokenizer_files(published, mlm)
    code, _, err = cli(*pretrain_args(adopted / "data", tmp_path / "run", mlm, "train.max_steps=1",
                                      "system.checkpoint_interval=1"))
    assert code == 0, err
    [line] = [line for line in err.splitlines() if "initialised fresh" in line]
    assert "bert.pooler" in line and "cls.seq_relationship" in line


def test_init_from_a_bin_only_directory(published, adopted, tmp_path):
    """pytorch_model.bin, read with weights_only=True; a BertModel's keys (no `bert.` prefix)."""
    source = random_bert(transformers.BertModel, 1000, seed=1)
    (tmp_path / "bin").mkdir()
    torch.save(source.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    shutil.copy(published / "config.json", tmp_path / "bin" / "config.json")
    tok = Tokenizer.load(adopted / "tok")
    ours = BertForPreTraining(model_config(str(tmp_path / "bin"), ModelConfig(), tok.vocab_size, tok))
    load_pretrained(ours, tmp_path / "bin")
    for key, value in source.state_dict().items():
        if not key.endswith("position_ids"):
            assert torch.equal(ours.state_dict()[f"bert.{key}"], value), key


def test_legacy_gamma_beta_and_a_stored_decoder_are_read():
    weights = {"bert.embeddings.LayerNorm.gamma": torch.ones(2), "bert.embeddings.LayerNorm.beta": torch.zeros(2),
               "bert.embeddings.word_embeddings.weight": torch.eye(2), "cls.predictions.decoder.weight": torch.eye(2),
               "bert.embeddings.position_ids": torch.arange(2)}
    assert sorted(normalize_keys(weights, "x")) == ["bert.embeddings.LayerNorm.bias", "bert.embeddings.LayerNorm.weight",
                                                    "bert.embeddings.word_embeddings.weight"]
    weights["cls.predictions.decoder.weight"] = torch.zeros(2, 2)
    with pytest.raises(Exception, match="differs from the word embeddings"):
        normalize_keys(weights, "x")


def test_a_pickle_with_code_is_refused(published, tmp_path):
    (tmp_path / "bad").mkdir()
    shutil.copy(published / "config.json", tmp_path / "bad" / "config.json")
    torch.save({"weights": {"nested": torch.ones(1)}}, tmp_path / "bad" / "pytorch_model.bin")
    from bertcli.weights import read_weights
    with pytest.raises(Exception, match="flat dict of named tensors"):
        read_weights(tmp_path / "bad")


def mismatch(published, tmp_path, edit):
    bad = tmp_path / "bad"
    shutil.copytree(published, bad)
    edit(bad)
    return bad


def edit_json(path, **changes):
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def swap_two_pieces(d):
    lines = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[500], lines[501] = lines[501], lines[500]
    (d / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    (d / "tokenizer.json").unlink()


@pytest.mark.parametrize("edit, extra, message", [
    (lambda d: edit_json(d / "config.json", vocab_size=1200), [], "has vocab_size 1200 but the data's tokenizer has 1000"),
    (lambda d: edit_json(d / "config.json", pad_token_id=7), [], "pad_token_id 7 but the data's tokenizer has [PAD]=0"),
    (swap_two_pieces, [], "at id 500 but the data's has"),
    (lambda d: None, ["model.hidden_size=48"], "model.hidden_size is 48 but"),
    (lambda d: edit_json(d / "config.json", model_type="gpt2", architectures=["GPT2LMHeadModel"]), [], "is not a BERT"),
])
def test_mismatches_are_one_line_usage_errors_before_any_step(cli, published, adopted, tmp_path, edit, extra, message):
    bad = mismatch(published, tmp_path, edit)
    code, _, err = cli(*pretrain_args(adopted / "data", tmp_path / "run", bad, *extra))
    assert code == 2 and message in err and err.strip().count("\n") == 0 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_sentencepiece_data_directory_does_not_fit_a_published_bert(cli, published, data_dir, tmp_path):
    code, _, err = cli(*pretrain_args(data_dir, tmp_path / "run", published))
    assert code == 2 and "vocab_size 1000 but the data's tokenizer has 2000" in err


def _set_raw(path, key: str, raw: str) -> None:
    """Set a key of a JSON file to raw JSON text (Infinity and NaN are what json.dumps writes for them)."""
    config = json.loads(path.read_text())
    config[key] = "@@"
    path.write_text(json.dumps(config).replace('"@@"', raw))


@pytest.mark.parametrize("key, raw", [
    ("hidden_size", '"64"'), ("hidden_size", "64.0"), ("hidden_size", "-64"), ("hidden_size", "1000000"),
    ("num_attention_heads", "3"), ("num_attention_heads", "0"), ("num_hidden_layers", "100000"),
    ("intermediate_size", "10000000"), ("max_position_embeddings", "100000000"),
    ("hidden_dropout_prob", "1.5"), ("attention_probs_dropout_prob", "-0.5"), ("layer_norm_eps", '"tiny"'),
    ("initializer_range", "-1"), ("initializer_range", "Infinity"), ("initializer_range", "NaN"),
    ("hidden_act", '["gelu"]'), ("hidden_act", '"swish"'), ("type_vocab_size", "true"), ("pad_token_id", '"0"'),
    ("vocab_size", "1e3"), ("num_hidden_layers", "128"),  # 128 layers of 32 pass LIMITS: the parameter bound holds
])
def test_a_published_config_json_is_validated_like_the_yaml_before_anything_is_allocated(
        cli, published, adopted, tmp_path, key, raw):
    bad = mismatch(published, tmp_path, lambda d: _set_raw(d / "config.json", key, raw))
    if key == "num_hidden_layers" and raw == "128":
        _set_raw(bad / "config.json", "hidden_size", "8192")
        _set_raw(bad / "config.json", "intermediate_size", "65536")
    code, _, err = cli(*pretrain_args(adopted / "data", tmp_path / "run", bad))
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "config.json" in err and (key in err or "parameters" in err or "is not a BERT" in err), err
    assert "[PAD]=0" not in err  # pad_token_id "0" is named as a wrong type, not as a mismatch with 0
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_config_json_nested_100k_deep_is_one_line(cli, published, adopted, tmp_path):
    bad = mismatch(published, tmp_path, lambda d: _set_raw(d / "config.json", "extra", "[" * 100_000 + "]" * 100_000))
    code, _, err = cli(*pretrain_args(adopted / "data", tmp_path / "run", bad))
    assert code in (1, 2) and "nested too deeply" in err and err.strip().count("\n") == 0, err


def test_an_empty_init_from_is_named(cli, adopted, tmp_path):
    code, _, err = cli(*pretrain_args(adopted / "data", tmp_path / "run", ""))
    assert code == 2 and "train.init_from is empty" in err and "lies inside" not in err
