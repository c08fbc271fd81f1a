"""How fast is `bertcli make-data`, against SentencePiece's own encode speed?

    .venv/bin/python benchmarks/make_data_speed.py [--corpus FILE] [--tokenizer DIR] [--scale 10] [--headline-only]

First, the headline: CPU-seconds per MB of `bertcli make-data` (one worker, dupe factor 5), for
the whole process tree from interpreter start to exit (start-up, reading, tokenizing, pairing,
masking, writing, hashing), against two references:
- Google's create_pretraining_data.py, as its anchor figure: 15.2 CPU-s on a 6.7 MB corpus
  (measured on this machine kind with an 8,000-piece vocabulary; TensorFlow is not installed
  here, so it is not rerun: --google-cpu-seconds/--google-mb change the anchor);
- the floor: SentencePiece's batched encode of the same lines alone (one thread, in a process
  of its own, timed around the encode call only).
The two bertcli figures are taken interleaved, best of --repeats, so load from other processes
falls on both alike. Then the tables below.

Runs make-data as a subprocess (so its peak RSS is its own) with 1 and 2 workers on the corpus
and on a `--scale`× concatenation of it written to a temporary directory, and times
SentencePiece's batched `encode` (one thread) on the same lines. Throughput is raw text bytes
per second of the run as make-data times it (reading, tokenizing, pairing, masking, writing
and hashing shards; not the interpreter's start-up, which the wall column includes). With
`--repeats N` each measurement is the best of N, which is the one least disturbed by other
processes on a shared machine. Without `--tokenizer`, an 8,000-piece tokenizer of bertcli's
default type is trained on the corpus first (--vocab-size).

Anchors: Google's create_pretraining_data.py does about 0.32 MB/s on one core; make-data aims
at a third of pure-encode speed or better at dupe factor 5.

A second table runs the same documents in three input formats, side by side: `lines` (the
corpus as it is), `text` (each document joined into a paragraph hard-wrapped at 76 columns, so
the sentence splitter has to find the sentences again) and `jsonl` (one record per document,
segmented too). MB/s there counts the lines corpus's bytes, the same text in every format, so the
ratio to `lines` is the cost of reading the format and segmenting it; the goal is at least 0.5.
`--formats-only` skips the first table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The sample book is the default so that the script runs from a fresh clone; the figures in
# docs/performance.md were taken on a larger corpus (the King James Bible, 4.1 MB), passed by path.
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "sample_data" / "botchan.txt"


def train_tokenizer(corpus: Path, out: Path, vocab_size: int) -> Path:
    """bertcli's default tokenizer type at this vocabulary size."""
    subprocess.run([sys.executable, "-m", "bertcli", "tokenize", str(corpus), "--out", str(out), "--vocab-size", str(vocab_size)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def encode_speed(corpus: Path, tokenizer: Path, repeats: int) -> tuple[float, float]:
    """MB/s of SentencePiece's batched encode on the corpus's sentences, one thread: (wall, CPU).

    Measured in a child process: a child started later inherits this process's peak RSS in its
    ru_maxrss (Linux counts the forking parent's high-water mark), so this one stays small.
    """
    out = subprocess.run([sys.executable, __file__, "--encode-only", str(corpus), str(tokenizer), str(repeats)],
                         check=True, capture_output=True, text=True)
    wall, cpu = map(float, out.stdout.split())
    return wall, cpu


def _encode_only(corpus: str, tokenizer: str, repeats: str) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(Path(tokenizer) / "spm.model"))
    with open(corpus, encoding="utf-8", errors="replace") as f:
        lines = [line for line in (raw.strip() for raw in f) if line]
    wall = cpu = float("inf")
    for _ in range(int(repeats)):
        start, cpu_start = time.perf_counter(), time.process_time()
        sp.encode(lines, num_threads=1)
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - cpu_start)
    mb = Path(corpus).stat().st_size / 1e6
    print(mb / wall, mb / cpu)


