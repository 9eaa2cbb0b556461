"""Forward time of freebind's ImageBind (freebind.spaces.imagebind_model) against the
reference implementation (the imagebind-unofficial package) on the same inputs, per
modality, with random weights shared by both models (one copy in memory)::

    .venv/bin/python benchmarks/bench_imagebind.py                   # CPU, mid-size, fp32
    .venv/bin/python benchmarks/bench_imagebind.py --size tiny       # seconds
    .venv/bin/python benchmarks/bench_imagebind.py --device cuda     # huge, bf16, items/s
    .venv/bin/python benchmarks/bench_imagebind.py --json > ib.json

Each modality runs both models ``--rounds`` times, alternating which goes first, and keeps
each model's fastest run (shared machines are noisy); ``speedup`` = reference time / freebind
time. Outputs are compared on every run: ``max_diff`` is the largest difference of the
L2-normalised embeddings (fp32: must stay under 1e-4). ``speedup_cpu`` is the same ratio
of the fastest CPU times (process time, all threads): on a shared machine the wall time
also counts waiting for a core. Text is timed twice: captions of
6–24 tokens (typical captions) and rows filling all 77 positions (the worst case for
freebind, whose text tower stops at the batch's last end-of-text token). On a GPU both
models run in ``--precision`` (default bf16) and the rows report items/s.

Needs the reference: ``pip install --no-deps imagebind-unofficial`` plus timm, einops, iopath,
ftfy, regex.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from freebind.spaces.imagebind_model import arch  # noqa: E402

#: Same code paths as huge, narrower and shallower, so the CPU comparison takes minutes.
MID = dict(vision_embed_dim=512, vision_num_blocks=8, vision_num_heads=8,
           text_embed_dim=512, text_num_blocks=8, text_num_heads=8,
           audio_embed_dim=384, audio_num_blocks=6, audio_num_heads=6,
           depth_embed_dim=384, depth_num_blocks=6, depth_num_heads=6,
           thermal_embed_dim=384, thermal_num_blocks=6, thermal_num_heads=6,
           imu_embed_dim=256, imu_num_blocks=4, imu_num_heads=4, out_embed_dim=512)
TINY = arch(64, 2, 2, 64)
MODALITIES = ("image", "video", "text", "text77", "audio", "depth", "thermal", "imu")
TOWER = {"image": "vision", "video": "vision", "text77": "text"}


def models(arch: dict, device, dtype):
    """A seeded random reference model and freebind's model holding the same tensors."""
    import torch

    from freebind.spaces import imagebind_model
    from tests.test_real_helpers import reference_imagebind

    torch.manual_seed(0)
    ref = reference_imagebind().ImageBindModel(**arch).eval()
    ref.to(device=device, dtype=dtype)
    ours = imagebind_model.build(arch, device="meta")
    ours.load_state_dict(ref.state_dict(), assign=True, strict=True)
    return ref, ours.eval()


