"""make-data and tokenize on every input format: same documents give the same shards, any
--workers gives the same bytes, --resume after a kill, the manifest's counts, bad input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bertcli.corpus import Corpus
from bertcli.readers.base import ReaderOptions
from conftest import SAMPLE, run_cli

pa = pytest.importorskip("pyarrow", reason="the parquet extra is part of the test environment")
import pyarrow.parquet as pq  # noqa: E402

OPTIONS = ["--max-seq-length", "64", "--dupe-factor", "1", "--validation-fraction", "0.1",
           "--window-chars", "30000", "--shard-size", "300"]


def botchan_documents() -> list[list[str]]:
    return list(Corpus([SAMPLE]).documents())


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Botchan as free text (wrapped paragraphs), JSON Lines (nested field, gzip) and Parquet."""
    d = tmp_path_factory.mktemp("formats")
    paragraphs = [" ".join(doc) for doc in botchan_documents()]
    text = d / "botchan_text.txt"
    text.write_text("\n\n".join(textwrap.fill(p, 70, break_on_hyphens=False) for p in paragraphs) + "\n", encoding="utf-8")
    jsonl = d / "botchan.jsonl.gz"
    jsonl.write_bytes(gzip.compress("".join(json.dumps({"id": i, "doc": {"body": p}}) + "\n"
                                            for i, p in enumerate(paragraphs)).encode()))
    parquet = d / "botchan.parquet"
    pq.write_table(pa.table({"id": list(range(len(paragraphs))), "text": paragraphs}), parquet, row_group_size=20)
    return {"text": text, "jsonl": jsonl, "parquet": parquet}


FORMAT_ARGS = {"text": ["--input-format", "text"], "jsonl": ["--text-field", "doc.body"], "parquet": []}


