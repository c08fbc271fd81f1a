#!/usr/bin/env bash
# The one prepared GPU check: every figure of a GPU run into one file.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out FILE]
#
# On one H100/H200 it takes about 8 minutes:
#   1. the GPU test tier (pytest -m gpu);
#   2. benchmarks/train_speed.py --device cuda --preset base, bertcli against transformers
#      (sdpa), then both compiled;
#   3. a short real pretrain of BERT-base (300 steps, compile on, bf16) on shards made here
#      from sample_data/books (2.9 MB of real text, a 16,000-piece tokenizer): non-padding tokens/s, MFU and peak memory (from metrics.jsonl
#      when the trainer writes them there), and time to first step.
# --dry-run runs the same steps on the CPU at toy sizes (compile traced with the eager backend
# by the benchmark, off in the pretrain), so that a CPU machine checks the script itself.
# Figures go to FILE (default gpu_check.txt, or gpu_check_dry_run.txt with --dry-run); the
# script stops at the first step that fails, saying which.
set -euo pipefail

DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
if [ -z "$OUT" ]; then OUT="$REPO/gpu_check$([ $DRY = 1 ] && echo _dry_run).txt"; fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [ $DRY = 1 ]; then
  DEVICE=cpu; PRESET=toy; ROUNDS=2; STEPS=20; WARMUP=5; VOCAB=2000; TEXT="$REPO/sample_data/botchan.txt"; SEQ=64
  SPEED_EXTRA=(--batches 2 --warmup 1 --compile-backend eager)
  MODEL=(--set model.hidden_size=32 --set model.num_hidden_layers=2 --set model.num_attention_heads=2
         --set model.intermediate_size=64 --set model.max_position_embeddings=64
         --set train.global_batch_size=8 --set train.micro_batch_size=8 --set system.compile=false)
  TIER_ENV=(BERTCLI_GPU_TIER_DEVICE=cpu)
  TIER_TESTS=(tests/test_gpu.py -k "bf16 or guard")  # the tier's own code, the quick part, on the CPU
else
  DEVICE=cuda; PRESET=base; ROUNDS=10; STEPS=300; WARMUP=30; VOCAB=16000; TEXT="$REPO/sample_data/books"; SEQ=128
  SPEED_EXTRA=()
  MODEL=(--set system.compile=true --set data.num_workers=4)
  TIER_ENV=()
  TIER_TESTS=(tests/test_gpu.py)
fi

section() { printf '\n== %s ==\n' "$1" | tee -a "$OUT"; }
run() {  # run a step, its output into the file; stop naming the step if it fails
  local name="$1"; shift
  if ! "$@" 2>&1 | tee -a "$OUT"; then
    echo "gpu_check.sh: step '$name' failed; its output is in $OUT" >&2
    exit 1
  fi
}

: > "$OUT"
START=$(date +%s)
{
  echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) $([ $DRY = 1 ] && echo '(dry run on the CPU, toy sizes)')"
  echo "commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$PY" -c "import torch; print('torch', torch.__version__, '·', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
  echo "load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
} | tee -a "$OUT"

section "1. GPU test tier"
run "gpu tier" env "${TIER_ENV[@]}" "$PY" -m pytest -m gpu -rs -p no:cacheprovider "${TIER_TESTS[@]}"

section "2. train_speed: bertcli vs transformers (sdpa)"
run "train_speed" "$PY" "$REPO/benchmarks/train_speed.py" --device $DEVICE --preset $PRESET --rounds $ROUNDS \
  "${SPEED_EXTRA[@]}"
section "2b. train_speed: both compiled"
run "train_speed compiled" "$PY" "$REPO/benchmarks/train_speed.py" --device $DEVICE --preset $PRESET --rounds $ROUNDS \
  --hf-compile --set system.compile=true "${SPEED_EXTRA[@]}"

section "3. a short real pretrain ($STEPS steps)"
run "tokenize" "$PY" -m bertcli tokenize "$TEXT" --out "$WORK/tok" --vocab-size $VOCAB
run "make-data" "$PY" -m bertcli make-data "$TEXT" --tokenizer "$WORK/tok" --out "$WORK/data" --max-seq-length $SEQ
LAUNCH=$(date +%s.%N)
run "pretrain" "$PY" -m bertcli pretrain --config "$REPO/configs/bert-base.yaml" --set "data.dir=$WORK/data" \
  --set "out_dir=$WORK/run" --set "system.device=$DEVICE" --set "train.max_steps=$STEPS" \
  --set "train.warmup_steps=$WARMUP" --set system.log_interval=10 --set system.eval_interval=0 \
  --set "system.checkpoint_interval=$STEPS" "${MODEL[@]}"
WALL=$("$PY" -c "import sys, time; print(time.time() - float(sys.argv[1]))" "$LAUNCH")
run "pretrain figures" "$PY" - "$WORK/run/metrics.jsonl" "$WALL" <<'EOF'
import json, sys

records = [r for r in map(json.loads, open(sys.argv[1])) if "tokens_per_second" in r]
first, last = records[0], records[-1]
steady = records[1:] or records
step_seconds = (last["elapsed"] - first["elapsed"]) / max(last["step"] - first["step"], 1)
tokens = sorted(r["tokens_per_second"] for r in steady)
print(f"steps {last['step']}, non-padding tokens/s: median {tokens[len(tokens) // 2]:,.0f} over the log windows "
      f"after the first, best {tokens[-1]:,.0f}")
first_step = first["elapsed"] - (first["step"] - 1) * step_seconds  # the first window less its other steps
start_up = float(sys.argv[2]) - last["elapsed"]  # the process's wall time outside the training loop
print(f"time to first step: {start_up + first_step:.1f} s from launch ({first_step:.1f} s of it in the first step, "
      f"compile included; start-up, data checks and the final checkpoint {start_up:.1f} s)")
keys = sorted({k for r in steady for k in r if k.startswith(("mfu", "peak"))})
for key in keys:
    values = [r[key] for r in steady if key in r]
    print(f"{key}: last {values[-1]}, max {max(values)}")
if not keys:
    print("MFU / peak memory: not in metrics.jsonl (this trainer does not write them)")
EOF
echo "wall seconds: $(( $(date +%s) - START ))" | tee -a "$OUT"
echo "all figures in $OUT"
