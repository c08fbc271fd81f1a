"""Does pretrain's start-up cost grow with the dataset? Start-up time and peak memory, 10^6 → 10^8.

    .venv/bin/python benchmarks/scale.py [--sizes 1e6 1e7 1e8] [--cache DIR] [--steps 20]
        [--workers 1] [--repeat 1] [--baseline GIT_REF] [--clean]

Generates training sets of the given numbers of instances, written directly in make-data's
shard format (100,000 instances a shard, tiny sequences of at most 16 tokens, tiled from a real
make-data run on sample_data so that every field is valid), cached under --cache (default:
$TMPDIR/bertcli-scale; the free space is checked with df first). Then runs `bertcli pretrain`
of a tiny model for --steps steps on each, in a child process, and reports:

    start-up   seconds from launching the process to its first metrics record (the first
               optimizer step done): interpreter and torch import, data and model set-up,
               DataLoader workers, the first shard verified
    set-up     the same less the imports (measured inside the process): what the dataset can
               change; on a shared machine far less noisy than start-up
    rank RSS   peak resident memory of the training process
    worker RSS peak resident memory of the largest DataLoader worker (--workers >= 1)

and each figure's ratio to the smallest size's, which should stay near 1.0: no process draws a
permutation of the whole dataset (batches.py), and a shard's sha256 is checked when it is first
opened, not every shard at every start. With --baseline REF the same runs are made with the code
of that git revision (checked out into a temporary worktree) and shown side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARD_INSTANCES = 100_000
CHILD = r"""
import atexit, json, resource, sys, time
first = []
def report():
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    setup = first[0] - imported if first else None
    print("SCALE-RSS " + json.dumps({"rank_kb": self_kb, "worker_kb": children_kb, "setup_s": setup}), file=sys.stderr, flush=True)
atexit.register(report)
from bertcli.cli import main
import bertcli.train  # the imports (interpreter, torch) are not the dataset's doing
try:
    import bertcli.runlog as logs
except ImportError:  # a baseline from before runlog.py: RunLog lived in train.py
    logs = bertcli.train
imported = time.perf_counter()
_write = logs.RunLog.write
def write(self, record, prefix=""):
    if not first:
        first.append(time.perf_counter())
    _write(self, record, prefix)
logs.RunLog.write = write
try:
    main(sys.argv[1:])
finally:
    report()
"""


def make_template(cache: Path) -> Path:
    """A real make-data directory at max_seq_length 16 from sample_data (made once)."""
    from bertcli.corpus import Corpus
    from bertcli.make_data import MakeDataOptions, make_data
    from bertcli.tokenizer import TrainOptions, train

    template = cache / "template"
    if (template / "data" / "manifest.json").is_file():
        return template / "data"
    shutil.rmtree(template, ignore_errors=True)
    sample = REPO / "sample_data" / "botchan.txt"
    train(Corpus([sample]), template / "tokenizer", TrainOptions(vocab_size=400, threads=1, seed=7))
    make_data([sample], template / "tokenizer", template / "data",
              MakeDataOptions(max_seq_length=16, dupe_factor=2, validation_fraction=0.05, workers=1), show_progress=False)
    return template / "data"


def shard_metadata(path: Path) -> dict:
    import struct
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    info = json.loads(header["__metadata__"]["bertcli"])
    return {k: v for k, v in info.items() if k not in ("format", "format_version")}


def tiled(base, n: int) -> list:
    """n instances: copies of `base` (an Examples), the last one cut short."""
    full, rest = divmod(n, len(base))
    return [base] * full + ([base.slice(0, rest)] if rest else [])


def generate(template: Path, out: Path, instances: int) -> Path:
    """A data directory of `instances` training instances: the template's, tiled into full shards."""
    from bertcli.shards import MANIFEST, load_shard, token_dtype, write_shard

    if (out / MANIFEST).is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    manifest = json.loads((template / MANIFEST).read_text())
    first = template / manifest["splits"]["train"]["shards"][0]["file"]
    base = load_shard(first)
    metadata, dtype = shard_metadata(first), token_dtype(manifest["tokenizer"]["vocab_size"])
    shutil.copytree(template, out, ignore=shutil.ignore_patterns("shard-*"))
    (out / "train").mkdir(exist_ok=True)
    for name in manifest["splits"]["validation"]["shards"]:
        shutil.copy(template / name["file"], out / name["file"])
    entries, left, k, masked = [], instances, 0, 0
    while left > 0:
        part = tiled(base, min(left, SHARD_INSTANCES))  # write_shard joins a list of parts into one shard
        name = f"train/shard-{k:05d}.safetensors"
        sha = write_shard(out / name, part, dtype, metadata)
        n, tokens = sum(map(len, part)), sum(p.num_tokens for p in part)
        entries.append({"file": name, "instances": n, "tokens": tokens, "sha256": sha})
        masked += sum(p.num_masked for p in part)
        left -= n
        k += 1
    train = manifest["splits"]["train"]
    train.update(shards=entries, instances=instances, tokens=sum(e["tokens"] for e in entries), masked_tokens=masked)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


