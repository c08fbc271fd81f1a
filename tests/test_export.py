"""Export to Hugging Face format and back: transformers loads what bertcli writes, the numbers agree.

Needs the `hf` extra (transformers); nothing here touches the network.
"""

import json
import unicodedata

import pytest
import torch
from safetensors import safe_open

transformers = pytest.importorskip("transformers")

from bertcli.evaluate import load_model  # noqa: E402
from bertcli.export import export, write_tokenizer_files  # noqa: E402
from bertcli.model import BertConfig, BertForPreTraining  # noqa: E402
from bertcli.predict import Query, predict  # noqa: E402
from bertcli.tokenizer import Tokenizer  # noqa: E402
from bertcli.tokenizer.sentencepiece_hf import read_spm_spec, spm_with_normalizer  # noqa: E402
from bertcli.train import pretrain  # noqa: E402
from bertcli.weights import load_pretrained, read_weights  # noqa: E402
from conftest import SAMPLE, run_cli, tiny_config  # noqa: E402

UNK, CLS, SEP, MASK = 1, 2, 3, 4
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

SENTENCES = [
    "The cat sat on the mat.", "  leading spaces", "trailing spaces   ", "  both  ", "many    inner     spaces",
    "tabs\tand\nnewlines\r\nhere", "", " ", "a", "x" * 300,
    "Ünïcödé: naïve café, Straße, İstanbul, DİYARBAKIR, ǅemal, Ωmega, ÉCOLE",
    "日本語のテキスト～です。", "한국어 텍스트", "emoji 😀 👍🏽 👨‍👩‍👧 🇯🇵", "ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ ① ﬁ Ⅻ ½ ㎏ ﾊﾟﾝ",
    "zero\u200bwidth\u00a0nbsp\ufeffbom", "control \x00\x07\x7f\x85 chars\u2028end", "السلام عليكم", "नमस्ते दुनिया क़िला",
    "Tiếng Việt có dấu", "[mask] is text, [MASK without its bracket too", "“Quotes” — dashes – and ellipses…",
]
# each sentence also in decomposed forms (NFD: accents as combining marks, as macOS writes file names)
ALL_FORMS = [form for s in SENTENCES
             for form in dict.fromkeys(unicodedata.normalize(n, s) for n in ("NFC", "NFD", "NFKD"))]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "hf"
    export(run_dir, out)
    return out


@pytest.fixture(scope="module")
def tokenizers(tokenizer_dir, tmp_path_factory):
    """bertcli tokenizers of each kind, each with its exported Hugging Face tokenizer."""
    root = tmp_path_factory.mktemp("tokenizers")
    kinds = {"bpe": tokenizer_dir}
    # in a fresh process: tokenize forks its trainer, which is unsafe once torch's threads run here
    for name, options in {"unigram-byte-fallback": ["--model-type", "unigram", "--byte-fallback"],
                          "bpe-lowercase-byte-fallback": ["--model-type", "bpe", "--lowercase", "--byte-fallback"]}.items():
        run_cli("tokenize", SAMPLE, "--out", root / name, "--vocab-size", 800, "--threads", 1, "--seed", 7, *options,
                check=True)
        kinds[name] = root / name
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        pairs = {}
        for name, path in kinds.items():
            tok = Tokenizer.load(path)
            (root / f"{name}-hf").mkdir()
            write_tokenizer_files(root / f"{name}-hf", tok, 512)
            pairs[name] = (tok, transformers.AutoTokenizer.from_pretrained(root / f"{name}-hf"))
    return pairs


# --- what transformers loads ----------------------------------------------------------------------

