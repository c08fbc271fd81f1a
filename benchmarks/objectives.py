"""nsp vs sop vs mlm on the same corpus and budget: held-out masked-LM accuracy and tokens/s.

    .venv/bin/python benchmarks/objectives.py [--corpus FILE] [--steps 300] [--threads 1] [--out DIR]

Makes data of each objective from the same corpus with the same tokenizer, seed and options
(max_seq_length 128, dupe factor 5, 10 % of the documents held out: the same documents for
every objective, as the held-out choice depends only on the seed), trains the tiny model of
configs/tiny.yaml for the same number of steps of the same batch (32 sequences) with a constant
learning rate after warmup, and evaluates every model on the held-out split of the nsp data and
of the mlm data, so that all three are compared on the same text. Prints, per objective:
optimizer steps, CPU seconds of the training, non-padding tokens seen and per second (wall and
CPU), held-out masked-LM accuracy on both held-out sets, and the sentence task's accuracy where
there is one. The baseline row is always guessing the most frequent masked token.

On a shared machine the wall-clock rates move with the load (printed before and after); CPU
seconds and per-CPU-second rates are the steadier figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = ("nsp", "sop", "mlm")
TINY = ["model.hidden_size=128", "model.num_hidden_layers=2", "model.num_attention_heads=4",
        "model.intermediate_size=512", "model.max_position_embeddings=128"]


def bertcli(*args) -> None:
    subprocess.run([sys.executable, "-m", "bertcli", *map(str, args)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def train_and_evaluate(data: dict[str, Path], objective: str, work: Path, steps: int, threads: int) -> dict:
    import torch

    from bertcli.config import load_config
    from bertcli.evaluate import run_eval
    from bertcli.train import pretrain

    config = load_config(None, [
        f"data.dir={data[objective]}", f"out_dir={work / ('run-' + objective)}", *TINY,
        "train.global_batch_size=32", "train.micro_batch_size=32", f"train.max_steps={steps}",
        f"train.warmup_steps={steps // 10}", "train.schedule=constant", "train.learning_rate=1e-3",
        "system.device=cpu", f"system.cpu_threads={threads}", f"system.log_interval={steps}",
        f"system.checkpoint_interval={steps}", "system.eval_interval=0", "system.eval_batches=1"])
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    summary = pretrain(config, overwrite=True, show_progress=False)
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    row = {"objective": objective, "steps": summary["step"], "tokens": summary["tokens_seen"],
           "train_seconds": summary["elapsed"], "cpu_seconds": cpu, "wall_seconds": wall}
    row["tokens_per_second"] = summary["tokens_seen"] / summary["elapsed"]
    row["tokens_per_cpu_second"] = summary["tokens_seen"] / cpu
    off = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    for held_out in ("nsp", "mlm"):
        metrics = run_eval(Path(config.out_dir), data[held_out], "validation", 64, 0, torch.device("cpu"), off)
        row[f"mlm_accuracy_on_{held_out}"] = metrics["masked_lm_accuracy"]
        row[f"baseline_on_{held_out}"] = metrics["baseline_masked_lm_accuracy"]
        row[f"masked_tokens_on_{held_out}"] = metrics["masked_tokens"]
        for key in ("next_sentence_accuracy", "sentence_order_accuracy"):
            if key in metrics:
                row[key] = metrics[key]
    own = run_eval(Path(config.out_dir), data[objective], "validation", 64, 0, torch.device("cpu"), off)
    for key in ("next_sentence_accuracy", "sentence_order_accuracy"):
        if key in own:
            row["sentence_task_accuracy"] = own[key]
            row["sentence_task_baseline"] = own[f"baseline_{key}"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "sample_data" / "botchan.txt")
    parser.add_argument("--tokenizer", type=Path, help="a bertcli tokenizer (default: train 4,000 pieces on the corpus)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per run (the machine may be shared)")
    parser.add_argument("--out", type=Path, help="keep the data and runs here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bertcli-objectives-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = args.tokenizer
    if tokenizer is None:
        tokenizer = work / "tokenizer"
        bertcli("tokenize", args.corpus, "--out", tokenizer, "--vocab-size", 4000, "--threads", 1, "--overwrite")
    data = {}
    for objective in OBJECTIVES:
        data[objective] = work / f"data-{objective}"
        bertcli("make-data", args.corpus, "--tokenizer", tokenizer, "--out", data[objective], "--objective", objective,
                "--validation-fraction", 0.1, "--workers", 1, "--overwrite")
    load_before = os.getloadavg()[0]
    rows = [train_and_evaluate(data, objective, work, args.steps, args.threads) for objective in OBJECTIVES]
    load_after = os.getloadavg()[0]

    print(f"corpus {args.corpus.name}, tiny model (configs/tiny.yaml sizes), {args.steps} steps × 32 sequences of ≤ 128 "
          f"tokens each, {args.threads} thread(s); load average {load_before:.1f} → {load_after:.1f} on {os.cpu_count()} cores")
    header = (f"{'objective':9} {'steps':>5} {'cpu s':>7} {'tokens':>9} {'tok/s':>7} {'tok/cpu s':>9} "
              f"{'MLM acc (nsp held-out)':>22} {'MLM acc (mlm held-out)':>22} {'sentence task':>15}")
    print(header)
    for r in rows:
        sentence = f"{r['sentence_task_accuracy']:.3f} ({r['sentence_task_baseline']:.3f})" if "sentence_task_accuracy" in r else "—"
        print(f"{r['objective']:9} {r['steps']:5d} {r['cpu_seconds']:7.1f} {r['tokens']:9,d} {r['tokens_per_second']:7,.0f} "
              f"{r['tokens_per_cpu_second']:9,.0f} {r['mlm_accuracy_on_nsp']:22.4f} {r['mlm_accuracy_on_mlm']:22.4f} {sentence:>15}")
    r = rows[0]
    print(f"{'baseline':9} {'':5} {'':7} {'':9} {'':7} {'':9} {r['baseline_on_nsp']:22.4f} {r['baseline_on_mlm']:22.4f}   "
          f"(most frequent masked token; held-out masked tokens: {r['masked_tokens_on_nsp']:,} / {r['masked_tokens_on_mlm']:,})")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    print(f"data and runs in {work}")


if __name__ == "__main__":
    main()
