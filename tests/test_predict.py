import json
import shutil

import pytest
import torch
import yaml

from bertcli.checkpoint import list_checkpoints
from bertcli.evaluate import load_model
from bertcli.tokenizer import Tokenizer
from conftest import run_cli

MASK, CLS, SEP = 4, 2, 3


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.load(tokenizer_dir)


def reference(run_dir, ids, segment_b_start=None):
    """Probabilities at every position (full-sequence MLM head) and P(is next), one unpadded example."""
    model, _, _ = load_model(run_dir, torch.device("cpu"))
    input_ids = torch.tensor([ids])
    types = torch.zeros_like(input_ids)
    if segment_b_start is not None:
        types[0, segment_b_start:] = 1
    with torch.no_grad():
        h, pooled = model.bert(input_ids, types, torch.ones_like(input_ids))
        probs = model.cls.predictions(h[0], model.bert.embeddings.word_embeddings.weight).softmax(-1)  # (T, V)
        is_next = model.cls.seq_relationship(pooled)[0].softmax(-1)[0]
    return probs, float(is_next)


# --- encoding: the special tokens written in text are those tokens, as in the exported tokenizer --

@pytest.mark.parametrize("text", ["The cat sat on the mat.", "  leading and trailing  ", "multiple   spaces\tand tabs",
                                  "naïve café ｆｕｌｌ", "[mask] and [MASK without a bracket", ""])
def test_text_without_special_tokens_encodes_as_bertcli_does(tok, text):
    assert tok.encode_query(text) == tok.encode([text])[0]


def test_special_tokens_in_text_become_their_ids(tok):
    sp = tok.sp
    assert tok.encode_query("the [MASK] sat") == sp.encode("the") + [MASK] + sp.encode("sat")
    assert tok.encode_query("one [SEP] two") == sp.encode("one") + [SEP] + sp.encode("two")
    assert tok.encode_query("[MASK][MASK]") == [MASK, MASK]
    assert tok.encode_query("  [MASK]  ") == [MASK]


def test_text_right_after_a_mask_continues_the_word(tok):
    """No `▁` word prefix after [MASK] unless a space follows it, as in the training data."""
    assert tok.pieces(tok.encode_query("said [MASK].")) == tok.pieces(tok.sp.encode("said")) + ["[MASK]", "."]
    assert tok.pieces(tok.encode_query("[MASK]ing")) == ["[MASK]", "ing"]
    assert tok.pieces(tok.encode_query("[MASK] the")) == ["[MASK]", "▁the"]
    assert tok.pieces(tok.encode_query("the[MASK]")) == ["▁the", "[MASK]"]


# --- predict ------------------------------------------------------------------------------------

def test_json_output_has_top_k_sorted_probabilities_per_mask(cli, run_dir, tok):
    code, out, err = cli("predict", "--checkpoint", run_dir, "--json", "--top-k", "3", "--device", "cpu",
                         "The [MASK] sat on the [MASK].", "I went [MASK]")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in results] == ["The [MASK] sat on the [MASK].", "I went [MASK]"]
    assert [len(r["masks"]) for r in results] == [2, 1]
    for r in results:
        assert r["next"] is None and "is_next_probability" not in r
        assert isinstance(r["filled"], str) and "[MASK]" not in r["filled"]
        for mask in r["masks"]:
            probs = [p["probability"] for p in mask["predictions"]]
            assert len(probs) == 3
            assert probs == sorted(probs, reverse=True)
            assert all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
            assert [p["token"] for p in mask["predictions"]] == tok.pieces([p["id"] for p in mask["predictions"]])


def test_probabilities_equal_the_full_sequence_head(cli, run_dir, tok):
    text = "It was a [MASK] day, and [MASK] went home."
    code, out, _ = cli("predict", "--checkpoint", run_dir, "--json", "--top-k", "4", "--device", "cpu", text)
    assert code == 0
    result = json.loads(out)
    ids = [CLS, *tok.encode_query(text), SEP]
    probs, _ = reference(run_dir, ids)
    for mask, position in zip(result["masks"], [p for p, i in enumerate(ids) if i == MASK]):
        assert mask["position"] == position
        top_p, top_ids = probs[position].topk(4)
        assert [p["id"] for p in mask["predictions"]] == top_ids.tolist()
        assert [p["probability"] for p in mask["predictions"]] == pytest.approx(top_p.tolist(), abs=1e-6)