def test_export_directory_holds_a_transformers_model(exported, run_dir):
    assert {p.name for p in exported.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json", "spm.model",
                                                    "tokenizer_config.json", "special_tokens_map.json", "bertcli_export.json", "tokenizer",
                                                    ".bertcli-owner.json"}  # the marker that lets --overwrite replace it
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["model_type"] == "bert"
    assert config["vocab_size"] == 2000 and config["pad_token_id"] == 0 and config["hidden_size"] == 32
    checkpoint = read_weights(run_dir)
    with safe_open(exported / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == set(checkpoint)  # the tied decoder is not stored
        assert all(torch.equal(f.get_tensor(k), v) for k, v in checkpoint.items())
    hf_config = transformers.AutoConfig.from_pretrained(exported)
    assert isinstance(hf_config, transformers.BertConfig)
    assert (hf_config.num_hidden_layers, hf_config.intermediate_size, hf_config.max_position_embeddings) == (2, 64, 64)


def test_transformers_loads_every_weight_and_ties_the_decoder(exported):
    model, info = transformers.BertForPreTraining.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    decoder = model.cls.predictions.decoder
    assert decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert torch.equal(decoder.bias, model.cls.predictions.bias)
    assert type(transformers.AutoModelForPreTraining.from_pretrained(exported)) is transformers.BertForPreTraining
    mlm, info = transformers.AutoModelForMaskedLM.from_pretrained(exported, output_loading_info=True)
    assert not info["missing_keys"]  # only the pooler and NSP head are left over
    classifier, info = transformers.AutoModelForSequenceClassification.from_pretrained(exported, num_labels=2,
                                                                                       output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}


# --- the numbers agree both ways ------------------------------------------------------------------

def random_batch(vocab_size: int, seed: int = 0):
    """Four sequences padded to 24 tokens, up to 3 masked positions each (one padding slot)."""
    gen = torch.Generator().manual_seed(seed)
    lengths, B, T, P = (24, 17, 9, 13), 4, 24, 3
    input_ids = torch.randint(5, vocab_size, (B, T), generator=gen)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    masked_positions = torch.zeros(B, P, dtype=torch.long)
    masked_labels = torch.full((B, P), -100)
    for b, n in enumerate(lengths):
        input_ids[b, 0], input_ids[b, n - 1], input_ids[b, n:] = CLS, SEP, 0
        attention_mask[b, :n] = 1
        token_type_ids[b, n // 2:n] = 1
        k = P if b else P - 1
        positions = (torch.randperm(n - 2, generator=gen)[:k] + 1).sort().values
        masked_positions[b, :k] = positions
        masked_labels[b, :k] = input_ids[b, positions]
        input_ids[b, positions] = MASK
    return input_ids, token_type_ids, attention_mask, masked_positions, masked_labels, torch.tensor([0, 1, 1, 0])


def assert_same_outputs(ours: BertForPreTraining, hf, vocab_size: int) -> None:
    input_ids, types, attention, positions, labels, nsp_labels = batch = random_batch(vocab_size)
    B, P = positions.shape
    full_labels = torch.full_like(input_ids, -100)
    for b in range(B):
        real = labels[b] != -100
        full_labels[b, positions[b, real]] = labels[b, real]
    with torch.no_grad():
        out = ours(*batch)
        theirs = hf(input_ids=input_ids, token_type_ids=types, attention_mask=attention, labels=full_labels,
                    next_sentence_label=nsp_labels)
    mlm = out.mlm_logits.view(B, P, -1)
    for b in range(B):
        for slot in range(P):
            if labels[b, slot] != -100:
                torch.testing.assert_close(mlm[b, slot], theirs.prediction_logits[b, positions[b, slot]], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.nsp_logits, theirs.seq_relationship_logits, atol=1e-5, rtol=0)
    # HF: mean MLM cross-entropy over labelled positions + mean NSP cross-entropy
    loss = out.mlm_loss_sum / out.masked_count + out.nsp_loss_sum / B
    assert float(loss) == pytest.approx(float(theirs.loss), abs=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_exported_model_gives_bertcli_numbers_in_transformers(run_dir, exported, attn):
    ours, _, _ = load_model(run_dir, torch.device("cpu"))
    hf = transformers.BertForPreTraining.from_pretrained(exported, attn_implementation=attn).eval()
    assert_same_outputs(ours, hf, ours.config.vocab_size)


@pytest.mark.parametrize("attn, act", [("eager", "gelu"), ("sdpa", "gelu_new")])
def test_transformers_model_gives_its_numbers_in_bertcli(tmp_path, attn, act):
    sizes = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=40, hidden_act=act)
    torch.manual_seed(0)
    source = transformers.BertForPreTraining(transformers.BertConfig(**sizes))
    with torch.no_grad():  # move every parameter off its initial value (LayerNorm 1/0, zero biases)
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    source.save_pretrained(tmp_path)
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path, attn_implementation=attn).eval()
    ours = BertForPreTraining(BertConfig(**sizes)).eval()
    load_pretrained(ours, tmp_path)
    assert_same_outputs(ours, hf, sizes["vocab_size"])


def test_fill_mask_pipeline_agrees_with_bertcli_predict(run_dir, exported):
    text = "The old man was [MASK] with the school."
    fill = transformers.pipeline("fill-mask", model=str(exported), top_k=3, device="cpu")
    theirs = fill(text)
    [ours] = predict(run_dir, [Query(text)], top_k=3)
    [mask] = ours["masks"]
    assert [p["id"] for p in mask["predictions"]] == [t["token"] for t in theirs]
    assert [p["probability"] for p in mask["predictions"]] == pytest.approx([t["score"] for t in theirs], abs=1e-6)
    assert ours["filled"] == theirs[0]["sequence"]


# --- the tokenizer --------------------------------------------------------------------------------

def same_ids(tok: Tokenizer, ours: list[int], theirs: list[int]) -> bool:
    """Equal ids; for unigram also the same pieces in another order: a tie between equally scored
    segmentations (runs like "......."), which SentencePiece's float32 sums and tokenizers' float64
    sums break differently."""
    return ours == theirs or (tok.meta["options"]["model_type"] == "unigram" and sorted(ours) == sorted(theirs))


@pytest.mark.parametrize("kind", ["bpe", "unigram-byte-fallback", "bpe-lowercase-byte-fallback"])
def test_autotokenizer_gives_bertcli_ids(tokenizers, kind):
    tok, hf = tokenizers[kind]
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    texts = ALL_FORMS + lines
    theirs = hf(texts)
    for text, ids, got, types in zip(texts, tok.encode(texts), theirs["input_ids"], theirs["token_type_ids"]):
        assert got[0] == CLS and got[-1] == SEP and same_ids(tok, ids, got[1:-1]), f"{kind}: {text!r}"
        assert types == [0] * len(got)
    firsts = [t for t in ALL_FORMS if t.strip()]  # transformers reads an empty second text as no pair at all
    for a, b in zip(firsts, reversed(firsts)):
        pair = hf(a, b)
        ids_a, ids_b = tok.encode([a, b])
        assert pair["input_ids"] == [CLS, *ids_a, SEP, *ids_b, SEP], f"{kind}: {a!r} / {b!r}"
        assert pair["token_type_ids"] == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
        assert pair["attention_mask"] == [1] * len(pair["input_ids"])


@pytest.mark.parametrize("kind", ["bpe", "bpe-lowercase-byte-fallback"])
def test_autotokenizer_agrees_on_a_sample_of_all_code_points(tokenizers, kind):
    """Every 37th code point, composed and decomposed, inside a word and alone."""
    tok, hf = tokenizers[kind]
    chars = [chr(c) for c in range(0, 0x110000, 37) if not 0xD800 <= c < 0xE000]
    texts = [f"ab{c}cd {unicodedata.normalize('NFD', c)}" for c in chars]
    theirs = hf(texts, add_special_tokens=False)["input_ids"]
    assert [t for t, ours, got in zip(texts, tok.encode(texts), theirs) if ours != got] == []


@pytest.mark.parametrize("kind", ["bpe", "unigram-byte-fallback", "bpe-lowercase-byte-fallback"])
def test_special_tokens_in_text_match_bertcli_predict(tokenizers, kind):
    """AutoTokenizer reads "[MASK]" in text as the mask, and so does `bertcli predict`."""
    tok, hf = tokenizers[kind]
    texts = ["The [MASK] sat.", "He said [MASK].", "[MASK] is here", "a[MASK]b", "  [MASK]  ", "[MASK][MASK]",
             "one [SEP] two", "ｆ[MASK]ｆ", "[MASK]\u00a0x", "end [MASK]", "[MASK]", "[CLS] x [PAD] [UNK]",
             "\"[MASK]\", he said", "[MASK]\u0301x", "[MASK]～", "\u3000[MASK]\u3000a", "[mask] [MASK ]"]
    for text in texts:
        assert hf(text)["input_ids"] == [CLS, *tok.encode_query(text), SEP], f"{kind}: {text!r}"


def test_decode_gives_sentencepiece_text(tokenizers):
    tok, hf = tokenizers["bpe"]
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:300]
    for line, ids in zip(lines, tok.encode(lines)):
        if UNK not in ids:  # SentencePiece writes [UNK] as " ⁇ ", transformers drops it as special
            assert hf.decode([CLS, *ids, SEP], skip_special_tokens=True) == tok.decode(ids)


