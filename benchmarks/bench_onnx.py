"""The exported fusion graph under onnxruntime against ``FusedSpace.fuse`` (torch), on the
paper's expression at the paper's sizes (ImageBind 1024, InternVL-C 768, two CLAP 512;
seven projectors of hidden width 2048 per group; random weights, random unit rows): rows per
second of each for every modality, their ratio, and the largest difference, in one run.

    .venv/bin/python benchmarks/bench_onnx.py [ROWS] [THREADS]"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

EXPR = "IB + d(InternVL) + c(CLAP_g, CLAP_m, a=0.8, t=0.5)"


def best(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(rows=4096, threads=2):
    import onnxruntime as ort

    from freebind.algebra import plan
    from freebind.share.onnx import export
    from freebind.fusion.fused import FusedSpace
    from freebind.fusion.projector import ProjectorGroup

    torch.set_num_threads(threads)
    p = plan(EXPR)
    g = torch.Generator().manual_seed(0)
    proj = {j.id: ProjectorGroup(7, j.source_dim, j.target_dim, hidden=2048, generator=g).eval()
            for j in p.jobs}
    fused = FusedSpace(p, proj)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fusion.onnx"
        t0 = time.perf_counter()
        report = export(fused, out, verify=False)
        t_export = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        print(f"{EXPR}: {report.bytes / 1e6:.0f} MB ONNX, exported in {t_export:.1f} s; "
              f"{rows} rows, {threads} threads")
        for m in ("audio", "image", "text"):
            feeds = {k: np.asarray(v, np.float32) for k, v in report.factors.items()}
            nested = {}
            for i in sess.get_inputs():
                if len(i.shape) != 2:
                    continue
                ref, _, mm = i.name.rpartition("/")
                n = rows if mm == m else 0
                x = rng.standard_normal((n, int(i.shape[1]))).astype(np.float32)
                feeds[i.name] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
                if mm == m:
                    nested.setdefault(ref, {})[mm] = feeds[i.name]
            got = sess.run([m], feeds)[0]
            want = fused.fuse(nested, modalities=[m])[m].numpy()
            t_ort = best(lambda: sess.run([m], feeds))
            t_torch = best(lambda: fused.fuse(nested, modalities=[m]))
            print(f"  {m:5s}  onnxruntime {rows / t_ort:9.0f} rows/s   torch fuse "
                  f"{rows / t_torch:9.0f} rows/s   ratio {t_torch / t_ort:4.2f}   "
                  f"max |Δ| {np.abs(got - want).max():.1e}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
