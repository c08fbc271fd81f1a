"""benchmarks/gpu_check.sh --dry-run: the GPU script's steps on the CPU at toy sizes, so that the script
itself is known to work before a GPU is spent on it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "figures.txt"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    for section in ("1. GPU test tier", "2. train_speed", "2b. train_speed: both compiled", "3. a short real pretrain"):
        assert f"== {section}" in text, section
    assert "passed" in text  # the tier's CPU-runnable tests ran
    assert text.count("× transformers") == 2  # both speed tables
    assert "non-padding tokens/s: median" in text and "time to first step:" in text


def test_gpu_check_refuses_an_unknown_argument():
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--fast"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown argument --fast" in proc.stderr