def test_protobuf_reader_agrees_with_protobuf(tokenizer_dir):
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    model = (tokenizer_dir / "spm.model").read_bytes()
    proto = pb.ModelProto()
    proto.ParseFromString(model)
    spec = read_spm_spec(model)
    assert (spec.model_type, spec.byte_fallback, spec.normalization, spec.precompiled_charsmap, spec.add_dummy_prefix) == (
        proto.trainer_spec.model_type, proto.trainer_spec.byte_fallback, proto.normalizer_spec.name,
        proto.normalizer_spec.precompiled_charsmap, proto.normalizer_spec.add_dummy_prefix)
    patched = pb.ModelProto()
    patched.ParseFromString(spm_with_normalizer(model, add_dummy_prefix=False, remove_extra_whitespaces=False))
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    assert patched == proto


# --- back into bertcli, and the command -----------------------------------------------------------

def test_init_from_reads_a_bfloat16_export(cli, run_dir, data_dir, tmp_path):
    out = tmp_path / "hf-bf16"
    code, _, err = cli("export", "--checkpoint", run_dir, "--out", out, "--dtype", "bfloat16")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    _, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    # one step at a negligible learning rate: the run's weights are the export's, rounded to bfloat16
    run = tmp_path / "run"
    pretrain(tiny_config(data_dir, run, f"train.init_from={out}", "train.max_steps=1", "train.warmup_steps=0",
                         "train.learning_rate=1e-9", "system.eval_batches=1"), show_progress=False)
    trained, original = read_weights(run), read_weights(run_dir)
    for key, value in original.items():
        torch.testing.assert_close(trained[key], value.to(torch.bfloat16).float(), atol=1e-6, rtol=0)