def make_inputs(modality: str, n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    if modality in ("text", "text77"):
        ids = torch.zeros(n, 77, dtype=torch.long)
        for i in range(n):
            length = 76 if modality == "text77" else int(torch.randint(6, 25, (1,), generator=g))
            ids[i, 0] = 49406
            ids[i, 1:length] = torch.randint(1, 49400, (length - 1,), generator=g)
            ids[i, length] = 49407
        return ids
    shape = {"image": (3, 224, 224), "video": (15, 3, 2, 224, 224),
             "audio": (3, 1, 128, 204), "depth": (1, 224, 224), "thermal": (1, 224, 224),
             "imu": (6, 2000)}[modality]
    return torch.randn(n, *shape, generator=g)


def timed(model, tower, x, sync):
    start, cpu = time.perf_counter(), time.process_time()
    out = model({tower: x})[tower]
    sync()
    timed.cpu = time.process_time() - cpu
    return time.perf_counter() - start, out


def bench(modality, ref, ours, n, rounds, device, dtype):
    import torch
    import torch.nn.functional as F

    tower = TOWER.get(modality, modality)
    x = make_inputs(modality, n).to(device)
    if x.is_floating_point():
        x = x.to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = {"ref": math.inf, "ours": math.inf}
    best_cpu = {"ref": math.inf, "ours": math.inf}
    diff = 0.0
    with torch.inference_mode():
        timed(ref, tower, x, sync)  # warm-up
        timed(ours, tower, x, sync)
        for r in range(rounds):
            order = (("ref", ref), ("ours", ours)) if r % 2 == 0 else (("ours", ours),
                                                                      ("ref", ref))
            outs = {}
            for name, model in order:
                seconds, outs[name] = timed(model, tower, x, sync)
                best[name] = min(best[name], seconds)
                best_cpu[name] = min(best_cpu[name], timed.cpu)
            a = F.normalize(outs["ours"].float(), dim=-1)
            b = F.normalize(outs["ref"].float(), dim=-1)
            diff = max(diff, float((a - b).abs().max()))
    return {"modality": modality, "items": n, "ref_s": best["ref"], "ours_s": best["ours"],
            "speedup": best["ref"] / best["ours"], "ref_cpu_s": best_cpu["ref"],
            "ours_cpu_s": best_cpu["ours"],
            "speedup_cpu": best_cpu["ref"] / max(best_cpu["ours"], 1e-9),
            "ref_items_per_s": n / best["ref"],
            "ours_items_per_s": n / best["ours"], "max_diff": diff}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--size", choices=("tiny", "mid", "huge"), default=None,
                    help="architecture (default: mid on CPU, huge on GPU)")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                    help="default: fp32 on CPU, bf16 on GPU")
    ap.add_argument("--items", type=int, default=None,
                    help="items per modality (video: a fifth; default 4 on CPU, 64 on GPU)")
    ap.add_argument("--rounds", type=int, default=None, help="default 5 on CPU, 10 on GPU")
    ap.add_argument("--modalities", default=",".join(MODALITIES))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from freebind.spaces import imagebind_model

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here")
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or ("huge" if gpu else "mid")
    precision = args.precision or ("bf16" if gpu else "fp32")
    if precision == "fp16" and not gpu:
        raise SystemExit("--precision fp16 needs a GPU")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    arch = {"tiny": TINY, "mid": MID, "huge": imagebind_model.HUGE}[size]
    items = args.items or (64 if gpu else 4)
    rounds = args.rounds or (10 if gpu else 5)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
    start = time.perf_counter()
    ref, ours = models(arch, device, dtype)
    build_s = time.perf_counter() - start
    rows = []
    for modality in args.modalities.split(","):
        if modality not in MODALITIES:
            raise SystemExit(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
        n = max(1, items // 5) if modality == "video" else items
        row = bench(modality, ref, ours, n, rounds, device, dtype)
        row["equal"] = row["max_diff"] < (1e-4 if precision == "fp32" else 5e-2)
        rows.append(row)
        if not args.json:
            print(f"{modality:8s} {n:3d} items: reference {row['ref_s']:8.3f} s "
                  f"({row['ref_items_per_s']:8.2f}/s)  freebind {row['ours_s']:8.3f} s "
                  f"({row['ours_items_per_s']:8.2f}/s)  speedup {row['speedup']:5.2f}x "
                  f"(CPU time {row['speedup_cpu']:5.2f}x)  "
                  f"max diff {row['max_diff']:.1e}", flush=True)
    speedups = [r["speedup"] for r in rows]
    result = {"device": str(device), "device_name": (torch.cuda.get_device_name(device) if gpu
                                                     else "cpu"),
              "size": size, "precision": precision, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "rounds": rounds, "build_s": build_s, "rows": rows,
              "geomean_speedup": math.exp(sum(map(math.log, speedups)) / len(speedups)),
              "all_equal": all(r["equal"] for r in rows)}
    if gpu:
        result["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"geometric mean speedup {result['geomean_speedup']:.2f}x; outputs "
              f"{'equal' if result['all_equal'] else 'DIFFER'} "
              f"({size}, {precision}, {result['torch_threads']} threads)")
    return result


if __name__ == "__main__":
    main()
