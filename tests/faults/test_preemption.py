"""make-data stopped by a scheduler: SIGTERM, SIGHUP and SIGINT, to its whole process group or to
its main pid, at pool start, mid-run and at the final write, with 1 and 2 workers (issue 22, §6).

Each run must end, promptly, with 128 + the signal number, leave no worker behind, and `--resume`
must then give shards byte-identical to an uninterrupted run. The signal is sent at a known
point: the child reaches it, writes a file and waits for the test's answer (another file), so no
delay is guessed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import SAMPLE
from faultlib import bertcli_process

pytestmark = pytest.mark.slow

OPTIONS = ["--window-chars", "30000", "--shard-size", "300", "--dupe-factor", "1", "--validation-fraction", "0.1",
           "--max-seq-length", "64"]

# The child stops at POINT, says so (READY), and goes on once the test has sent its signal (SENT).
# At "start" the parent is spawning its workers, which are still booting; at "mid" two shards are
# written and the workers are busy; at "final" everything is built and the manifest comes next.
AT_POINT = """
import os, time
import bertcli.make_data.run as _run, bertcli.make_data.writer as _writer
READY, SENT, POINT = {ready!r}, {sent!r}, {point!r}
def _handshake():
    import multiprocessing
    with open(READY + ".tmp", "w") as f:  # the workers alive, for the test to check
        f.write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
    os.rename(READY + ".tmp", READY)
    while not os.path.exists(SENT):  # waits for the test's file, or for the signal's handler to raise
        time.sleep(0.005)
if POINT == "start":
    import multiprocessing.context as _ctx
    _start, _pool = _ctx.SpawnProcess.start, _run.worker_pool
    def _start_then_wait(self):
        _start(self)
        if not os.path.exists(READY):
            _handshake()
    _ctx.SpawnProcess.start = _start_then_wait
    def _pool_then_wait(workers, tokenizer_dir):  # one worker: no process is spawned
        if workers == 1:
            _handshake()
        return _pool(workers, tokenizer_dir)
    _run.worker_pool = _pool_then_wait
elif POINT == "mid":
    _write, _calls = _writer.write_shard, []
    def _write_then_wait(*args, **kwargs):
        sha = _write(*args, **kwargs)
        _calls.append(1)
        if len(_calls) == 2:
            _handshake()
        return sha
    _writer.write_shard = _write_then_wait
else:
    _json = _run.write_json_atomic
    def _json_then_wait(path, obj):
        if path.name == "manifest.json":
            _handshake()
        return _json(path, obj)
    _run.write_json_atomic = _json_then_wait
"""


def outputs(d) -> dict:
    manifest = json.loads((d / "manifest.json").read_text())
    files = {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.safetensors"))}
    return {"splits": manifest["splits"], **files}


@pytest.fixture(scope="module")
def expected(tokenizer_dir, tmp_path_factory):
    from bertcli.cli import main

    out = tmp_path_factory.mktemp("preempt-ref") / "data"
    with pytest.raises(SystemExit) as done:
        main(["make-data", str(SAMPLE), "--tokenizer", str(tokenizer_dir), "--out", str(out), "--workers", "1", *OPTIONS])
    assert done.value.code in (0, None)
    return outputs(out)


def workers_left(pgid: int) -> list[str]:
    """The live processes of the group but multiprocessing's resource tracker (it leaves on its own
    when its parent's pipe closes, which it may not have noticed yet)."""
    left = []
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        exiting = fields[0] in "ZX" or not cmdline  # its memory is gone: it is on its way out
        if not exiting and int(fields[2]) == pgid and "resource_tracker" not in cmdline:
            left.append(f"{entry}: {cmdline[:100]}")
    return left


@pytest.mark.parametrize("workers, target", [(1, "pid"), (2, "pid"), (2, "group")])
@pytest.mark.parametrize("point", ["start", "mid", "final"])
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stop_signal_never_hangs_and_resume_is_exact(cli, tokenizer_dir, expected, tmp_path, workers, target,
                                                       point, name):
    out, ready, sent = tmp_path / "data", tmp_path / "ready", tmp_path / "sent"
    proc = bertcli_process(["make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--workers", workers,
                            *OPTIONS], preamble=AT_POINT.format(ready=str(ready), sent=str(sent), point=point),
                           start_new_session=True)  # its own process group, as under a scheduler
    try:
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1]
            try:
                proc.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                pass
        alive = len(ready.read_text().split())
        assert alive == {"start": workers - 1, "mid": workers, "final": 0}[point] if workers > 1 else alive == 0
        signum = getattr(signal, name)
        os.killpg(proc.pid, signum) if target == "group" else os.kill(proc.pid, signum)
        sent.touch()
        _, err = proc.communicate(timeout=120)  # a hang fails here
    finally:
        left = workers_left(proc.pid)
        if proc.poll() is None or left:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err, err
    assert not left, left  # no worker outlives it
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--workers", "1",
                       *OPTIONS, "--resume")
    assert code == 0, err
    assert outputs(out) == expected
    assert not list(out.rglob(".tmp-*"))


def test_a_worker_killed_from_outside_is_noticed_and_resume_is_exact(cli, tokenizer_dir, expected, tmp_path):
    out, ready, sent = tmp_path / "data", tmp_path / "ready", tmp_path / "sent"
    proc = bertcli_process(["make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--workers", 2, *OPTIONS],
                           preamble=AT_POINT.format(ready=str(ready), sent=str(sent), point="mid"),
                           start_new_session=True)
    try:
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1]
            try:
                proc.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                pass
        victim = int(ready.read_text().split()[0])
        os.kill(victim, signal.SIGKILL)  # as the OOM killer would
        sent.touch()
        _, err = proc.communicate(timeout=120)  # waiting for the dead worker's result forever fails here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert f"make-data worker (pid {victim}) died (killed by SIGKILL)" in err.strip().splitlines()[-1]
    code, _, err = cli("make-data", SAMPLE, "--tokenizer", tokenizer_dir, "--out", out, "--workers", "1",
                       *OPTIONS, "--resume")
    assert code == 0, err
    assert outputs(out) == expected
