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
