"""Bounded memory on hostile input: a 100 MB single line and a gzip bomb keep tokenize and
make-data under a stated peak RSS, measured in a child process that runs under an address-space
limit (so a regression fails here instead of swapping the machine)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE

pytestmark = pytest.mark.slow  # memory bombs, each in a subprocess

resource = pytest.importorskip("resource", reason="peak RSS is measured with the resource module (POSIX)")
if not Path("/proc/self/status").exists():
    pytest.skip("peak RSS is read from /proc (Linux)", allow_module_level=True)

PEAK_RSS_LIMIT_MB = 512  # the bound bertcli promises for reading any input
ADDRESS_SPACE_LIMIT = 3 * 2**30  # generous: libraries map far more than they touch

CHILD = f"""
import atexit, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_LIMIT}, {ADDRESS_SPACE_LIMIT}))
def report():
    # VmHWM, not RUSAGE_SELF: after fork and exec, ru_maxrss starts at the forking parent's peak
    # (here pytest's), while VmHWM belongs to this address space. Children (the tokenizer's
    # trainer) were forked from this small process, so their ru_maxrss is their own.
    with open("/proc/self/status") as status:
        own = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.stderr.write(f"PEAK_RSS_KB {{peak}}\\n")
atexit.register(report)
from bertcli.cli import main
main(sys.argv[1:])
"""


def run_measured(*args) -> tuple[int, str, float]:
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True, timeout=600)
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])
    return proc.returncode, proc.stderr, peak_kb / 1024


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    line = d / "one_line.txt"
    with line.open("wb") as f:
        f.write(b"A first sentence before the long line.\n")
        for _ in range(100):
            f.write(b"word " * 209_716)  # 100 x ~1 MB, no newline
        f.write(b"\nAnd one after it.\n")
    bomb = d / "bomb.txt.gz"
    with gzip.GzipFile(bomb, "wb", compresslevel=1) as f:
        chunk = b"a" * 2**20
        for _ in range(512):  # 512 MB of one line from a file of about 2 MB
            f.write(chunk)
    return {"line": line, "bomb": bomb}


def test_inputs_are_what_they_claim(bombs):
    assert bombs["line"].stat().st_size > 100 * 10**6
    assert bombs["bomb"].stat().st_size < 5 * 2**20


@pytest.mark.parametrize("kind", ["line", "bomb"])
def test_make_data_stays_under_the_bound_and_names_the_line(bombs, tokenizer_dir, tmp_path, kind):
    code, err, peak_mb = run_measured("make-data", SAMPLE, bombs[kind], "--tokenizer", tokenizer_dir,
                                      "--out", tmp_path / "data", "--workers", "1", "--dupe-factor", "1")
    assert code == 0, err
    line = 2 if kind == "line" else 1
    assert f"{bombs[kind]}:{line}" in " ".join(err.split()) and "longer than 8 MiB" in err
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"


@pytest.mark.parametrize("kind", ["line", "bomb"])
def test_tokenize_stays_under_the_bound(bombs, tmp_path, kind):
    code, err, peak_mb = run_measured("tokenize", SAMPLE, bombs[kind], "--out", tmp_path / "tok",
                                      "--vocab-size", "500", "--threads", "1")
    assert code == 0, err
    assert "longer than 8 MiB" in err
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"


# --- safety round 3 (issue 22 §9): bombs in the new readers and published-model inputs -------------

@pytest.fixture(scope="module")
def parquet_bombs(tmp_path_factory) -> dict[bool, Path]:
    """40 x 10 MB strings in one row group (400 MB of text), zstd: ~1 KB with a dictionary, ~14 KB without."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    d = tmp_path_factory.mktemp("parquet_bombs")
    table = pa.table({"text": ["A first short text. With two sentences."] + ["a" * (10 << 20)] * 40})
    for dictionary in (True, False):
        pq.write_table(table, d / f"bomb{dictionary}.parquet", compression="zstd", use_dictionary=dictionary)
    return {k: d / f"bomb{k}.parquet" for k in (True, False)}


