#!/usr/bin/env bash
# The whole pipeline on sample_data/: set up .venv, then tokenize → make-data → pretrain (which
# evaluates on the whole held-out split at the end and writes out/run/report.html).
# sample_data/books/ is raw text (five Project Gutenberg books cut into 195 parts, hard-wrapped,
# CRLF), read with --input-format text: one document per file, paragraphs split into sentences.
# Outputs go to out/ (replaced on every run). See the README for the time and the table it ends with.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
scripts/setup.sh text
bertcli=.venv/bin/bertcli
input=(sample_data/books --input-format text --document-per-file)
# the tokenizer's kind is pinned (bpe), so the quickstart's figures do not move with bertcli's default
$bertcli tokenize "${input[@]}" --model-type bpe --vocab-size 4000 --out out/tokenizer --overwrite
$bertcli make-data "${input[@]}" --tokenizer out/tokenizer --out out/data \
    --max-seq-length 128 --dupe-factor 5 --validation-fraction 0.08 --overwrite
$bertcli pretrain --config configs/quickstart.yaml --overwrite
echo "quickstart finished in $((SECONDS - started)) s; open out/run/report.html in a browser"
