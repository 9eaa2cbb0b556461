#!/usr/bin/env bash
# Paper scale on one GPU, in one run of at most 8 minutes (one H200-class GPU, 16 cores, no
# network, no weights):
#   0. the CUDA test set first (pytest -m gpu, tests/test_gpu.py): a build on the device with
#      fp32/tf32/bf16 similarities and bf16 autocast, training, the router, embed, index and
#      search with a CUDA bundle, fusion of CUDA tensors, each against the CPU
#   1. pseudo tuples 2M queries x 2.3M pool items x 1024 dims, bf16 similarity with exact
#      float32 re-scoring of the candidates (benchmarks/bench_scale.py --mode retrieve)
#   2. one training epoch of 7 projectors IB (1024) -> InternVL-C (768) on 1M tuples, bf16
#      autocast, batch 4096 (benchmarks/bench_scale.py --mode train)
#   3. the ImageBind-huge architecture with random weights embedding audio and images in
#      bf16 (benchmarks/bench_imagebind.py, when that script is present)
# and prints one table (the raw JSON of each step stays in $OUT_DIR).
#
#   bash benchmarks/device.sh              # on the GPU machine
#   bash benchmarks/device.sh --dry-run    # tiny sizes on the CPU: checks the script itself
#
# Each step has its own time limit, so a slow step cannot take the others' time; a step that
# fails or runs out of time shows as such in the table.
set -u
cd "$(dirname "$0")/.."

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $arg (expected --dry-run)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT_DIR=${OUT_DIR:-$(mktemp -d -t freebind-device-XXXXXX)}
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DRY" = 1 ]; then
  DEV=cpu
  RETRIEVE=(--queries 3000 --items 4000 --dim 64 --sim bf16 --budget-mb 8)
  TRAIN=(--tuples 1500 --items 1000 --hidden 64 --batch 64 --amp bf16 --budget-mb 0 --rounds 1
         --step-reps 1)
  IMAGEBIND=(--device cpu --size tiny --precision fp32 --items 2 --rounds 1)
  LIMITS=(300 300 300 300)
else
  DEV=cuda
  RETRIEVE=(--queries 2000000 --items 2300000 --dim 1024 --sim bf16 --budget-mb 0)
  TRAIN=(--tuples 1000000 --items 1000000 --hidden 2048 --batch 4096 --amp bf16 --budget-mb 0)
  IMAGEBIND=(--device cuda --size huge --precision bf16)
  LIMITS=(200 110 110 90)
fi

step() {  # name limit command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.err"
  echo $? > "$OUT_DIR/$name.rc"
  echo $((SECONDS - t0)) > "$OUT_DIR/$name.wall"
  echo "[$name] exit $(cat "$OUT_DIR/$name.rc") after $(cat "$OUT_DIR/$name.wall") s" >&2
}

# the GPU test set: JSON summary of pytest's outcome (passed / skipped / failed counts)
step gpu-tests "${LIMITS[3]}" "$PY" - <<'PYEOF'
import json, subprocess, sys
r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                    "tests/test_gpu.py"], capture_output=True, text=True)
last = (r.stdout.strip().splitlines() or [""])[-1]
print(json.dumps({"rc": r.returncode, "summary": last}))
sys.stderr.write(r.stdout[-4000:] + r.stderr[-2000:])
sys.exit(0 if r.returncode in (0, 5) else r.returncode)
PYEOF
step retrieve "${LIMITS[0]}" "$PY" benchmarks/bench_scale.py --mode retrieve --device "$DEV" \
  "${RETRIEVE[@]}" --json
step train "${LIMITS[1]}" "$PY" benchmarks/bench_scale.py --mode train --device "$DEV" \
  "${TRAIN[@]}" --json
if [ -f benchmarks/bench_imagebind.py ]; then
  step imagebind "${LIMITS[2]}" "$PY" benchmarks/bench_imagebind.py "${IMAGEBIND[@]}" \
    --modalities audio,image --json
else
  echo "benchmarks/bench_imagebind.py is not in this checkout" > "$OUT_DIR/imagebind.skip"
fi

"$PY" - "$OUT_DIR" "$DRY" <<'EOF'
import json
import sys
from pathlib import Path

out, dry = Path(sys.argv[1]), sys.argv[2] == "1"


def load(name):
    rc = out / f"{name}.rc"
    if (out / f"{name}.skip").exists():
        return None, (out / f"{name}.skip").read_text().strip()
    code = int(rc.read_text()) if rc.exists() else -1
    if code != 0:
        why = "ran out of time" if code in (124, 137) else f"failed (exit {code})"
        tail = (out / f"{name}.err").read_text().strip().splitlines()[-1:] \
            if (out / f"{name}.err").exists() else []
        return None, why + (f": {tail[0][:120]}" if tail else "")
    try:
        return json.loads((out / f"{name}.json").read_text()), None
    except ValueError as exc:
        return None, f"unreadable output ({exc})"


def f(v, scale=1.0, p=1):
    return "-" if v is None else f"{v / scale:.{p}f}"


rows = []
data, note = load("gpu-tests")
rows.append(("GPU tests", "-", "-", "-", "-", "-",
             note if data is None else f"pytest -m gpu: {data['summary']}"))
for name in ("retrieve", "train"):
    data, note = load(name)
    if data is None:
        rows.append((name, "-", "-", "-", "-", "-", note))
        continue
    dev = data["device_name"]
    for r in data["stages"]:
        if r["stage"] == "synthetic data":
            continue
        what = (f"{r.get('queries')} x {r.get('items')} x {r.get('dim')} {r.get('sim')}"
                + (" + fp32 re-score" if r.get("rescored") else "")
                if name == "retrieve" else
                f"{r.get('tuples')} tuples, {r.get('projectors')} projectors, batch "
                f"{r.get('batch')}, amp {r.get('amp')}; step ratio over "
                f"{r.get('rounds')} interleaved rounds (unfused step "
                f"{f(r.get('reference_ratio'), p=2)}x, whole epoch "
                f"{f(r.get('epoch_ratio'), p=2)}x)")
        rows.append((r["stage"], f(r["seconds"], p=2), f(r["flop_per_s"], 1e12, 3),
                     f(r["floor_flop_per_s"], 1e12, 3), f(r["ratio"], p=2),
                     f(r["peak_device_mb"], 1024, 1) if r["peak_device_mb"] is not None
                     else f(r["peak_rss_mb"], 1024, 1) + " (RSS)", f"{what} on {dev}"))
data, note = load("imagebind")
if data is None:
    rows.append(("ImageBind", "-", "-", "-", "-", "-", note))
else:
    for r in data["rows"]:
        rows.append((f"ImageBind {r['modality']}", f(r["ours_s"], p=3),
                     f"{r['ours_items_per_s']:.1f} items/s", "-", "-",
                     f(data.get("peak_gpu_memory_gb"), p=1),
                     f"{data['size']} {data['precision']}, {r['items']} items, "
                     f"max diff vs reference {r['max_diff']:.1e}"))

head = ("stage", "seconds", "TFLOP/s", "floor TFLOP/s", "ratio", "peak GB", "what")
widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
print(("dry run (CPU, tiny sizes): " if dry else "") + "paper scale on one device")
for line in [head] + rows:
    print("  ".join(str(c).ljust(w) if i in (0, 6) else str(c).rjust(w)
                    for i, (c, w) in enumerate(zip(line, widths))))
print(f"raw output: {out}")
EOF