def run_make_data(corpus: Path, tokenizer: Path, out: Path, workers: int, dupe_factor: int, extra=()) -> dict:
    """One make-data run in a child process: its own timing, CPU time and peak RSS."""
    cmd = [sys.executable, "-m", "bertcli", "make-data", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
           "--workers", str(workers), "--dupe-factor", str(dupe_factor), *extra]
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
        # wait4 gives this child's own resource use (with its reaped pool workers), not the sum
        # over every child this script has run, as getrusage(RUSAGE_CHILDREN) would.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            log.seek(0)
            sys.exit(f"make-data failed ({proc.returncode}):\n{log.read().decode(errors='replace')}")
    manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out)
    return {"seconds": manifest["seconds"], "cpu_seconds": manifest["cpu_seconds"], "wall": wall,
            "instances": sum(s["instances"] for s in manifest["splits"].values()), "rss_mb": usage.ru_maxrss / 1024,
            "tree_cpu_seconds": usage.ru_utime + usage.ru_stime}


def best_run(corpus, tokenizer, out, workers, dupe_factor, repeats, extra=()) -> dict:
    runs = [run_make_data(corpus, tokenizer, out, workers, dupe_factor, extra) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "rss_mb": max(r["rss_mb"] for r in runs)}


def headline(args, tokenizer: Path, tmp: Path) -> None:
    """bertcli's CPU-seconds per MB against Google's anchor and against the encode floor."""
    mb = args.corpus.stat().st_size / 1e6
    tree = floor = float("inf")
    for _ in range(args.repeats):  # interleaved: the same load on both
        tree = min(tree, run_make_data(args.corpus, tokenizer, tmp / "out", 1, args.dupe_factor)["tree_cpu_seconds"])
        floor = min(floor, mb / encode_speed(args.corpus, tokenizer, 1)[1])
    google = args.google_cpu_seconds / args.google_mb  # CPU-s per MB
    print(f"headline: {args.corpus.name} {mb:.1f} MB, dupe factor {args.dupe_factor}, 1 worker, best of {args.repeats}")
    print(f"  bertcli make-data, whole process tree  {tree:6.2f} CPU-s  {tree / mb:6.3f} CPU-s/MB")
    print(f"  floor: batched encode of the same text {floor:6.2f} CPU-s  {floor / mb:6.3f} CPU-s/MB   "
          f"bertcli / floor = {tree / floor:.2f}")
    print(f"  Google create_pretraining_data.py      anchor {args.google_cpu_seconds} CPU-s on {args.google_mb} MB = "
          f"{google:.3f} CPU-s/MB (not rerun here)")
    print(f"  per CPU-second, bertcli = {google / (tree / mb):.1f}x Google (goal 20x)")


