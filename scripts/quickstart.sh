#!/usr/bin/env bash
# The whole pipeline on sample_data/: set up .venv, then tokenize → make-data → pretrain → eval.
# Outputs go to out/ (replaced on every run). A few minutes on a laptop CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bertcli=.venv/bin/bertcli
$bertcli tokenize sample_data/botchan.txt --out out/tokenizer --vocab-size 4000 --overwrite
$bertcli make-data sample_data/botchan.txt --tokenizer out/tokenizer --out out/data \
    --validation-fraction 0.05 --overwrite
$bertcli pretrain --config configs/tiny.yaml --overwrite
$bertcli eval --checkpoint out/run --data out/data
