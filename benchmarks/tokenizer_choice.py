"""Which SentencePiece model type should `bertcli tokenize` default to? Speed and quality, side by side.

    .venv/bin/python benchmarks/tokenizer_choice.py [--corpus FILE] [--vocab-size 8000] [--steps 300]

For each of bpe and unigram, on the same corpus with the same options otherwise:
- trains the tokenizer (`bertcli tokenize`, one thread) and reports pieces per word on a text it
  was not trained on (--held-out, default sample_data/botchan.txt);
- times SentencePiece's batched encode of the corpus, one thread, CPU-seconds (best of --repeats,
  the two types interleaved so that load from other processes falls on both alike);
- builds pretraining data (`bertcli make-data`, default options) and pretrains the same small BERT
  for --steps with the same seed, then reports held-out masked-LM and next-sentence accuracy
  (`bertcli eval` on the validation split) and the training loss of the last log record.

Masked-LM accuracy is per piece, so it is comparable between the two only while pieces per word
are close; the table prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HELD_OUT = Path(__file__).resolve().parents[1] / "sample_data" / "botchan.txt"
TYPES = ("bpe", "unigram")
MODEL = ["model.hidden_size=128", "model.num_hidden_layers=2", "model.num_attention_heads=4",
         "model.intermediate_size=512", "model.max_position_embeddings=128"]


def bertcli(*args) -> str:
    proc = subprocess.run([sys.executable, "-m", "bertcli", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bertcli {' '.join(map(str, args[:2]))} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def encode_cpu_seconds(corpus: Path, tokenizer: Path) -> float:
    """CPU-seconds of one batched encode of the corpus's lines, in a fresh child process."""
    code = ("import sys, time, sentencepiece as spm\n"
            "sp = spm.SentencePieceProcessor(model_file=sys.argv[1])\n"
            "lines = [l for l in (r.strip() for r in open(sys.argv[2], encoding='utf-8', errors='replace')) if l]\n"
            "t = time.process_time(); sp.encode(lines, num_threads=1); print(time.process_time() - t)")
    out = subprocess.run([sys.executable, "-c", code, str(tokenizer / "spm.model"), str(corpus)],
                         check=True, capture_output=True, text=True)
    return float(out.stdout)


def pieces_per_word(text_file: Path, tokenizer: Path) -> float:
    """Pieces per whitespace word over a text the tokenizer was not trained on."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer / "spm.model"))
    lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(map(len, sp.encode(lines))) / sum(len(line.split()) for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True,
                        help="training text, e.g. the King James Bible (4.1 MB) as in docs/performance.md")
    parser.add_argument("--held-out", type=Path, default=HELD_OUT, help="text for pieces per word (not trained on)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps per tokenizer")
    parser.add_argument("--repeats", type=int, default=3, help="encode timings per type (best of)")
    args = parser.parse_args()
    print(f"corpus {args.corpus} ({args.corpus.stat().st_size / 1e6:.1f} MB), vocab {args.vocab_size}, "
          f"{args.steps} steps, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="tokenizer-choice-") as tmp:
        tmp = Path(tmp)
        for t in TYPES:
            tok, data, run = tmp / f"tok-{t}", tmp / f"data-{t}", tmp / f"run-{t}"
            bertcli("tokenize", args.corpus, "--out", tok, "--vocab-size", args.vocab_size, "--model-type", t,
                    "--threads", "1")
            bertcli("make-data", args.corpus, "--tokenizer", tok, "--out", data, "--workers", "1")
            rows[t] = {"tok": tok, "data": data, "run": run, "encode": float("inf")}
        for _ in range(args.repeats):  # interleaved
            for t in TYPES:
                rows[t]["encode"] = min(rows[t]["encode"], encode_cpu_seconds(args.corpus, rows[t]["tok"]))
        for t in TYPES:
            r = rows[t]
            r["ppw"] = pieces_per_word(args.held_out, r["tok"])
            bertcli("pretrain", "--config", Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml",
                    "--set", f"data.dir={r['data']}", "--set", f"out_dir={r['run']}", "--set", "system.device=cpu",
                    "--set", f"train.max_steps={args.steps}", "--set", "train.warmup_steps=30",
                    "--set", "system.eval_interval=0", *[a for m in MODEL for a in ("--set", m)])
            r["eval"] = json.loads(bertcli("eval", "--checkpoint", r["run"], "--data", r["data"], "--device", "cpu",
                                           "--json").strip().splitlines()[-1])
    mb = args.corpus.stat().st_size / 1e6
    print(f"{'type':<9}{'encode MB/cpu-s':>16}{'pieces/word':>13}{'masked-LM acc':>15}{'next-sent acc':>15}"
          f"{'eval loss':>11}")
    for t in TYPES:
        r, e = rows[t], rows[t]["eval"]
        print(f"{t:<9}{mb / r['encode']:>16.2f}{r['ppw']:>13.3f}{e['masked_lm_accuracy']:>15.4f}"
              f"{e.get('next_sentence_accuracy', float('nan')):>15.4f}{e['loss']:>11.4f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