def run_pretrain(code: Path, data: Path, run: Path, steps: int, workers: int) -> dict:
    sets = [f"data.dir={data}", f"out_dir={run}", "model.hidden_size=32", "model.num_hidden_layers=1",
            "model.num_attention_heads=2", "model.intermediate_size=64", "model.max_position_embeddings=16",
            "train.global_batch_size=64", "train.micro_batch_size=64", f"train.max_steps={steps}", "train.warmup_steps=1",
            "system.log_interval=1", "system.checkpoint_interval=100000", "system.device=cpu", "system.eval_batches=1",
            "system.cpu_threads=1", f"data.num_workers={workers}"]
    args = [a for s in sets for a in ("--set", s)]
    shutil.rmtree(run, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    metrics = run / "metrics.jsonl"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "pretrain", *args], cwd=code, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None and first is None:
        if metrics.is_file() and metrics.stat().st_size > 0:
            first = time.perf_counter() - started
        time.sleep(0.01)
    _, err = proc.communicate()
    if proc.returncode != 0:
        return {"error": err.strip().splitlines()[-1][:200] if err.strip() else f"exit {proc.returncode}"}
    rss = json.loads(next(l for l in err.splitlines() if l.startswith("SCALE-RSS")).split(" ", 1)[1])
    return {"startup_s": first, "setup_s": rss.get("setup_s"), "rank_mb": rss["rank_kb"] / 1024, "worker_mb": rss["worker_kb"] / 1024 if workers else None}


def baseline_checkout(ref: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), ref], check=True,
                   capture_output=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bertcli-scale")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--baseline", help="a git revision to compare with, e.g. main")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size and code; the least start-up time "
                        "and RSS are reported (other processes on the machine only ever add)")
    parser.add_argument("--clean", action="store_true", help="delete the generated datasets afterwards")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes]
    args.cache.mkdir(parents=True, exist_ok=True)

    template = make_template(args.cache)
    per_instance = sum((template / "train" / p.name).stat().st_size for p in (template / "train").glob("shard-*")) / \
        json.loads((template / "manifest.json").read_text())["splits"]["train"]["instances"]
    need = sum(s * per_instance for s in sizes if not (args.cache / f"n{s}" / "manifest.json").is_file())
    free = shutil.disk_usage(args.cache).free
    print(f"df {args.cache}: {free / 2**30:.1f} GiB free; generating needs about {need / 2**30:.1f} GiB "
          f"({per_instance:.0f} bytes an instance)")
    if need > free - 2 * 2**30:
        sys.exit("not enough free disk space (keeping 2 GiB spare); pass fewer --sizes or another --cache")

    codes = {"this": REPO}
    tmp = Path(tempfile.mkdtemp(prefix="bertcli-scale-"))
    if args.baseline:
        codes[args.baseline] = baseline_checkout(args.baseline, tmp / "baseline")
    results = {}
    try:
        for n in sizes:
            started = time.perf_counter()
            data = generate(template, args.cache / f"n{n}", n)
            print(f"{n:>11,} instances: data ready in {time.perf_counter() - started:.1f}s "
                  f"({sum(f.stat().st_size for f in (data / 'train').iterdir()) / 2**30:.2f} GiB)", flush=True)
            for label, code in codes.items():
                runs = [run_pretrain(code, data, tmp / f"run-{label}-{n}", args.steps, args.workers) for _ in range(args.repeat)]
                ok = [r for r in runs if "error" not in r]
                results[label, n] = {k: min(r[k] for r in ok) if ok[0][k] is not None else None for k in ok[0]} if ok else runs[0]
                print(f"    {label}: {results[label, n]}", flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "baseline")],
                           capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if args.clean:
            for n in sizes:
                shutil.rmtree(args.cache / f"n{n}", ignore_errors=True)

    print(f"\npretrain of a tiny model, {args.steps} steps, data.num_workers {args.workers}, CPU; ratio: to {sizes[0]:,} instances")
    header = f"{'code':<10} {'instances':>13} {'start-up s':>11} {'ratio':>6} {'set-up s':>9} {'ratio':>6} {'rank RSS MB':>12} {'ratio':>6} {'worker RSS MB':>14} {'ratio':>6}"
    print(header)
    for label in codes:
        first = results[label, sizes[0]]
        for n in sizes:
            r = results[label, n]
            if "error" in r:
                print(f"{label:<10} {n:>13,} failed: {r['error']}")
                continue

            def cell(key, width):
                if r.get(key) is None or first.get(key) is None:
                    return f"{'-':>{width}} {'-':>6}"
                return f"{r[key]:>{width}.2f} {r[key] / first[key]:>6.2f}"
            print(f"{label:<10} {n:>13,} {cell('startup_s', 11)} {cell('setup_s', 9)} {cell('rank_mb', 12)} {cell('worker_mb', 14)}")


if __name__ == "__main__":
    main()
