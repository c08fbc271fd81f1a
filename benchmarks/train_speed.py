"""How fast is bertcli's training step against Hugging Face transformers', side by side?

    .venv/bin/python benchmarks/train_speed.py [--device cpu|cuda] [--preset tiny|base] [--data DIR]
        [--batches 8] [--steps 1] [--rounds 24] [--warmup 2] [--peak-tflops X] [--precision auto|fp32|bf16]
        [--threads N] [--hf-attention sdpa|eager] [--hf-compile] [--set system.KEY=VALUE ...]

Builds the same BERT in bertcli and in transformers (`pip install -e .[hf]`), copies bertcli's
weights into transformers', and times one training step on the same batches in one process:
forward (bf16 autocast on cuda, fp32 on cpu) → loss → backward → clip to norm 1.0 → AdamW.
Runners, timed in turn within every round (the starting runner rotates), so that load from
other processes falls on all of them alike:

    transformers   BertForPreTraining, SDPA attention (--hf-attention), torch AdamW (default
                   implementation), the masked-LM loss over the full sequence as HF computes it
    bertcli        bertcli's model and optimizer with the system settings (defaults + --set),
                   i.e. what `bertcli pretrain` runs
    bertcli-plain  the same with system.sparse_last_layer and system.fast_dropout (CPU only) off:
                   the two default settings that change which dropout masks are drawn (and nothing
                   else), so this is what the default cost before they were defaults

Reported per runner: non-padding tokens/s (median and best round), the median of the per-round
ratios to transformers, CPU seconds per step (all threads; less disturbed by other processes
than wall time), MFU by 6·N + 12·L·d·s model FLOPs per token (N parameters, L layers, d hidden,
s the padded sequence length) on non-padding tokens, against --peak-tflops or, without it, the best
dense matmul rate measured between rounds (fp32 on cpu, bf16 on cuda), and peak memory (cuda: max
allocated; cpu: peak RSS of a child process that runs only that runner). Without --data the
batches are random and full length; with --data they come from make-data shards, and the time
to produce a batch from the shards (in the training process, as with data.num_workers 0) is
reported against the step time.

Presets: tiny = 4 layers, hidden 256, 4 heads, intermediate 1024, vocab 8000, batch 32 × 128
(the CPU goal: 3× transformers); base = BERT-base, batch 256 × 128 (the GPU goal: ≥ 700k
non-padding tokens/s in bf16); modernbert = bertcli's ModernBERT against transformers'
ModernBertForMaskedLM, 4 layers, hidden 256, window 128, batch 16 × 256 (the CPU goal: ≥ 1.3×).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bertcli.batches import Batch, BatchPlan, MicroBatches
from bertcli.config import SystemConfig, TrainConfig, apply_override
from bertcli.model import IGNORE_INDEX, BertConfig, BertForPreTraining, parameter_count
from bertcli.runtime import make_runtime, speed_settings
from bertcli.train import make_optimizer, param_groups

PRESETS = {
    "tiny": dict(model=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
                 vocab_size=8000, batch_size=32, seq_len=128),
    "base": dict(model=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
                 vocab_size=30522, batch_size=256, seq_len=128),
    # benchmarks/gpu_check.sh --dry-run: the script's steps at a size that runs in seconds on a CPU
    "toy": dict(model=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
                vocab_size=500, batch_size=4, seq_len=32),
}
MAX_PREDICTIONS = 20  # make-data's default at length 128; 19 of the 20 slots are real, as round(128 × 0.15)
PLAIN = {"sparse_last_layer": False, "fast_dropout": False}


@dataclass
class Runner:
    name: str
    step: Callable[[int], None]  # one training step on batch i
    seconds: list = field(default_factory=list)  # per round
    cpu_seconds: list = field(default_factory=list)
    peak_memory: int = 0


def flops_per_token(c: BertConfig, seq_len: int, n_params: int) -> float:
    """Training FLOPs per token by 6·N + 12·L·d·s (PaLM's formula: weights + attention scores), the
    same count for both sides of the comparison (pretrain's own MFU uses bertcli/utilization.py)."""
    return 6 * n_params + 12 * c.num_hidden_layers * c.hidden_size * seq_len


def random_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> list[Batch]:
    """Full-length batches: ids in [5, vocab) (past the specials), segment B from the middle."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        B, T, P = batch_size, seq_len, MAX_PREDICTIONS
        ids = torch.randint(5, vocab_size, (B, T), generator=g)
        token_type = (torch.arange(T) >= T // 2).long().expand(B, T).clone()
        positions = torch.stack([torch.randperm(T - 2, generator=g)[:P].sort().values + 1 for _ in range(B)])
        labels = torch.randint(5, vocab_size, (B, P), generator=g)
        positions[:, -1], labels[:, -1] = 0, IGNORE_INDEX  # the padding slot
        nsp = torch.randint(0, 2, (B,), generator=g)
        batches.append(Batch(ids, token_type, torch.ones(B, T, dtype=torch.bool), positions, labels, nsp))
    return batches


def shard_batches(data_dir: Path, n: int, batch_size: int):
    """n batches as training reads them from shards, and the mean seconds to produce one (after a
    first batch, which pays for opening the shards and drawing the epoch's order)."""
    from bertcli.shards import PretrainingData

    data = PretrainingData([data_dir], "train")
    plan = BatchPlan(np.diff(data.cumulative), batch_size, batch_size, 1, seed=1234)
    source = MicroBatches(data, plan, rank=0, remask_params=None)
    source[n]
    start = time.perf_counter()
    batches = [source[k] for k in range(n)]
    return batches, (time.perf_counter() - start) / n, data


def hf_inputs(b: Batch) -> dict:
    """transformers' arguments: labels over the full sequence, -100 except at the masked positions."""
    labels = torch.full_like(b.input_ids, IGNORE_INDEX)
    labels.scatter_(1, b.masked_positions, b.masked_labels)  # padding slots write -100 at [CLS]
    return dict(input_ids=b.input_ids, token_type_ids=b.token_type_ids, attention_mask=b.attention_mask.long(),
                labels=labels, next_sentence_label=b.next_sentence_labels)


def hf_model(cfg: BertConfig, attention: str) -> torch.nn.Module:
    import transformers

    hf_cfg = transformers.BertConfig(**asdict(cfg))  # bertcli's config fields are HF's names
    return transformers.BertForPreTraining._from_config(hf_cfg, attn_implementation=attention)


def make_step(model, forward, optimizer, inputs: list[dict], autocast, loss_of) -> Callable[[int], None]:
    def step(i: int) -> None:
        with autocast():
            out = forward(**inputs[i])
        loss_of(out, inputs[i]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def bertcli_loss(out, inputs: dict) -> torch.Tensor:
    # as train.py: MLM summed over real masked tokens / their count, plus mean NSP
    return out.mlm_loss_sum / out.masked_count.clamp(min=1) + out.nsp_loss_sum / inputs["masked_positions"].size(0)


def build_runners(args, cfg: BertConfig, batches: list[Batch], system: SystemConfig, runtime) -> list[Runner]:
    device = runtime.device
    torch.manual_seed(0)
    reference = None if args.only else BertForPreTraining(cfg)  # the weights every runner starts from
    runners = []
    wanted = [args.only] if args.only else ["transformers", "bertcli", "bertcli-plain"]
    for name in wanted:
        if name == "transformers":
            model = hf_model(cfg, args.hf_attention)
            if reference is not None:
                model.load_state_dict(reference.state_dict(), strict=False)  # the tied decoder is derived, not stored
            model.to(device).train()
            optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, betas=(0.9, 0.999), eps=1e-6)
            inputs = [{k: v.to(device) for k, v in hf_inputs(b).items()} for b in batches]
            forward = torch.compile(model, backend=args.compile_backend) if args.hf_compile else model
            step = make_step(model, forward, optimizer, inputs, runtime.autocast, lambda out, _: out.loss)
        else:
            settings = replace(system, **PLAIN) if name == "bertcli-plain" else system
            model = BertForPreTraining(cfg, speed_settings(settings))
            if reference is not None:
                model.load_state_dict(reference.state_dict())
            model.to(device).train()
            optimizer = make_optimizer(model, TrainConfig(learning_rate=1e-4))
            inputs = [b.to(device).model_inputs(b.is_padded) for b in batches]
            forward = torch.compile(model, backend=args.compile_backend) if settings.compile else model
            step = make_step(model, forward, optimizer, inputs, runtime.autocast, bertcli_loss)
        runners.append(Runner(name, step))
    return runners


def check_same_loss(cfg: BertConfig, batch: Batch, attention: str) -> tuple[float, float]:
    """Eval-mode loss of 4 sequences in both implementations with the same weights (no dropout)."""
    batch = Batch(*(t[:4] for t in batch._tensors()))
    torch.manual_seed(0)
    ours = BertForPreTraining(cfg).eval()
    theirs = hf_model(cfg, attention).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    with torch.no_grad():
        a = bertcli_loss(ours(**batch.model_inputs()), batch.model_inputs())
        b = theirs(**hf_inputs(batch)).loss
    return float(a), float(b)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(runners: list[Runner], n_batches: int, steps: int, rounds: int, warmup: int,
                device: torch.device) -> tuple[list[list[int]], float]:
    """Time every runner in every round on the same batches (round k takes the next `steps` of the
    n_batches, cyclically). Return each round's batch indices and the best dense matmul FLOP/s
    measured between rounds."""
    for r in runners:
        for i in range(warmup):
            r.step(i % n_batches)
    sync(device)
    peak, schedule = 0.0, []
    for k in range(rounds):
        peak = max(peak, matmul_rate(device))
        schedule.append([(k * steps + i) % n_batches for i in range(steps)])
        for r in runners[k % len(runners):] + runners[:k % len(runners)]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start, cpu = time.perf_counter(), time.process_time()
            for i in schedule[-1]:
                r.step(i)
            sync(device)
            r.seconds.append(time.perf_counter() - start)
            r.cpu_seconds.append(time.process_time() - cpu)
            if device.type == "cuda":
                r.peak_memory = max(r.peak_memory, torch.cuda.max_memory_allocated(device))
    return schedule, peak


def matmul_rate(device: torch.device) -> float:
    """Dense matmul FLOP/s measured here: fp32 on cpu, bf16 on cuda (best of 6)."""
    n, dtype = (2048, torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_rss() -> int:
    """This process's peak RSS in bytes. VmHWM, not ru_maxrss: Linux carries a parent's peak over
    into ru_maxrss across fork and exec, VmHWM starts afresh with the new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def child_peak_rss(name: str) -> int:
    """Peak RSS (bytes) of a child process that runs only this runner: 1 warm-up + 2 steps."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--only", name, "--batches", "2", "--steps", "2", "--warmup", "1",
           "--rounds", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("peak_rss_bytes "):
            return int(line.split()[1])
    raise RuntimeError(f"child for {name} failed:\n{proc.stderr[-2000:]}")


# --- the modernbert preset: bertcli's ModernBERT against transformers' ModernBertForMaskedLM ------------

# ModernBERT's proportions at a CPU size (GeGLU 1.5× wide, no biases, no dropout); sequences of 256
# with a 128-token window, so half of each sliding layer's scores are masked.
MODERNBERT_PRESET = dict(model=dict(architecture="modernbert", hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=384, local_attention=128, max_position_embeddings=512),
                         vocab_size=8000, batch_size=16, seq_len=256)
PRESETS["modernbert"] = MODERNBERT_PRESET


def modernbert_hf_inputs(b: Batch) -> dict:
    labels = torch.full_like(b.input_ids, IGNORE_INDEX)
    labels.scatter_(1, b.masked_positions, b.masked_labels)
    return dict(input_ids=b.input_ids, attention_mask=b.attention_mask.long(), labels=labels)


def modernbert_hf_model(cfg, sparse_prediction: bool = False) -> torch.nn.Module:
    import transformers

    values = {k: v for k, v in asdict(cfg).items() if k != "architecture"}
    hf_cfg = transformers.ModernBertConfig(**values, sparse_prediction=sparse_prediction, attn_implementation="sdpa")
    return transformers.ModernBertForMaskedLM(hf_cfg)


def modernbert_main(args, system: SystemConfig, runtime) -> None:
    """Time transformers' ModernBertForMaskedLM (its default dense head, and sparse_prediction=True)
    against bertcli's ModernBERT (system settings, and with sparse_last_layer), same weights and batches."""
    from bertcli.architectures import make_config, build_model

    preset = MODERNBERT_PRESET
    batches = random_batches(args.batches, preset["batch_size"], preset["seq_len"], preset["vocab_size"])
    cfg = make_config(preset["model"], preset["vocab_size"], 0)
    torch.manual_seed(0)
    reference = build_model(cfg, sentence_task=False)
    runners = []
    for name in ("transformers", "transformers-sparse", "bertcli", "bertcli-fast"):
        if name.startswith("transformers"):
            model = modernbert_hf_model(cfg, sparse_prediction=name.endswith("sparse"))
            model.load_state_dict(reference.state_dict(), strict=False)  # the tied decoder weight is derived
            model.to(runtime.device).train()
            optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, betas=(0.9, 0.999), eps=1e-6)
            inputs = [{k: v.to(runtime.device) for k, v in modernbert_hf_inputs(b).items()} for b in batches]
            step = make_step(model, model, optimizer, inputs, runtime.autocast, lambda out, _: out.loss)
        else:
            settings = replace(system, sparse_last_layer=True) if name == "bertcli-fast" else system
            model = build_model(cfg, speed_settings(settings), sentence_task=False)
            model.load_state_dict(reference.state_dict())
            model.to(runtime.device).train()
            optimizer = make_optimizer(model, TrainConfig(learning_rate=1e-4))
            inputs = [b.to(runtime.device).model_inputs(b.is_padded) for b in batches]
            step = make_step(model, model, optimizer, inputs, runtime.autocast,
                             lambda out, _: out.mlm_loss_sum / out.masked_count.clamp(min=1))
        runners.append(Runner(name, step))
    schedule, _ = time_rounds(runners, len(batches), args.steps, args.rounds, args.warmup, runtime.device)
    with torch.no_grad():
        b0 = batches[0]
        ours = reference.eval()(**b0.model_inputs(b0.is_padded))
        theirs = modernbert_hf_model(cfg).eval()
        theirs.load_state_dict(reference.state_dict(), strict=False)
        loss_ours = float(ours.mlm_loss_sum / ours.masked_count)
        loss_theirs = float(theirs(**modernbert_hf_inputs(b0)).loss)
    print(f"preset modernbert ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, window {cfg.local_attention}, "
          f"vocab {cfg.vocab_size}, {parameter_count(reference) / 1e6:.2f}M parameters) · batch {preset['batch_size']} × "
          f"{preset['seq_len']} · random full-length batches · {runtime.device} {runtime.precision} · "
          f"{torch.get_num_threads()} threads · torch {torch.__version__}")
    print(f"same weights, eval-mode loss of batch 0: bertcli {loss_ours:.5f}, transformers {loss_theirs:.5f}")
    print(f"{args.rounds} rounds × {args.steps} steps per runner after {args.warmup} warm-up steps")
    round_tokens = [sum(batches[i].num_tokens for i in indices) for indices in schedule]
    base = runners[0]
    print(f"{'runner':20s} {'tokens/s':>9s} {'best':>9s} {'× transformers':>15s} {'cpu-s/step':>10s}")
    for r in runners:
        per_round = [tokens / s for tokens, s in zip(round_tokens, r.seconds)]
        ratio = statistics.median(b / s for b, s in zip(base.seconds, r.seconds))
        print(f"{r.name:20s} {statistics.median(per_round):9,.0f} {max(per_round):9,.0f} {ratio:15.2f} "
              f"{statistics.median(r.cpu_seconds) / args.steps:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--data", type=Path, help="a make-data output directory [default: random full-length batches]")
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled through")
    parser.add_argument("--steps", type=int, default=1, help="steps per runner per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per runner first")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for MFU [default: measured matmul rate]")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="autocast for every runner [default: bf16 on cuda, fp32 on cpu]")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--hf-attention", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="system.KEY=VALUE",
                        help="a bertcli system setting for both bertcli runners, e.g. system.compile=true")
    parser.add_argument("--hf-compile", action="store_true", help="torch.compile transformers' model too")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend wherever compile is on (eager: trace only, for dry runs)")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process for the CPU memory figure
    args = parser.parse_args()

    raw: dict = {"system": {}}
    for assignment in args.overrides:
        apply_override(raw, assignment)
    unknown = set(raw) - {"system"} | set(raw["system"]) - set(SystemConfig.__dataclass_fields__)
    if unknown:
        parser.error(f"--set takes system settings only; unknown: {', '.join(sorted(unknown))}")
    system = replace(SystemConfig(), **raw["system"])
    runtime = make_runtime(args.device, args.precision, args.threads or system.cpu_threads)
    if args.preset == "modernbert":
        return modernbert_main(args, system, runtime)
    preset = PRESETS[args.preset]
    load_seconds, vocab_size, seq_len = None, preset["vocab_size"], preset["seq_len"]
    if args.data:
        batches, load_seconds, data = shard_batches(args.data, args.batches, preset["batch_size"])
        vocab_size, seq_len = data.vocab_size, data.max_seq_length
    else:
        batches = random_batches(args.batches, preset["batch_size"], seq_len, vocab_size)
    cfg = BertConfig(vocab_size=vocab_size, **preset["model"])

    runners = build_runners(args, cfg, batches, system, runtime)
    schedule, measured_peak = time_rounds(runners, len(batches), args.steps, args.rounds, args.warmup, runtime.device)
    if args.only:
        print(f"peak_rss_bytes {peak_rss()}")
        return

    round_tokens = [sum(batches[i].num_tokens for i in indices) for indices in schedule]
    real_tokens = sum(b.num_tokens for b in batches)
    padded_len = statistics.mean(b.input_ids.size(1) for b in batches)
    all_tokens = sum(b.input_ids.numel() for b in batches)
    n_params = parameter_count(BertForPreTraining(cfg))
    flops = flops_per_token(cfg, round(padded_len), n_params)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else measured_peak
    peak_note = f"{peak / 1e12:.2f} TFLOP/s " + ("(given)" if args.peak_tflops else "(measured matmul rate)")
    if runtime.device.type == "cpu":
        for r in runners:
            r.peak_memory = child_peak_rss(r.name)
    ours, theirs = check_same_loss(cfg, batches[0], args.hf_attention)

    print(f"preset {args.preset} ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size}, "
          f"{n_params / 1e6:.2f}M parameters) · batch {preset['batch_size']} × {seq_len} · "
          f"{'shards ' + str(args.data) if args.data else 'random full-length batches'} · {runtime.device} "
          f"{runtime.precision} · {torch.get_num_threads()} threads · torch {torch.__version__}")
    print(f"bertcli system settings: compile={system.compile} sparse_last_layer={system.sparse_last_layer} "
          f"pad_vocab_multiple={system.pad_vocab_multiple}; transformers compiled: {args.hf_compile} "
          f"(bertcli-plain: {', '.join(f'{k}={v}' for k, v in PLAIN.items())})")
    print(f"same weights, eval-mode loss of batch 0: bertcli {ours:.5f}, transformers {theirs:.5f}")
    print(f"{args.rounds} rounds × {args.steps} steps per runner after {args.warmup} warm-up steps; padding share "
          f"{1 - real_tokens / all_tokens:.1%}; MFU = (6·N + 12·L·d·s) × non-padding tokens/s ÷ {peak_note}, "
          f"s = {round(padded_len)}")
    base = next(r for r in runners if r.name == "transformers")
    memory_label = "peak RSS" if runtime.device.type == "cpu" else "max allocated"
    print(f"{'runner':14s} {'tokens/s':>9s} {'best':>9s} {'× transformers':>15s} {'cpu-s/step':>10s} {'MFU':>6s} "
          f"{memory_label:>14s}")
    for r in runners:
        per_round = [tokens / s for tokens, s in zip(round_tokens, r.seconds)]
        ratio = statistics.median(b / s for b, s in zip(base.seconds, r.seconds))
        cpu_per_step = statistics.median(r.cpu_seconds) / args.steps
        median = statistics.median(per_round)
        print(f"{r.name:14s} {median:9,.0f} {max(per_round):9,.0f} {ratio:15.2f} {cpu_per_step:10.3f} "
              f"{median * flops / peak:6.1%} {r.peak_memory / 2**20:11,.0f} MiB")
    print("(MFU counts the formula's FLOPs; bertcli skips some of them — the masked-LM head at unmasked positions, "
          "with sparse_last_layer the last layer at unread positions — so its MFU can pass the matmul rate)")
    if load_seconds is not None:
        step_seconds = statistics.median(next(r for r in runners if r.name == "bertcli").seconds) / args.steps
        print(f"data loading: {load_seconds * 1e3:.1f} ms to produce a batch from shards = "
              f"{load_seconds / step_seconds:.1%} of bertcli's step ({step_seconds * 1e3:.0f} ms) when done in the "
              "training process (data.num_workers 0); workers take it off the training process")


if __name__ == "__main__":
    main()
