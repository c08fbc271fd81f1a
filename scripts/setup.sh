#!/usr/bin/env bash
# Create .venv with bertcli and the given extras (default: none), e.g. `scripts/setup.sh dev,hf`.
#
# torch is the one heavy dependency. If a CPU wheel is already on this machine (pip's find-links),
# it is taken first so that a CPU-only machine does not download a multi-GB CUDA build; everywhere
# else pip resolves torch as usual (a CUDA build on Linux, for users with a GPU). Set
# BERTCLI_TORCH_SPEC to force a particular torch, e.g. BERTCLI_TORCH_SPEC="torch==2.6.0".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${BERTCLI_TORCH_SPEC:-}" ]; then
    $pip install -q "$BERTCLI_TORCH_SPEC"
  else
    # A local wheel only (--no-index): fails fast where there is none, and then the
    # project install below fetches torch from the index.
    $pip install -q --no-index --no-deps "torch>=2.6" 2>/dev/null || true
  fi
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
$pip install -q -e "$spec"
.venv/bin/python -c "import bertcli, torch; print(f'bertcli {bertcli.__version__} with torch {torch.__version__} in .venv')"
