"""How much slower is `bertcli tokenize` than SentencePiece's own trainer on the same input?

Runs the real CLI as a subprocess and `spm.SentencePieceTrainer.train(input=...)` in this
process with the same settings (`bertcli.tokenizer.trainer_kwargs`), alternating, and prints
the median wall time of each and their ratio (goal: at most 1.10). The CLI's time includes
starting Python and importing its dependencies; the direct call's does not, so the startup
floor (`python -c "import sentencepiece"`) is printed too. CPU time (user + system, all
threads) is printed beside wall time because it is less disturbed by other work on a shared
machine. It also checks that both produced the same vocabulary, so that the two timings
measure the same work.

    .venv/bin/python benchmarks/tokenize_overhead.py [--input FILE] [--vocab-size N] [--repeats N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm

from bertcli.tokenizer import MODEL_FILE, TrainOptions, trainer_kwargs

# The sample book is the default so that the script runs from a fresh clone; the figures in
# docs/performance.md were taken on a larger corpus (the King James Bible, 4.1 MB), passed by path.
DEFAULT_INPUT = Path(__file__).resolve().parents[1] / "sample_data" / "botchan.txt"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_direct(path: Path, options: TrainOptions, prefix: Path) -> tuple[float, float]:
    """(wall, cpu) seconds of the trainer called in this process."""
    start, cpu = time.perf_counter(), time.process_time()
    spm.set_random_generator_seed(options.seed)
    spm.SentencePieceTrainer.train(input=str(path), model_prefix=str(prefix),
                                   input_sentence_size=options.input_sentence_size, **trainer_kwargs(options))
    return time.perf_counter() - start, time.process_time() - cpu


def time_cli(path: Path, options: TrainOptions, out: Path) -> tuple[float, float]:
    """(wall, cpu) seconds of `python -m bertcli tokenize`, start to exit."""
    argv = [sys.executable, "-m", "bertcli", "tokenize", str(path), "--out", str(out), "--overwrite",
            "--vocab-size", str(options.vocab_size), "--model-type", options.model_type,
            "--threads", str(options.threads), "--seed", str(options.seed),
            "--input-sentence-size", str(options.input_sentence_size)]
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"bertcli tokenize failed (exit {done.returncode}): {done.stderr.strip()}")
    return seconds


def time_startup() -> tuple[float, float]:
    start, cpu = time.perf_counter(), children_cpu()
    subprocess.run([sys.executable, "-c", "import sentencepiece"], check=True)
    return time.perf_counter() - start, children_cpu() - cpu


def pieces(model_file: Path) -> list[str]:
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    return sp.id_to_piece(list(range(sp.get_piece_size())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--model-type", default="bpe")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    # Threads fixed to the resolved count so that both sides train with the same parallelism.
    options = TrainOptions(vocab_size=args.vocab_size, model_type=args.model_type)
    options.threads = options.resolved_threads

    direct, cli, startup = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for _ in range(args.repeats):
            direct.append(time_direct(args.input, options, tmp / "direct"))
            cli.append(time_cli(args.input, options, tmp / "cli"))
            startup.append(time_startup())
        same = pieces(tmp / "direct.model") == pieces(tmp / "cli" / MODEL_FILE)

    mb = args.input.stat().st_size / 1e6
    print(f"input {args.input} ({mb:.1f} MB), vocab {options.vocab_size}, {options.model_type}, "
          f"{options.threads} threads, {args.repeats} repetitions alternating; median (min-max)")
    print(f"  {'':<36} {'wall':>21}   {'cpu (user+sys)':>21}")
    for name, runs in (("spm trainer, called directly", direct), ("bertcli tokenize, subprocess", cli),
                       ("python start + import sentencepiece", startup)):
        cells = [f"{statistics.median(t):6.3f} s ({min(t):.3f}-{max(t):.3f})" for t in zip(*runs)]
        print(f"  {name:<36} {cells[0]:>21}   {cells[1]:>21}")
    for i, kind in enumerate(("wall", "cpu")):
        cli_s, direct_s = statistics.median(r[i] for r in cli), statistics.median(r[i] for r in direct)
        print(f"ratio bertcli / direct, {kind}: {cli_s / direct_s:.2f} (goal <= 1.10); "
              f"overhead {cli_s - direct_s:.3f} s")
    print(f"same vocabulary from both: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