def shard_bytes(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.safetensors"))}


def test_every_format_gives_the_same_documents(corpora):
    read = {fmt: list(Corpus([path], options=ReaderOptions(**({"input_format": "text"} if fmt == "text" else
                                                                 {"text_field": "doc.body"} if fmt == "jsonl" else {}))
                             ).documents()) for fmt, path in corpora.items()}
    assert read["text"] == read["jsonl"] == read["parquet"]
    assert len(read["text"]) == 78 and sum(map(len, read["text"])) > 2500  # segmented back into sentences


@pytest.mark.parametrize("fmt", ["text", "jsonl", "parquet"])
def test_make_data_is_byte_identical_for_any_workers_and_records_counts(cli, tokenizer_dir, tmp_path, corpora, fmt):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        code, _, err = cli("make-data", corpora[fmt], *FORMAT_ARGS[fmt], "--tokenizer", tokenizer_dir, "--out", out,
                           *OPTIONS, "--workers", workers)
        assert code == 0, err
        outs.append(out)
    assert shard_bytes(outs[0]) == shard_bytes(outs[1]) and len(shard_bytes(outs[0])) > 2
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    assert manifest["input_format"] == fmt
    (counts,) = manifest["input_counts"]
    assert counts["format"] == fmt and counts["documents"] == 78 and counts["records_skipped"] == 0
    assert counts["documents"] == sum(manifest["splits"][s]["documents"] for s in ("train", "validation"))
    assert counts["sentences"] == sum(manifest["splits"][s]["sentences"] for s in ("train", "validation"))
    assert manifest["reader"]["sentence_splitter"] == "blingfire"


def test_same_documents_in_any_format_give_the_same_shards(cli, tokenizer_dir, tmp_path, corpora):
    shards = {}
    for fmt in ("text", "parquet"):
        out = tmp_path / fmt
        code, _, err = cli("make-data", corpora[fmt], *FORMAT_ARGS[fmt], "--tokenizer", tokenizer_dir, "--out", out,
                           *OPTIONS, "--workers", 1)
        assert code == 0, err
        shards[fmt] = shard_bytes(out)
    assert shards["text"] == shards["parquet"]


def test_lines_input_is_unchanged_by_the_new_formats(cli, tokenizer_dir, tmp_path):
    """.txt is read as lines by default and gives the same shards as --input-format lines."""
    outs = []
    for extra in ([], ["--input-format", "lines"]):
        out = tmp_path / f"o{len(extra)}"
        assert cli("make-data", SAMPLE, *extra, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS)[0] == 0
        outs.append(out)
    assert shard_bytes(outs[0]) == shard_bytes(outs[1])
    assert json.loads((outs[0] / "manifest.json").read_text())["input_format"] == "lines"


@pytest.mark.slow  # a subprocess fault: SIGKILL mid-run
def test_resume_after_a_kill_gives_the_same_shards_and_refuses_other_reader_options(tokenizer_dir, tmp_path, corpora):
    """Killed (SIGKILL) right after its second shard, then --resume: the bytes of a run never killed."""
    args = ["make-data", corpora["jsonl"], *FORMAT_ARGS["jsonl"], "--tokenizer", tokenizer_dir, *OPTIONS, "--workers", "1"]
    full = tmp_path / "full"
    run_cli(*args, "--out", full, check=True)
    part = tmp_path / "part"
    # Die in the progress save that follows the second shard: the shard and its record are on disk.
    plant = ("import os, signal, bertcli.make_data.run as m\n"
             "real = m.write_json_atomic\n"
             "def save_then_die(path, data):\n"
             "    real(path, data)\n"
             "    if path.name == 'progress.json' and sum(len(s['shards']) for s in data['splits'].values()) == 2:\n"
             "        os.kill(os.getpid(), signal.SIGKILL)\n"
             "m.write_json_atomic = save_then_die\n")
    code = f"import sys\n{plant}\nfrom bertcli.cli import main\nmain(sys.argv[1:])\n"
    killed = subprocess.run([sys.executable, "-c", code, *map(str, args), "--out", str(part)], capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert not (part / "manifest.json").exists() and len(list(part.rglob("shard-*.safetensors"))) == 2
    other = run_cli(*args, "--out", part, "--resume", "--sentence-splitter", "sentencex")
    assert other.returncode == 2 and "started with different reader" in other.stderr
    resumed = run_cli(*args, "--out", part, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert shard_bytes(part) == shard_bytes(full)


def test_tokenize_reads_text_and_reports_skipped_records(cli, tmp_path, corpora):
    bad = tmp_path / "extra.jsonl"
    bad.write_text('{"doc": {"body": "A record. Two sentences."}}\nnot json\n', encoding="utf-8")
    code, _, err = cli("tokenize", corpora["jsonl"], bad, "--text-field", "doc.body", "--out", tmp_path / "tok",
                       "--vocab-size", "600", "--threads", "1")
    assert code == 0, err
    assert "1 of 2 record(s)" in " ".join(err.split()) and f"{bad}:2" in " ".join(err.split())
    from bertcli.tokenizer import Tokenizer
    assert Tokenizer.load(tmp_path / "tok").vocab_size == 600


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets

datasets = pytest.importorskip("datasets", reason="the datasets extra is part of the test environment")


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory) -> Path:
    paragraphs = [" ".join(doc) for doc in botchan_documents()]
    out = tmp_path_factory.mktemp("hf") / "botchan"
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": paragraphs, "id": list(range(len(paragraphs)))}),
                               "test": datasets.Dataset.from_dict({"text": paragraphs[:5], "id": list(range(5))})})
    ds.save_to_disk(str(out))
    return out


def test_a_saved_dataset_gives_the_same_shards_as_the_same_text_in_parquet(cli, tokenizer_dir, tmp_path, saved_dataset,
                                                                          corpora):
    out = tmp_path / "hf"
    code, _, err = cli("make-data", "--dataset", saved_dataset, "--tokenizer", tokenizer_dir, "--out", out, *OPTIONS,
                       "--workers", 1)
    assert code == 0, err
    ref = tmp_path / "pq"
    assert cli("make-data", corpora["parquet"], "--tokenizer", tokenizer_dir, "--out", ref, *OPTIONS, "--workers", 1)[0] == 0
    assert shard_bytes(out) == shard_bytes(ref)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_format"] == "dataset"
    assert manifest["input_counts"][0]["input"] == f"dataset {saved_dataset}:train"
    assert manifest["input_counts"][0]["records"] == 78


