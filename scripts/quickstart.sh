#!/usr/bin/env bash
# The whole pipeline on sample_data/: set up .venv, then tokenize → make-data → pretrain, which
# evaluates on the whole held-out split at the end (the table it prints) and writes out/run/report.html.
# sample_data/books/ is raw text (five Project Gutenberg books cut into 195 parts, hard-wrapped,
# CRLF), read with --input-format text: one document per file, paragraphs split into sentences.
# Outputs go to out/ (replaced on every run). The README states the time and the table it ends with.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
scripts/setup.sh text
bertcli=.venv/bin/bertcli
input=(sample_data/books --input-format text --document-per-file)
# the tokenizer's kind is pinned (bpe), so the figures do not move with bertcli's default
$bertcli tokenize "${input[@]}" --model-type bpe --vocab-size 4000 --out out/tokenizer --overwrite
$bertcli make-data "${input[@]}" --tokenizer out/tokenizer --out out/data \
    --max-seq-length 128 --dupe-factor 5 --validation-fraction 0.08 --overwrite
# one evaluation, at the end, on the whole validation split (evaluations never change what is trained)
$bertcli pretrain --config configs/tiny.yaml --overwrite --set system.eval_interval=0 --set system.eval_batches=0
echo "quickstart: $((SECONDS - started)) s in all; the report is out/run/report.html (open it in a browser)"
