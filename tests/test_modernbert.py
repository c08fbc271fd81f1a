"""ModernBERT (model.architecture: modernbert) against transformers' ModernBertForMaskedLM, both ways.

Parity: a random transformers model → train.init_from → bertcli's step-0 loss equals transformers'
on the same batch; a bertcli checkpoint → export → AutoModelForMaskedLM gives bertcli's logits.
Both on two shapes (global attention every 3rd and every 2nd layer), with sequences longer than
the sliding window. Then the published-ModernBERT path end to end (its byte-level BPE tokenizer
built here with `tokenizers`), and the bad inputs that must stop before any step. No network.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from bertcli.config import load_config  # noqa: E402
from bertcli.errors import UsageError  # noqa: E402
from bertcli.evaluate import load_model  # noqa: E402
from bertcli.export import export  # noqa: E402
from bertcli.make_data import MakeDataOptions, make_data  # noqa: E402
from bertcli.model import Speed  # noqa: E402
from bertcli.modernbert import ModernBertConfig, ModernBertForMaskedLM  # noqa: E402
from bertcli.runtime import make_runtime  # noqa: E402
from bertcli.tokenizer import Tokenizer, adopt  # noqa: E402
from bertcli.train import Trainer, pretrain  # noqa: E402
from conftest import SAMPLE  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# (hidden, layers, heads, intermediate, global_attn_every_n_layers, local_attention): windows of 16 and 8 < seq 64
SHAPES = {"every-3": (32, 3, 2, 48, 3, 16), "every-2": (48, 4, 4, 40, 2, 8)}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def mlm_dir(tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm") / "data"
    make_data([SAMPLE], tokenizer_dir, out, MakeDataOptions(objective="mlm", max_seq_length=64, dupe_factor=1,
                                                            validation_fraction=0.05, workers=1), show_progress=False)
    return out


def model_sets(shape: str) -> list[str]:
    hidden, layers, heads, inter, every, window = SHAPES[shape]
    return ["model.architecture=modernbert", f"model.hidden_size={hidden}", f"model.num_hidden_layers={layers}",
            f"model.num_attention_heads={heads}", f"model.intermediate_size={inter}",
            f"model.global_attn_every_n_layers={every}", f"model.local_attention={window}", "model.max_position_embeddings=128"]


def run_sets(data, out, *extra) -> list[str]:
    return [f"data.dir={data}", f"out_dir={out}", "train.global_batch_size=8", "train.micro_batch_size=8",
            "train.max_steps=2", "train.warmup_steps=1", "train.learning_rate=1e-3", "system.device=cpu",
            "system.log_interval=1", "system.eval_batches=1", *extra]


def hf_model(shape: str, vocab_size: int, tok: Tokenizer, seed: int = 0):
    hidden, layers, heads, inter, every, window = SHAPES[shape]
    torch.manual_seed(seed)
    config = transformers.ModernBertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, global_attn_every_n_layers=every, local_attention=window, max_position_embeddings=128,
        pad_token_id=tok.pad_id, cls_token_id=tok.cls_id, sep_token_id=tok.sep_id, bos_token_id=tok.cls_id,
        eos_token_id=tok.sep_id, attn_implementation="sdpa")
    return transformers.ModernBertForMaskedLM(config).eval()


def full_labels(batch) -> torch.Tensor:
    """The batch's masked labels at their positions of (B, T), -100 elsewhere (transformers' layout)."""
    labels = torch.full_like(batch.input_ids, -100)
    real = batch.masked_labels != -100
    rows = torch.arange(len(labels))[:, None].expand_as(batch.masked_positions)
    labels[rows[real], batch.masked_positions[real]] = batch.masked_labels[real]
    return labels


@pytest.mark.parametrize("shape", list(SHAPES))
def test_init_from_transformers_gives_its_step0_loss(shape, mlm_dir, tmp_path):
    tok = Tokenizer.load(mlm_dir / "tokenizer")
    hf = hf_model(shape, tok.vocab_size, tok)
    hf.save_pretrained(tmp_path / "hf")
    config = load_config(None, run_sets(mlm_dir, tmp_path / "run", f"train.init_from={tmp_path / 'hf'}"))
    trainer = Trainer(config, make_runtime("cpu", "fp32", 0), show_progress=False)
    try:
        trainer.build(None, False)
        assert trainer.model.config.layer_types == hf.config.layer_types
        batch = next(iter(trainer.loader))
        trainer.model.eval()
        with torch.no_grad():
            out = trainer.model(**batch.model_inputs(batch.is_padded))
            ours = (out.mlm_loss_sum / out.masked_count).item()
            theirs = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=full_labels(batch)).loss.item()
    finally:
        trainer.close()
    assert batch.input_ids.size(1) > SHAPES[shape][-1]  # the sliding window is exercised
    assert abs(ours - theirs) < 1e-5, (ours, theirs)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_export_loads_as_modernbert_with_the_same_logits(shape, mlm_dir, tmp_path):
    pretrain(load_config(None, run_sets(mlm_dir, tmp_path / "run", *model_sets(shape))), show_progress=False)
    export(tmp_path / "run", tmp_path / "hf")
    model, _, _ = load_model(tmp_path / "run", torch.device("cpu"))
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "ModernBertForMaskedLM"
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["model_input_names"] == ["input_ids",
                                                                                                        "attention_mask"]
    torch.manual_seed(1)
    ids = torch.randint(5, model.config.vocab_size, (2, 60))
    mask = torch.ones_like(ids)
    mask[1, 41:] = 0
    with torch.no_grad():
        ours = model.logits(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() < 1e-5
    fill = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"), tokenizer=str(tmp_path / "hf"))
    assert len(fill("The cat sat on the [MASK].", top_k=3)) == 3


def test_sparse_last_layer_and_padding_change_nothing():
    """Computing the last layer at the masked rows only gives the same loss; padding rows stay finite."""
    c = ModernBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                         local_attention=4, max_position_embeddings=32)
    torch.manual_seed(0)
    dense = ModernBertForMaskedLM(c).eval()
    sparse = ModernBertForMaskedLM(c, Speed(sparse_last_layer=True)).eval()
    sparse.load_state_dict(dense.state_dict())
    ids = torch.randint(5, 50, (2, 20))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    positions = torch.tensor([[1, 5, 17], [2, 4, 8]])
    labels = torch.tensor([[7, 8, 9], [10, 11, -100]])
    with torch.no_grad():
        a = dense(ids, None, mask, positions, labels)
        b = sparse(ids, None, mask, positions, labels)
    assert torch.isfinite(dense.logits(ids, mask)).all()
    assert abs(a.mlm_loss_sum.item() - b.mlm_loss_sum.item()) < 1e-5


# --- a published ModernBERT: byte-level BPE tokenizer.json + config.json + weights ----------------

def write_published(directory, shape: str = "every-3"):
    """A ModernBERT-like directory: a byte-level BPE trained here, specials after the vocabulary, random weights."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers

    directory.mkdir()
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|padding|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(SAMPLE.read_text(encoding="utf-8").splitlines()[:1500], trainer)
    bpe.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", AddedToken("[MASK]", lstrip=True)])
    cls, sep = bpe.token_to_id("[CLS]"), bpe.token_to_id("[SEP]")
    bpe.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    bpe.save(str(directory / "tokenizer.json"))
    specials = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                                 "model_input_names": ["input_ids", "attention_mask"],
                                                                 **specials}))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **specials)

    class Ids:  # what hf_model needs of a tokenizer
        pad_id, cls_id, sep_id = tok.pad_token_id, tok.cls_token_id, tok.sep_token_id

    hf_model(shape, bpe.get_vocab_size(with_added_tokens=True), Ids).save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_published_modernbert_end_to_end(tmp_path, cli):
    """tokenize --from → make-data --objective mlm → pretrain init_from → export → transformers: same ids, same logits."""
    published = write_published(tmp_path / "published")
    code, out, err = cli("tokenize", "--from", published, "--out", tmp_path / "tok")
    assert code == 0, err
    tok = Tokenizer.load(tmp_path / "tok")
    theirs_tok = transformers.AutoTokenizer.from_pretrained(published)
    assert tok.kind == "hf" and tok.mask_id == theirs_tok.mask_token_id and tok.pad_id == theirs_tok.pad_token_id
    make_data([SAMPLE], tmp_path / "tok", tmp_path / "data",
              MakeDataOptions(objective="mlm", max_seq_length=64, dupe_factor=1, validation_fraction=0.05, workers=1),
              show_progress=False)
    pretrain(load_config(None, run_sets(tmp_path / "data", tmp_path / "run", f"train.init_from={published}")),
             show_progress=False)
    code, out, err = cli("export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "hf")
    assert code == 0, err
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "It was a fine day, and I [MASK] to the school."
    assert hf_tok(text)["input_ids"] == theirs_tok(text)["input_ids"]
    assert hf_tok(text)["input_ids"] == [tok.cls_id, *tok.encode_query(text), tok.sep_id]
    model, _, _ = load_model(tmp_path / "run", torch.device("cpu"))
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids = hf_tok([text, "Short one."], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.logits(ids["input_ids"], ids["attention_mask"])
        theirs = hf(**ids).logits
    real = ids["attention_mask"].bool()
    assert (ours[real] - theirs[real]).abs().max().item() < 1e-5
    # the training moved the published weights: the export is the continued model, not a copy
    published_hf = transformers.AutoModelForMaskedLM.from_pretrained(published)
    assert not torch.equal(published_hf.model.embeddings.tok_embeddings.weight, hf.model.embeddings.tok_embeddings.weight)


# --- bad input: one line, exit 2, nothing written ------------------------------------------------

def test_nsp_data_is_refused_with_the_reason(data_dir, tmp_path, cli):
    sets = [a for s in run_sets(data_dir, tmp_path / "run", *model_sets("every-3")) for a in ("--set", s)]
    code, out, err = cli("pretrain", *sets)
    assert code == 2
    assert "masked-LM only" in out + err and "--objective mlm" in out + err
    assert len((out + err).strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def _tampered(published, tmp_path, **changes):
    config = json.loads((published / "config.json").read_text())
    config.update(changes)
    (published / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change, message", [
    ({"layer_types": ["full_attention", "chunked_attention", "sliding_attention"]}, "layer_types must be a list of"),
    ({"model_type": "roberta"}, "model_type"),
    ({"vocab_size": 123}, "vocab_size 123"),
    ({"cls_token_id": 1}, "cls_token_id 1"),
    ({"num_attention_heads": 3}, "must divide hidden_size"),
])
def test_mismatched_published_model_stops_before_any_step(change, message, mlm_dir, tmp_path):
    tok = Tokenizer.load(mlm_dir / "tokenizer")
    hf_model("every-3", tok.vocab_size, tok).save_pretrained(tmp_path / "hf")
    _tampered(tmp_path / "hf", tmp_path, **change)
    config = load_config(None, run_sets(mlm_dir, tmp_path / "run", f"train.init_from={tmp_path / 'hf'}",
                                        "model.architecture=modernbert"))
    with pytest.raises(UsageError, match=message):
        pretrain(config, show_progress=False)
    assert not (tmp_path / "run").exists()


def test_shape_in_the_config_must_agree_with_the_published_one(mlm_dir, tmp_path):
    tok = Tokenizer.load(mlm_dir / "tokenizer")
    hf_model("every-3", tok.vocab_size, tok).save_pretrained(tmp_path / "hf")
    config = load_config(None, run_sets(mlm_dir, tmp_path / "run", f"train.init_from={tmp_path / 'hf'}",
                                        "model.architecture=modernbert", "model.hidden_size=64",
                                        "model.num_attention_heads=2"))
    with pytest.raises(UsageError, match="model.hidden_size is '64' but .* says '32'"):
        pretrain(config, show_progress=False)
    config = load_config(None, run_sets(mlm_dir, tmp_path / "run", f"train.init_from={tmp_path / 'hf'}",
                                        "model.hidden_act=relu"))
    with pytest.raises(UsageError, match="is a ModernBERT but the config sets BERT's model.hidden_act"):
        pretrain(config, show_progress=False)
    assert not (tmp_path / "run").exists()


def test_adopted_tokenizer_reads_specials_from_files_and_text_stays_text(tmp_path):
    published = write_published(tmp_path / "published")
    summary = adopt(published, tmp_path / "tok")
    tok = Tokenizer.load(tmp_path / "tok")
    fast = transformers.AutoTokenizer.from_pretrained(published)
    assert summary["special_ids"] == tok.special_ids
    assert tok.special_ids == {"pad": fast.pad_token_id, "unk": fast.unk_token_id, "cls": fast.cls_token_id,
                               "sep": fast.sep_token_id, "mask": fast.mask_token_id}
    text = "Spelled [MASK] in a corpus is text."
    assert tok.mask_id not in tok.encode([text])[0]
    assert tok.mask_id in tok.encode_query(text)
    assert tok.encode([text])[0] == fast(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert tok.starts_word(tok.vocab[tok.encode([" school"])[0][0]])
    with pytest.raises(UsageError, match="--add-words applies to BERT WordPiece"):
        adopt(published, tmp_path / "tok2", words_file=tmp_path / "w.txt")
    (published / "tokenizer_config.json").write_text(json.dumps({"mask_token": "<mask>"}))
    with pytest.raises(UsageError, match="lacks the mask"):
        adopt(published, tmp_path / "tok3")
    assert not (tmp_path / "tok3").exists()


def test_shipped_config_has_modernbert_base_shape():
    """configs/modernbert-base.yaml's model is transformers' ModernBertConfig() default, ModernBERT-base."""
    from pathlib import Path

    config = load_config(Path(__file__).parents[1] / "configs" / "modernbert-base.yaml")
    base = transformers.ModernBertConfig()
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_activation",
                "max_position_embeddings", "norm_eps", "norm_bias", "local_attention", "attention_bias", "mlp_bias",
                "decoder_bias", "classifier_bias", "classifier_activation"):
        assert getattr(config.model, key) == getattr(base, key), key
    layers = ModernBertConfig(vocab_size=8, **{k: v for k, v in vars(config.model).items() if k != "architecture"})
    assert layers.resolved_layer_types() == base.layer_types
    assert (config.model.global_rope_theta, config.model.local_rope_theta) == (
        base.rope_parameters["full_attention"]["rope_theta"], base.rope_parameters["sliding_attention"]["rope_theta"])


def test_finetune_a_modernbert_exports_modernbert_for_sequence_classification(mlm_dir, tmp_path, cli):
    """bertcli finetune takes a modernbert run; its model/ loads as ModernBertForSequenceClassification, same logits."""
    from bertcli.finetune import Example, build_classifier, encode, load_model_for_finetune
    from bertcli.finetune.data import collate

    pretrain(load_config(None, run_sets(mlm_dir, tmp_path / "run", *model_sets("every-2"))), show_progress=False)
    lines = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if len(line.split()) > 3][:40]
    rows = ["sentence\tlabel"] + [f"{t.replace(chr(9), ' ')}\t{'ab'[i % 2]}" for i, t in enumerate(lines)]
    (tmp_path / "train.tsv").write_text("\n".join(rows[:31]) + "\n")
    (tmp_path / "dev.tsv").write_text("\n".join(rows[:1] + rows[31:]) + "\n")
    code, out, err = cli("finetune", "--model", tmp_path / "run", "--train", tmp_path / "train.tsv", "--validation",
                         tmp_path / "dev.tsv", "--text-field", "sentence", "--out", tmp_path / "ft", "--set", "train.epochs=1",
                         "--set", "train.batch_size=8", "--set", "data.max_seq_length=48", "--set", "system.device=cpu")
    assert code == 0, err
    model_dir = tmp_path / "ft" / "model"
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert type(theirs).__name__ == "ModernBertForSequenceClassification"
    spec = load_model_for_finetune(model_dir)  # the fine-tuned model, its classifier kept
    ours, _ = build_classifier(spec, 2)
    texts = ["I am a cat.", "As yet I have no name, and a rather longer sentence than the other one here"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    hf = hf_tok(texts, padding=True, return_tensors="pt")
    batch = collate(encode(spec.tokenizer, [Example(t, None, None) for t in texts], 64), torch.arange(2).numpy(),
                    spec.tokenizer.pad_id)
    assert torch.equal(batch.input_ids, hf["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(batch.input_ids, None, batch.attention_mask), theirs(**hf).logits,
                                   rtol=1e-5, atol=1e-5)
