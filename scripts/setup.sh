#!/usr/bin/env bash
# Create .venv and install freebind from this checkout with the README's command: one plain
# pip install of every extra plus the test tools, then the tests' reference implementations.
#   bash scripts/setup.sh        freebind[all,ray,test,lancedb,qdrant,milvus] (the real
#                                encoders' libraries, search, hub, api, onnx, Ray, the test
#                                tools with the openai client, the vector databases)
#   bash scripts/setup.sh core   freebind alone (the core install): enough for the mini world
# torch is pinned with torchvision in the same command so pip takes the CPU build that
# this machine has on disk instead of a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
SPEC=".[all,ray,test,lancedb,qdrant,milvus]"
[ "${1:-all}" = core ] && SPEC="."
.venv/bin/python -m pip install -q torch==2.13.0 torchvision==0.28.0 -e "$SPEC"
if [ "${1:-all}" != core ]; then
  # Test references only, never dependencies of freebind: the tests compare freebind's CLAP
  # and ImageBind with these libraries' own forward. They declare what freebind's users must
  # not get (laion-clap: numpy<2; imagebind-unofficial: torchaudio, pytorchvideo, decord), so
  # they come without their dependencies; what their model code imports is in [test].
  .venv/bin/python -m pip install -q --no-deps laion-clap imagebind-unofficial pytorchvideo==0.1.5
  # MS-CLAP's reference (msclap 1.3.4 declares numpy<2, transformers<5, torchaudio): its model
  # code imports torch, transformers, torchlibrosa and yaml (pyyaml: in [test])
  .venv/bin/python -m pip install -q --no-deps msclap==1.3.4
  # LanguageBind's reference (languagebind 0.1.0 declares transformers<5; its __init__ imports
  # cv2 and decord): its model code imports torch, transformers, peft and einops, its depth
  # processor cv2 (peft, opencv-python-headless, einops: in [test])
  .venv/bin/python -m pip install -q --no-deps languagebind==0.1.0
  # torchaudio's pure-Python Kaldi fbank, resampler and mel transforms, the references of
  # ImageBind's and LAION-CLAP's loaders: unpacked outside the environment (import torchaudio
  # still fails; tests/support/preprocess_reference.py imports these files without its native library)
  .venv/bin/python -m pip install -q --no-deps --upgrade --target .venv/reference/torchaudio \
      torchaudio==2.11.0
fi
echo "freebind installed in .venv ($(.venv/bin/python -c 'import freebind; print(freebind.__version__)'))"
