"""Does `bertcli finetune` score what transformers scores, and how much faster does it train?

    .venv/bin/python benchmarks/finetune_parity.py --model EXPORT --train FILE --validation FILE
        [--text-field text] [--text-pair-field F] [--label-field label] [--config YAML] [--set KEY=VALUE ...]
        [--seeds 3] [--threads 1] [--mode both|parity|speed] [--speed-rounds 6] [--speed-examples 512]

The same model directory (a `bertcli export` or any Hugging Face BERT directory) is fine-tuned
in one process by
    bertcli        finetune_one: what `bertcli finetune` runs (the model's own bertcli tokenizer);
    transformers   BertForSequenceClassification.from_pretrained with AutoTokenizer, a plain
                   training loop: the same recipe (AdamW with weight decay off biases and
                   LayerNorm, linear warmup over warmup_ratio of the steps then linear decay,
                   clipping at grad_clip, batches of batch_size padded to their own longest
                   by tokenizer.pad, longest-first truncation to max_seq_length), SDPA attention,
                   torch's default AdamW, no per-step host sync.
Both read the same examples (data.py's readers) and use the same hyperparameters (the recipe
from --config/--set, configs/finetune.yaml's defaults otherwise).

parity: each side runs --seeds seeds (their own seed streams; the seeds are not meant to give
the same draws across implementations). Printed: each seed's validation metrics, the medians and
the spreads (min … max). The medians agree when each lies within the other's spread.

speed: --speed-rounds rounds; in each, both sides train one epoch on the same first
--speed-examples training examples (the side that goes first alternates, so that load from
other processes falls on both alike). Printed: training examples/s (wall clock, and per CPU
second of this process, which other processes' load disturbs less), the median over rounds
and the median per-round ratio bertcli / transformers. Evaluation is not timed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bertcli.finetune import Fields, finetune_one, label_names, load_finetune_config, load_model_for_finetune, read_split  # noqa: E402
from bertcli.finetune.metrics import task_metrics  # noqa: E402


def hf_finetune(model_dir: str, train, validation, labels: list, cfg, seed: int) -> dict:
    """transformers' BertForSequenceClassification, trained on the recipe; returns metrics and timings."""
    import transformers

    transformers.set_seed(seed)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), classifier_dropout=cfg.model.classifier_dropout,
        attn_implementation="sdpa")
    index = {str(name): i for i, name in enumerate(labels)}

    def encoded(examples):
        pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
        enc = tok([e.text for e in examples], pairs, truncation="longest_first", max_length=cfg.data.max_seq_length)
        return [{k: enc[k][i] for k in enc} for i in range(len(examples))], \
            torch.tensor([index[str(e.label).strip()] for e in examples])

    train_rows, train_y = encoded(train)
    val_rows, val_y = encoded(validation)
    t = cfg.train
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon)
    steps = math.ceil(len(train_rows) / t.batch_size) * t.epochs
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, round(t.warmup_ratio * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    wall = cpu = 0.0
    for _ in range(t.epochs):
        w0, c0 = time.perf_counter(), time.process_time()
        order = torch.randperm(len(train_rows), generator=generator)
        for start in range(0, len(order), t.batch_size):
            idx = order[start:start + t.batch_size]
            batch = tok.pad([train_rows[i] for i in idx], return_tensors="pt")
            loss = model(**batch, labels=train_y[idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
    model.eval()
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(val_rows), 128):
            batch = tok.pad(val_rows[start:start + 128], return_tensors="pt")
            predictions.append(model(**batch).logits.argmax(-1))
    metrics = task_metrics("classification", torch.cat(predictions).numpy(), val_y.numpy(), len(labels))
    examples = len(train_rows) * t.epochs
    return {"validation": metrics, "per_second": examples / wall, "per_cpu_second": examples / cpu}


def bertcli_finetune(spec, train, validation, labels: list, cfg, seed: int) -> dict:
    epochs = []
    run = finetune_one(spec, train, validation, None, "classification", labels, cfg, seed=seed, log=epochs.append)
    examples = len(train) * cfg.train.epochs
    return {"validation": run.results["validation"], "per_second": examples / sum(e["seconds"] for e in epochs),
            "per_cpu_second": examples / sum(e["cpu_seconds"] for e in epochs)}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} ({min(values):.4f} … {max(values):.4f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a bertcli export or Hugging Face BERT directory")
    ap.add_argument("--train", required=True)
    ap.add_argument("--validation", required=True)
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--text-pair-field", default=None)
    ap.add_argument("--label-field", default="label")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=("both", "parity", "speed"), default="both")
    ap.add_argument("--speed-rounds", type=int, default=6)
    ap.add_argument("--speed-examples", type=int, default=512)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()  # its report of the dropped pretraining heads, once per run
    transformers.utils.logging.disable_progress_bar()
    cfg = load_finetune_config(Path(args.config) if args.config else None, [*args.sets, "system.device=cpu"])
    fields = Fields(args.text_field, args.text_pair_field, args.label_field)
    train = read_split(Path(args.train), "--train", fields)
    validation = read_split(Path(args.validation), "--validation", fields)
    labels = label_names(train, args.train)
    spec = load_model_for_finetune(Path(args.model))
    from bertcli.finetune import encode

    hf_tok = transformers.AutoTokenizer.from_pretrained(args.model)
    sample = validation[:200]
    ours = encode(spec.tokenizer, sample, cfg.data.max_seq_length).ids
    pairs = [e.text_pair for e in sample] if sample[0].text_pair is not None else None
    theirs = hf_tok([e.text for e in sample], pairs, truncation="longest_first", max_length=cfg.data.max_seq_length)
    same = sum(a.tolist() == b for a, b in zip(ours, theirs["input_ids"]))
    print(f"tokenizers: bertcli's and transformers' ids agree on {same}/{len(sample)} validation examples")
    print(f"model {args.model} · {len(train):,} train · {len(validation):,} validation · {len(labels)} labels · "
          f"lr {cfg.train.learning_rate:g} · {cfg.train.epochs} epochs · batch {cfg.train.batch_size} · "
          f"max_seq_length {cfg.data.max_seq_length} · {args.threads} thread(s) · torch {torch.__version__}")

    if args.mode in ("both", "parity"):
        rows = {"bertcli": [], "transformers": []}
        for seed in range(cfg.seed, cfg.seed + args.seeds):
            rows["bertcli"].append(bertcli_finetune(spec, train, validation, labels, cfg, seed))
            rows["transformers"].append(hf_finetune(args.model, train, validation, labels, cfg, seed))
            print(f"seed {seed}: " + " · ".join(f"{side} accuracy {r[-1]['validation']['accuracy']:.4f} "
                                                 f"mcc {r[-1]['validation']['matthews_correlation']:.4f}"
                                                 for side, r in rows.items()), flush=True)
        print(f"\nvalidation over {args.seeds} seeds: median (min … max)")
        for metric in rows["bertcli"][0]["validation"]:
            print(f"  {metric:22s}" + "".join(f"  {side} {spread([r['validation'][metric] for r in runs])}"
                                               for side, runs in rows.items()))
        accuracies = {side: [r["validation"]["accuracy"] for r in runs] for side, runs in rows.items()}
        agree = all(min(accuracies[b]) <= statistics.median(accuracies[a]) <= max(accuracies[b])
                    for a, b in (("bertcli", "transformers"), ("transformers", "bertcli")))
        print(f"  medians within each other's spread: {'yes' if agree else 'no'}")

    if args.mode in ("both", "speed"):
        subset = train[:args.speed_examples]
        short = load_finetune_config(Path(args.config) if args.config else None,
                                     [*args.sets, "system.device=cpu", "train.epochs=1"])
        speeds = {"bertcli": [], "transformers": []}
        runners = {"bertcli": lambda: bertcli_finetune(spec, subset, validation[:64], labels, short, cfg.seed),
                   "transformers": lambda: hf_finetune(args.model, subset, validation[:64], labels, short, cfg.seed)}
        for r in range(args.speed_rounds):
            for side in (("bertcli", "transformers") if r % 2 == 0 else ("transformers", "bertcli")):
                speeds[side].append(runners[side]())
        print(f"\nspeed: {args.speed_rounds} rounds of one epoch on {len(subset)} examples, training examples/s")
        for key, what in (("per_second", "wall clock"), ("per_cpu_second", "per CPU second")):
            ours = [s[key] for s in speeds["bertcli"]]
            theirs = [s[key] for s in speeds["transformers"]]
            ratios = [a / b for a, b in zip(ours, theirs)]
            print(f"  {what:15s} bertcli {statistics.median(ours):8.1f}  transformers {statistics.median(theirs):8.1f}"
                  f"  ratio {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f} … {max(ratios):.2f})")


if __name__ == "__main__":
    main()