def format_variants(corpus: Path, tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """The corpus's documents as lines (itself), as wrapped free text, and as JSON Lines."""
    documents, doc = [], []
    for line in corpus.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            doc.append(line.strip())
        elif doc:
            documents.append(doc)
            doc = []
    if doc:
        documents.append(doc)
    text, jsonl = tmp / "corpus-text.txt", tmp / "corpus.jsonl"
    text.write_text("\n\n".join(textwrap.fill(" ".join(d), 76, break_on_hyphens=False) for d in documents) + "\n",
                    encoding="utf-8")
    jsonl.write_text("".join(json.dumps({"id": i, "text": " ".join(d)}) + "\n" for i, d in enumerate(documents)),
                     encoding="utf-8")
    return {"lines": (corpus, []), "text": (text, ["--input-format", "text"]), "jsonl": (jsonl, [])}


def compare_formats(args, tokenizer: Path, tmp: Path) -> None:
    variants = format_variants(args.corpus, tmp)
    mb = args.corpus.stat().st_size / 1e6
    header = (f"{'format':<8}{'file MB':>8}{'workers':>8}{'MB/s':>7}{'run s':>7}{'cpu s':>7}{'MB/cpu-s':>10}"
              f"{'peak RSS MB':>13}{'vs lines':>10}{'(cpu)':>7}")
    print(f"\nthe same {mb:.1f} MB of documents in each input format (MB counts the lines corpus):")
    print(header)
    print("-" * len(header))
    base: dict[int, tuple[float, float]] = {}
    for workers in args.workers:
        for name, (path, extra) in variants.items():
            r = best_run(path, tokenizer, tmp / "out", workers, args.dupe_factor, args.repeats, extra)
            speed, cpu_speed = mb / r["seconds"], mb / r["cpu_seconds"]
            base.setdefault(workers, (speed, cpu_speed))
            print(f"{name:<8}{path.stat().st_size / 1e6:>8.1f}{workers:>8}{speed:>7.2f}{r['seconds']:>7.2f}"
                  f"{r['cpu_seconds']:>7.2f}{cpu_speed:>10.2f}{r['rss_mb']:>13.0f}"
                  f"{speed / base[workers][0]:>10.2f}{cpu_speed / base[workers][1]:>7.2f}")
    print("vs lines: MB/s over the lines run's (CPU-based in brackets); text and jsonl include sentence splitting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--tokenizer", type=Path, help="a bertcli tokenizer directory [default: train one on the corpus]")
    parser.add_argument("--scale", type=int, default=10, help="the larger corpus is this many copies of --corpus")
    parser.add_argument("--dupe-factor", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--formats-only", action="store_true", help="only the input-format comparison")
    parser.add_argument("--headline-only", action="store_true", help="only the headline (Google anchor and floor)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="of the tokenizer trained without --tokenizer")
    parser.add_argument("--google-cpu-seconds", type=float, default=15.2, help="Google's anchor: CPU-s ...")
    parser.add_argument("--google-mb", type=float, default=6.7, help="... on a corpus of this many MB")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="make-data-speed-") as tmp:
        tmp = Path(tmp)
        tokenizer = args.tokenizer or train_tokenizer(args.corpus, tmp / "tokenizer", args.vocab_size)
        meta = json.loads((tokenizer / "bertcli_tokenizer.json").read_text())
        print(f"tokenizer {tokenizer} (vocab {meta['vocab_size']}, {meta['options']['model_type']}), "
              f"dupe_factor {args.dupe_factor}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        if not args.formats_only:
            headline(args, tokenizer, tmp)
        if args.headline_only:
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            return
        big = tmp / f"{args.corpus.stem}-x{args.scale}.txt"
        with open(big, "wb") as f:
            text = args.corpus.read_bytes()
            for _ in range(args.scale):
                f.write(text if text.endswith(b"\n") else text + b"\n")
                f.write(b"\n")  # a blank line: the copies are separate documents
        if args.formats_only:
            compare_formats(args, tokenizer, tmp)
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            return
        header = (f"{'corpus':<14}{'MB':>6}{'encode MB/s':>13}{'workers':>8}{'MB/s':>7}{'inst/s':>9}{'run s':>7}"
                  f"{'wall s':>8}{'cpu s':>7}{'MB/cpu-s':>10}{'peak RSS MB':>13}{'vs encode':>11}")
        print(header)
        print("-" * len(header))
        for corpus in (args.corpus, big):
            mb = corpus.stat().st_size / 1e6
            encode, encode_cpu = encode_speed(corpus, tokenizer, args.repeats)
            for workers in args.workers:
                r = best_run(corpus, tokenizer, tmp / "out", workers, args.dupe_factor, args.repeats)
                speed = mb / r["seconds"]
                print(f"{corpus.name[:13]:<14}{mb:>6.1f}{encode:>6.2f} ({encode_cpu:>4.2f}){workers:>8}{speed:>7.2f}"
                      f"{r['instances'] / r['seconds']:>9,.0f}{r['seconds']:>7.2f}{r['wall']:>8.2f}{r['cpu_seconds']:>7.2f}"
                      f"{mb / r['cpu_seconds']:>10.2f}{r['rss_mb']:>13.0f}"
                      f"{speed / encode:>5.2f} ({mb / r['cpu_seconds'] / encode_cpu:.2f})")
        print("MB/s and inst/s: per second of the run as make-data times it; wall s adds start-up. cpu s: make-data's")
        print("CPU time, workers included; MB/cpu-s is the one-core speed an idle machine would give. encode MB/s:")
        print("wall (CPU). vs encode: make-data MB/s over encode MB/s, wall (CPU-based).")
        compare_formats(args, tokenizer, tmp)
        print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on the machine slow every column)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--encode-only"]:
        _encode_only(*sys.argv[2:5])
    else:
        main()
