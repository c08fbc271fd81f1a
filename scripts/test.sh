#!/usr/bin/env bash
# Set up .venv with the dev and hf extras, then run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,hf
exec .venv/bin/python -m pytest "$@"