def test_a_saved_dataset_split_is_chosen_and_a_wrong_one_is_named(saved_dataset):
    corpus = Corpus([], options=ReaderOptions(dataset=str(saved_dataset), dataset_split="test"))
    assert len(list(corpus.documents())) == 5
    corpus = Corpus([], options=ReaderOptions(dataset=str(saved_dataset), dataset_split="validation"))
    with pytest.raises(Exception, match="no split 'validation'; its splits are train, test"):
        list(corpus.documents())


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no traceback

def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]  # (a progress bar may precede it)
    assert len(lines) == 1, err
    return " ".join(lines[0].split())


def test_bad_inputs_are_one_line_and_exit_2(cli, tokenizer_dir, tmp_path, corpora):
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"title": "a", "body": "b"}\n' * 3, encoding="utf-8")
    cases = [
        ([SAMPLE, "--input-format", "csv"], "--input-format csv is not one of: lines, text, jsonl, parquet"),
        ([nofield], f"{nofield}: no record has the field 'text'; the first record's keys are title, body"),
        ([corpora["parquet"], "--text-field", "body"], "has no column 'body'; its columns are id, text"),
        ([SAMPLE, "--input-format", "text", "--sentence-splitter", "spacy"], "--sentence-splitter spacy is not one of"),
        ([SAMPLE, "--encoding", "utf-16"], "--encoding utf-16 is not ASCII-compatible"),
        ([], "no INPUT given"),
    ]
    for args, expected in cases:
        for command in (["tokenize"], ["make-data", "--tokenizer", tokenizer_dir]):
            out = tmp_path / "out"
            code, _, err = cli(*command, *args, "--out", out)
            assert code == 2, (args, err)
            assert expected in one_error_line(err), (expected, err)
            assert not out.exists()


def test_datasets_not_installed_names_the_extra(cli, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    code, _, err = cli("make-data", "--dataset", "wikitext", "--tokenizer", tokenizer_dir, "--out", tmp_path / "o")
    assert code == 2 and "pip install 'bertcli[datasets]'" in one_error_line(err)


def test_a_dataset_not_found_offline_is_one_line(tmp_path, tokenizer_dir):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = run_cli("make-data", "--dataset", "no-such-user/no-such-dataset", "--tokenizer", tokenizer_dir,
                   "--out", tmp_path / "o", env=env)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "--dataset no-such-user/no-such-dataset: cannot load it" in line and "save_to_disk" in line


def test_a_directory_of_data_files_is_streamed_through_load_dataset(tmp_path):
    """Not a save_to_disk directory: read with load_dataset(..., streaming=True), as a cached dataset is."""
    d = tmp_path / "files"
    d.mkdir()
    (d / "train.jsonl").write_text('{"text": "One. Two."}\n{"title": "no text"}\n{"text": "Three. Four."}\n',
                                   encoding="utf-8")
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    code = ("from bertcli.corpus import Corpus\nfrom bertcli.readers.base import ReaderOptions\n"
            f"c = Corpus([], options=ReaderOptions(dataset={str(d)!r}))\n"
            "print(list(c.documents()), c.stats.inputs[0].records, c.stats.inputs[0].records_skipped)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "[['One.', 'Two.'], ['Three.', 'Four.']] 3 1"


def test_text_of_one_sentence_paragraphs_warns_with_the_text_hint(cli, tokenizer_dir, tmp_path):
    sentences = [" ".join(doc) for doc in botchan_documents()][:40]
    corpus = tmp_path / "short.txt"
    corpus.write_text("\n\n".join(p.split(". ")[0] + "." for p in sentences) + "\n", encoding="utf-8")
    code, _, err = cli("make-data", corpus, "--input-format", "text", "--tokenizer", tokenizer_dir,
                       "--out", tmp_path / "o", "--validation-fraction", "0")
    err = " ".join(err.split())
    assert code == 0 and "documents have a single sentence" in err and "--document-per-file" in err