@pytest.mark.slow
@pytest.mark.parametrize("dictionary", [True, False])
def test_a_parquet_row_group_of_huge_strings_stays_under_the_bound(parquet_bombs, tokenizer_dir, tmp_path, dictionary):
    """With a dictionary, one 10 MB text repeated in 40 rows: the record cap is applied by Arrow
    length in slices bounded by the longest entry, before a row becomes a Python string. Without,
    the 400 MB page cannot be read in parts: the metadata's 30,000-fold inflation refuses it first."""
    path = parquet_bombs[dictionary]
    assert path.stat().st_size < 1 << 16
    code, err, peak_mb = run_measured("make-data", SAMPLE, path, "--tokenizer", tokenizer_dir, "--out",
                                      tmp_path / "data", "--workers", "1", "--dupe-factor", "1")
    if dictionary:
        assert code == 0, err
        assert "40 of 41 record(s)" in err and "longer than 8 MiB" in err
    else:
        assert code == 1 and "decompression bomb" in err and "Traceback" not in err, err
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"


@pytest.mark.slow
def test_an_inflating_pytorch_model_bin_is_refused_before_loading(tmp_path):
    """A zip record that inflates ~256 KB to 256 MiB (the issue's was 2 MB to 2 GiB, the same
    mechanism): its declared size is read from the zip's directory and refused before torch.load
    allocates anything."""
    import zipfile

    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert", "vocab_size": 100}')
    with zipfile.ZipFile(d / "pytorch_model.bin", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(256):
                f.write(block)
    assert (d / "pytorch_model.bin").stat().st_size < 2 << 20
    code, err, peak_mb = run_measured_python(f"from bertcli.weights import read_weights; read_weights({str(d)!r})")
    assert code == 1 and "declare 268,435,456 bytes" in err and "Traceback" not in err, err
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"


@pytest.mark.slow
@pytest.mark.parametrize("source", ["/dev/zero", "huge_vocab", "many_pieces"])
def test_add_words_from_dev_zero_and_a_huge_vocab_stay_bounded(tmp_path, source):
    pytest.importorskip("tokenizers")
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(5)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if source != "/dev/zero":  # 300 MB (3M pieces) took 1.4 GB: 40 MB is refused by its size, 2M pieces by their count
        with open(tmp_path / "vocab.txt", "ab") as f:
            f.write(b"piece\n" * 7_000_000 if source == "huge_vocab" else b"p\n" * 2_000_000)
        args = ["tokenize", "--from", tmp_path / "vocab.txt", "--lowercase", "--out", tmp_path / "tok"]
    else:
        args = ["tokenize", "--from", tmp_path / "vocab.txt", "--lowercase", "--add-words", source,
                "--out", tmp_path / "tok"]
    code, err, peak_mb = run_measured(*args)
    assert code == 2 and ("larger than" in err or "pieces, more than" in err), err
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"


def run_measured_python(code: str) -> tuple[int, str, float]:
    """Like run_measured, for a snippet; a BertcliError is printed as the CLI prints it."""
    body = CHILD.replace("from bertcli.cli import main\nmain(sys.argv[1:])\n", "")
    body += ("from bertcli.errors import BertcliError\ntry:\n    " + code +
             "\nexcept BertcliError as e:\n    sys.stderr.write(f'error: {e}\\n'); sys.exit(e.exit_code)\n")
    proc = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=600)
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB ", 1)[1].split()[0])
    return proc.returncode, proc.stderr, peak_kb / 1024


@pytest.mark.slow
def test_a_line_just_under_the_cap_of_one_letter_words_stays_under_the_bound(tokenizer_dir, tmp_path):
    """A 7.8 MB line (under the 8 MiB cap, so it is read, split and tokenized: 3.9M tokens) is the
    worst a line can cost; the skipped 100 MB line above is cheap only because it is skipped."""
    path = tmp_path / "one_letter.txt"
    path.write_text("A first sentence here.\n" + "a " * 3_900_000 + "\nAnd the last one.\n")
    code, err, peak_mb = run_measured("make-data", path, "--tokenizer", tokenizer_dir, "--out", tmp_path / "data",
                                      "--workers", "1", "--dupe-factor", "1")
    assert code == 0, err
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
