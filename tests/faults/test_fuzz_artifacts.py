"""Hypothesis mutations of every field of the files bertcli reads from others: a published model's
config.json, a Hugging Face tokenizer.json, a bertcli_tokenizer.json and a saved dataset's
state.json. Each mutation (a field replaced by a value of another type, out of range, non-finite,
deep, huge or markup-like; a field deleted; a field added) gives exit 0 or one error line with exit
1 or 2: never a traceback, never a non-finite value accepted, never a signal death — the examples
run in a child process, so a crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("tokenizers")

HERE = Path(__file__).resolve().parent
EXAMPLES = 10  # per artifact: the whole file stays within a minute or two (more on a loaded machine)

CHILD = r'''
import io, json, math, shutil, sys, tempfile, contextlib
from pathlib import Path
from hypothesis import HealthCheck, given, settings, strategies as st
from bertcli.cli import main

KIND, EXAMPLES = sys.argv[1], int(sys.argv[2])
ROOT = Path(tempfile.mkdtemp())
SAMPLE = Path(sys.argv[3]) / "sample_data" / "botchan.txt"


def run(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
    return code, err.getvalue()


def paths(node, prefix=()):
    """Every field of a JSON document, as key paths (list items by index), the first 8 of a long list."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:8]):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


def mutate(doc, path, action, value):
    doc = json.loads(json.dumps(doc))
    node = doc
    for k in path[:-1]:
        node = node[k]
    if action == "delete":
        del node[path[-1]]
    elif action == "add" and isinstance(node, dict):
        node["extra_" + str(path[-1])] = value
    else:
        node[path[-1]] = value
    return doc


DEEP = "@@DEEP@@"
values = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 0.5]),
    st.text(max_size=20), st.sampled_from(["", "0", "gelu", "[bold]x[/bold] :smile:", "\ud800", "x" * 5000, DEEP,
                                           "../../etc/passwd", "/etc/passwd", "WordPiece", "bert"]),
    st.lists(st.integers(0, 5), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def write(path, doc):
    text = json.dumps(doc, ensure_ascii=False, allow_nan=True)
    text = text.replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")


def check(code, err, doc):
    assert "Traceback" not in err, err[-3000:]
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    if code == 0:
        assert not errors, err
        text = json.dumps(doc, allow_nan=True)
        for bad in ("Infinity", "NaN"):  # a non-finite number accepted would be a silent corruption
            if bad in text and KIND == "config":
                raise AssertionError(f"{bad} accepted in {text[:300]}")
    else:
        assert code in (1, 2) and len(errors) == 1 and len(err) < 5000, (code, err[-3000:])


def setup_tokenizer_json():
    d = ROOT / "hf"
    d.mkdir()
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(3)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s"]
    doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [
               {"id": 4, "content": "[UNK]", "special": True}],
           "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                          "strip_accents": None, "lowercase": True},
           "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                     "max_input_chars_per_word": 100, "vocab": {p: i for i, p in enumerate(vocab)}}}
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    return d / "tokenizer.json", doc, lambda n: run("tokenize", "--from", d, "--out", ROOT / f"tok{n}")


def setup_bertcli_tokenizer():
    code, err = run("tokenize", SAMPLE, "--out", ROOT / "tok", "--vocab-size", 300, "--threads", 1)
    assert code == 0, err
    (ROOT / "in.txt").write_text(SAMPLE.read_text(encoding="utf-8")[:3000])
    meta = ROOT / "tok" / "bertcli_tokenizer.json"
    return meta, json.loads(meta.read_text()), lambda n: run(
        "make-data", ROOT / "in.txt", "--tokenizer", ROOT / "tok", "--out", ROOT / f"data{n}", "--workers", 1,
        "--dupe-factor", 1, "--validation-fraction", 0)


def setup_state_json():
    import datasets
    datasets.disable_progress_bars()
    texts = [t for t in SAMPLE.read_text(encoding="utf-8").split("\n\n")[:60] if t.strip()]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(ROOT / "ds"))
    state = ROOT / "ds" / "state.json"
    return state, json.loads(state.read_text()), lambda n: run(
        "tokenize", "--dataset", ROOT / "ds", "--out", ROOT / f"tok{n}", "--vocab-size", 120, "--threads", 1)


def setup_config():
    import torch
    from safetensors.torch import save_file
    from bertcli.model import BertConfig, BertForPreTraining
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(5)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted({w.lower().strip(".,;:!?\"'()") for w in SAMPLE.read_text(encoding="utf-8").split()[:4000]} - {""})
    vocab = list(dict.fromkeys(vocab))[:400]
    d = ROOT / "bert"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    sizes = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64)
    model = BertForPreTraining(BertConfig(vocab_size=len(vocab), **sizes))
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if "decoder" not in k
               and "position_ids" not in k}, str(d / "model.safetensors"))
    config = {"architectures": ["BertForPreTraining"], "model_type": "bert", "vocab_size": len(vocab),
              "pad_token_id": 0, "type_vocab_size": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
              "position_embedding_type": "absolute", **sizes}
    (d / "config.json").write_text(json.dumps(config))
    code, err = run("tokenize", "--from", d, "--out", ROOT / "tok")
    assert code == 0, err
    (ROOT / "in.txt").write_text(SAMPLE.read_text(encoding="utf-8")[:20000])
    code, err = run("make-data", ROOT / "in.txt", "--tokenizer", ROOT / "tok", "--out", ROOT / "data",
                    "--workers", 1, "--dupe-factor", 1, "--max-seq-length", 32)
    assert code == 0, err
    sets = [f"data.dir={ROOT / 'data'}", f"train.init_from={d}", "train.global_batch_size=4",
            "train.micro_batch_size=4", "train.max_steps=1", "train.warmup_steps=0", "system.device=cpu",
            "system.eval_batches=1", "system.log_interval=1", "system.checkpoint_interval=1"]
    return d / "config.json", config, lambda n: run(
        "pretrain", *(a for s in sets + [f"out_dir={ROOT / f'run{n}'}"] for a in ("--set", s)))


def fuzz_all():
    target, base, command = {"tokenizer_json": setup_tokenizer_json, "bertcli_tokenizer": setup_bertcli_tokenizer,
                             "state_json": setup_state_json, "config": setup_config}[KIND]()
    if KIND == "tokenizer_json":
        write(target, base)
    fields = sorted(set(paths(base)), key=str)
    code, err = command("base")
    assert code == 0, err  # the untouched artifact is valid: every failure below is the mutation's
    counter = iter(range(10**6))

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(fields), st.sampled_from(["replace", "replace", "delete", "add"]), values)
    def fuzz(path, action, value):
        doc = mutate(base, path, action, value)
        write(target, doc)
        code, err = command(next(counter))
        check(code, err, doc)

    fuzz()
    print("FUZZ_OK", len(fields))


if __name__ == "__main__":  # sentencepiece's trainer starts a process that re-imports this module
    fuzz_all()
'''


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["config", "tokenizer_json", "bertcli_tokenizer", "state_json"])
def test_mutated_artifacts_never_crash(kind):
    if kind == "state_json":
        pytest.importorskip("datasets")
    repo = HERE.parents[1]
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(EXAMPLES), str(repo)],
                          capture_output=True, text=True, timeout=600, cwd=repo)
    assert proc.returncode == 0 and "FUZZ_OK" in proc.stdout, (proc.returncode, proc.stdout[-3000:],
                                                                proc.stderr[-5000:])