def test_next_sentence_probability(cli, run_dir, tok):
    first, second = "He opened the [MASK].", "It was raining outside."
    code, out, _ = cli("predict", "--checkpoint", run_dir, "--json", "--device", "cpu", first, "No mask here.",
                       "--next", second)
    assert code == 0
    with_mask, without_mask = (json.loads(line) for line in out.splitlines())
    assert with_mask["next"] == second and without_mask["masks"] == []  # NSP alone needs no [MASK]
    a = [CLS, *tok.encode_query(first), SEP]
    _, expected = reference(run_dir, a + tok.encode_query(second) + [SEP], segment_b_start=len(a))
    assert with_mask["is_next_probability"] == pytest.approx(expected, abs=1e-6)
    assert 0 <= without_mask["is_next_probability"] <= 1


def test_file_input_with_tab_separated_second_sentences(cli, run_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("The [MASK] was cold.\tSo he made a fire.\n\nA [MASK] for one.\n", encoding="utf-8")
    code, out, _ = cli("predict", "--checkpoint", run_dir, "--json", "--file", texts, "--device", "cpu", "First [MASK].")
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert [(r["text"], r["next"]) for r in results] == [
        ("First [MASK].", None), ("The [MASK] was cold.", "So he made a fire."), ("A [MASK] for one.", None)]
    assert "is_next_probability" in results[1] and "is_next_probability" not in results[2]


def test_table_goes_to_stderr(cli, run_dir):
    code, out, err = cli("predict", "--checkpoint", run_dir, "--device", "cpu", "The [MASK] sat.", "--next", "It slept.")
    assert code == 0
    assert out == ""
    assert "The [MASK] sat." in err and "P(is next) =" in err and "#5" in err


def test_a_moved_checkpoint_reads_the_tokenizer_it_carries(cli, run_dir, tmp_path):
    moved = tmp_path / "step"
    shutil.copytree(list_checkpoints(run_dir)[-1], moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["data"]["dir"] = str(tmp_path / "gone")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = cli("predict", "--checkpoint", moved, "x [MASK]", "--json", "--device", "cpu")
    assert code == 0, err
    assert len(json.loads(out)["masks"]) == 1


def test_a_checkpoint_of_another_format_version_or_without_its_tokenizer_is_refused(cli, run_dir, tokenizer_dir, tmp_path):
    """One reader per format: a checkpoint of format_version 1 is refused, not read the old way."""
    moved = tmp_path / "step"
    shutil.copytree(list_checkpoints(run_dir)[-1], moved)
    state = json.loads((moved / "trainer_state.json").read_text())
    (moved / "trainer_state.json").write_text(json.dumps(state | {"format_version": 1}))
    code, _, err = cli("predict", "--checkpoint", moved, "x [MASK]", "--device", "cpu")
    assert code == 2 and "format_version 1" in err and "reads 2" in err and err.count("\n") == 1
    (moved / "trainer_state.json").write_text(json.dumps(state))
    shutil.rmtree(moved / "tokenizer")
    code, _, err = cli("predict", "--checkpoint", moved, "x [MASK]", "--device", "cpu")
    assert code == 2 and "--tokenizer" in err and err.count("\n") == 1
    code, out, err = cli("predict", "--checkpoint", moved, "x [MASK]", "--tokenizer", tokenizer_dir, "--json", "--device", "cpu")
    assert code == 0, err
    assert len(json.loads(out)["masks"]) == 1


@pytest.mark.parametrize("args, message", [
    (["no mask in this text"], "has no [MASK]"),
    (["a [MASK]", "--top-k", "0"], "--top-k 0"),
    (["a [MASK]", "b [MASK]", "c [MASK]", "--next", "x", "--next", "y"], "--next was given 2 times for 3 texts"),
    (["--file", "missing.txt"], "does not exist"),
    ([], "nothing to predict"),
    (["[MASK] " + "word " * 80], "more than the model's 64 positions"),
])
def test_bad_input_is_one_line_and_exit_2(cli, run_dir, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("predict", "--checkpoint", run_dir, "--device", "cpu", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_not_a_checkpoint_exits_2_without_traceback(tmp_path):
    proc = run_cli("predict", "--checkpoint", tmp_path, "a [MASK]")
    assert proc.returncode == 2
    assert "neither a checkpoint nor a run directory" in proc.stderr and "Traceback" not in proc.stderr


def test_file_input_is_bounded(cli, run_dir, tmp_path, monkeypatch):
    """/dev/zero, a long line, too many lines, bad bytes: one line each, memory and time bounded."""
    import bertcli.predict as predict_module

    monkeypatch.setattr(predict_module, "MAX_FILE_BYTES", 1 << 20)  # keeps the test fast; the logic is the same
    cases = {"/dev/zero": "larger than 1 MB (or never ends)"}
    long_line = tmp_path / "long.txt"
    long_line.write_text("a [MASK] day\n" + "x" * (predict_module.MAX_LINE_CHARS + 1) + "\n")
    cases[long_line] = "long.txt, line 2: 100,001 characters"
    many = tmp_path / "many.txt"
    monkeypatch.setattr(predict_module, "MAX_QUERIES", 10)
    many.write_text("a [MASK] day\n" * 11)
    cases[many] = "holds 11 texts, more than the 10"
    latin = tmp_path / "latin.txt"
    latin.write_bytes("a [MASK] day\ncaf\xe9 [MASK]\n".encode("latin-1"))
    cases[latin] = "is not UTF-8 text (line 2)"
    cases[tmp_path] = "is a directory"
    for path, message in cases.items():
        code, _, err = cli("predict", "--checkpoint", run_dir, "--device", "cpu", "--file", path)
        assert code == 2, (path, err)
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# --- words: the table shows the text a piece stands for, joined as it reads -----------------------

def test_a_piece_is_shown_as_the_text_it_reads_as(tok):
    from bertcli.predict import word_with

    ids = [CLS, *tok.encode_query("the"), MASK, SEP]  # "the[MASK]": the mask continues the word
    at = ids.index(MASK)
    assert word_with(tok, ids, at, tok.vocab.index("ing")) == "theing"
    assert word_with(tok, ids, at, tok.vocab.index("▁the")) == "the"  # a word of its own: ▁ dropped
    ids = [CLS, *tok.encode_query("[MASK]ing"), SEP]  # a word-starting candidate stands alone
    assert tok.pieces(ids[1:3]) == ["[MASK]", "ing"]
    assert word_with(tok, ids, 1, tok.vocab.index("▁the")) == "the"
    assert word_with(tok, ids, 1, tok.vocab.index("ing")) == "ing"  # nothing before it but [CLS]
    assert word_with(tok, ids, 1, SEP) == "[SEP]"


def test_wordpiece_pieces_read_without_their_marker():
    from bertcli.tokenizer.wordpiece import WordPieceTokenizer

    assert WordPieceTokenizer.piece_text(None, "##ing") == "ing" and WordPieceTokenizer.piece_text(None, "walk") == "walk"


def test_table_shows_words_and_json_keeps_pieces(cli, run_dir, tok):
    code, out, _ = cli("predict", "--checkpoint", run_dir, "--json", "--top-k", "5", "--device", "cpu", "The [MASK] sat.")
    predictions = json.loads(out)["masks"][0]["predictions"]
    assert all(p["token"] == tok.vocab[p["id"]] for p in predictions)  # raw pieces and ids
    assert all("▁" not in p["word"] for p in predictions)
    code, _, err = cli("predict", "--checkpoint", run_dir, "--top-k", "5", "--device", "cpu", "The [MASK] sat.")
    assert code == 0
    for p in predictions:
        assert p["word"] in err
    assert not any(p["token"] in err for p in predictions if p["token"].startswith("▁"))