def test_export_refuses_what_it_should(cli, run_dir, exported, tmp_path):
    other = tmp_path / "other-tokenizer"
    run_cli("tokenize", SAMPLE, "--out", other, "--vocab-size", 500, "--threads", 1, check=True)
    cases = [
        (["--out", exported], "is not empty; pass --overwrite"),
        (["--out", tmp_path / "x", "--dtype", "fp16"], "--dtype 'fp16' is not one of fp32, bf16"),
        (["--out", tmp_path / "x", "--tokenizer", other], "is not the tokenizer checkpoint"),
        (["--out", run_dir.parent, "--overwrite"], "writing there would delete it"),
    ]
    for args, message in cases:
        code, _, err = cli("export", "--checkpoint", run_dir, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = cli("export", "--checkpoint", tmp_path, "--out", tmp_path / "y")
    assert code == 2 and "neither a checkpoint" in err
    assert read_weights(run_dir)  # the refused --overwrite left the run alone


def test_failed_export_leaves_nothing_behind(cli, run_dir, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("bertcli.export.save_file", disk_full)
    out = tmp_path / "hf"
    code, _, err = cli("export", "--checkpoint", run_dir, "--out", out)
    assert code == 1 and "No space left on device" in err
    assert list(tmp_path.iterdir()) == []
