#!/usr/bin/env bash
# Set up .venv with the dev, hf and input-format extras, then run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,hf,corpora,segmenters
exec .venv/bin/python -m pytest "$@"
