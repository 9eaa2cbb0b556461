#!/usr/bin/env bash
# Create .venv and install freebind with everything its tests and the mini world need.
# torch is pinned with torchvision in the same command so pip takes the CPU build that
# this machine has on disk instead of a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0 torchvision==0.28.0 -e ".[test,eval,parquet]"
echo "freebind installed in .venv ($(.venv/bin/python -c 'import freebind; print(freebind.__version__)'))"
