#!/usr/bin/env bash
# The whole pipeline on sample_data/: set up .venv, then tokenize → make-data → pretrain → eval.
# sample_data/books/ is raw text (five Project Gutenberg books cut into 195 parts, hard-wrapped,
# CRLF), read with --input-format text: one document per file, paragraphs split into sentences.
# Outputs go to out/ (replaced on every run). About eleven minutes on a 2-core laptop CPU (one of them creating .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh text
bertcli=.venv/bin/bertcli
input=(sample_data/books --input-format text --document-per-file)
$bertcli tokenize "${input[@]}" --out out/tokenizer --vocab-size 4000 --overwrite
$bertcli make-data "${input[@]}" --tokenizer out/tokenizer --out out/data \
    --validation-fraction 0.08 --overwrite
$bertcli pretrain --config configs/tiny.yaml --overwrite
$bertcli eval --checkpoint out/run --data out/data
