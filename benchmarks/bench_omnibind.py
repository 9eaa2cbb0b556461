"""An OmniBind-shaped binding end to end, in bounded memory: a CLIP-family base bound, with
one parallel combination bond under a learned router, to an audio–text pair, an
audio–image–text space and an image–text space::

    omni:EVA-CLIP + c(omni:CLAP, omni:MS-CLAP, omni:IB, omni:SigLIP2, route=learned)

planned and built on stand-in spaces at the real spaces' dims and modalities (EVA-CLIP-18B
1536 image/text, LAION-CLAP 512 and MS-CLAP 2023 1024 audio/text, ImageBind-huge 1024
audio/image/text, SigLIP 2 so400m 1152 image/text), then N texts embedded with
``freebind.embed``, N audio clips with the bundle (the base has no audio: every audio row
comes through the experts' projectors), the texts indexed, and text→audio retrieval
evaluated on the embedded rows::

    .venv/bin/python benchmarks/bench_omnibind.py --items 20000
    .venv/bin/python benchmarks/bench_omnibind.py --items 5000 --json

The stand-ins, the memory sampler and the retrieval are those of
``benchmarks/bench_paper_build.py`` (synthetic unit rows written straight into the store:
item i of every modality shares a latent, so text i and audio i are a pair). Each stage's
seconds and peak anonymous memory (RssAnon) are printed, with the plan's jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_paper_build as paper  # noqa: E402

#: The OmniBind-shaped spaces: dim and modalities of the real ones they stand in for.
OMNI = {"EVA-CLIP": (1536, ("image", "text")),
        "CLAP": (512, ("audio", "text")),
        "MS-CLAP": (1024, ("audio", "text")),
        "IB": (1024, ("audio", "image", "text")),
        "SigLIP2": (1152, ("image", "text"))}
EXPRESSION = ("omni:EVA-CLIP + c(omni:CLAP, omni:MS-CLAP, omni:IB, omni:SigLIP2"
              "{route})")


class StandIn(paper.StandIn):
    def __init__(self, name: str, dim: int, modalities):
        super().__init__(name, dim, modalities)
        self.name = f"omni:{name}"
        self.fingerprint = f"omni-bench:{name}:{dim}:1"


def register() -> dict:
    from freebind import spaces
    from freebind.spaces.protocol import SpaceInfo

    out = {}
    for name, (dim, mods) in OMNI.items():
        space = StandIn(name, dim, mods)
        spaces.register(SpaceInfo(space.name, "omni-bench", mods, dim,
                                  description="benchmark stand-in",
                                  loader=lambda *_, _space=space, **__: _space), replace=True)
        out[name] = space
    return out


def build_stage(args, root: Path, pools: dict, stages) -> tuple[Path, list, dict]:
    """Plan and build the expression; ``(bundle, jobs, plan summary)``."""
    import freebind

    expr = EXPRESSION.format(route=", route=learned" if args.route else "")
    plan = freebind.plan(expr)
    summary = {"expression": expr, "dim": plan.graph["dim"],
               "modalities": list(plan.graph["modalities"]),
               "jobs": [j.id if hasattr(j, "id") else str(j) for j in plan.jobs]}
    hyper = {"hidden": args.hidden, "epochs": args.epochs, "batch": args.batch,
             "max_queries": args.queries, "seed": args.seed, "router_epochs": args.epochs}

    def log(msg: str) -> None:
        if args.verbose:
            print(msg, file=sys.stderr)
        head = msg.split(":")[0].split()[0]
        if head.startswith("j") or head.startswith("b"):
            stages.begin(f"build after {head}")

    stages.begin("build: embed pools, j1")
    bundle = root / "omni.safetensors"
    fused = freebind.build(expr, audio=pools["audio"], image=pools["image"],
                           text=pools["text"], output=bundle, cache_dir=root / "cache",
                           hyper=hyper, progress=False, log=log,
                           store_dtype=args.store_dtype)
    jobs = [j.id for j in fused.build_report.jobs]
    summary["bundle_dim"], summary["bundle_modalities"] = fused.dim, list(fused.modalities)
    return bundle, jobs, summary


def use_stage(args, root: Path, bundle: Path, pools: dict, store, stages) -> dict:
    """Embed texts and audio with the bundle, index the texts, evaluate text→audio."""
    stages.begin("embed texts (freebind.embed)")
    text_file = root / "texts.txt"
    with open(text_file, "w", encoding="utf-8") as fh:
        for t in pools["text"]:
            fh.write(t + "\n")
    out = root / "embedded"
    from freebind.embed import embed

    embed(str(bundle), texts=text_file, output=out, cache_dir=root / "cache",
          partition_size=args.partition, progress=False)
    text_rows = paper._partition_rows(out, "text")

    stages.begin("embed audio (target API)")
    from freebind.run.targets import open as open_target

    target = open_target(str(bundle))
    rows, _, _ = target.embed("audio", pools["audio"], store=store, lazy=True)
    audio_path = root / "audio_rows.npy"
    audio = np.lib.format.open_memmap(audio_path, mode="w+", dtype=np.float32,
                                      shape=rows.shape)
    for a, block in rows.blocks():
        audio[a:a + len(block)] = block
    audio.flush()
    del audio, rows, target

    stages.begin("index texts")
    from freebind.search.index import Index

    index = Index(str(bundle), store=store)
    index.add_embeddings(out, store=store)
    hits = index.search(vector=np.asarray(text_rows[1:2])[0], modality="text", k=5)
    del index

    stages.begin("eval t2a")
    metrics = paper._evaluate(text_rows, np.load(audio_path, mmap_mode="r"),
                              args.eval_queries)
    return {"metrics": metrics, "search_top": [h.path for h in hits][:1]}


def run(args) -> dict:
    from freebind.data.store import EmbeddingStore

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="omnibind-"))
    os.environ["FREEBIND_HOME"] = str(root / "home")
    stages = paper.Stages()
    try:
        stand_ins = register()
        pools = paper.pool_items(args.items)
        store = EmbeddingStore(root / "cache", dtype=args.store_dtype)
        stages.begin("write pools")
        paper.write_rows(store, stand_ins, pools, args.seed)
        bundle, jobs, summary = build_stage(args, root, pools, stages)
        used = use_stage(args, root, bundle, pools, store, stages)
        stages.close()
        peak = max(r["peak_anon_mb"] for r in stages.rows)
        return {"items": args.items, "hidden": args.hidden, "route": bool(args.route),
                "queries": args.queries, "jobs": jobs, "plan": summary,
                "peak_anon_mb": peak, **used, "stages": stages.rows}
    finally:
        stages.close()
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=20000, help="items per modality")
    ap.add_argument("--hidden", type=int, default=256, help="projector hidden width")
    ap.add_argument("--no-route", dest="route", action="store_false",
                    help="a fixed combination instead of route=learned")
    ap.add_argument("--queries", type=int, default=2000,
                    help="pseudo-tuple queries per modality (max_queries)")
    ap.add_argument("--eval-queries", type=int, default=2000,
                    help="text queries of the t2a retrieval (against every audio row)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs per job and router")
    ap.add_argument("--batch", type=int, default=1024, help="training batch")
    ap.add_argument("--partition", type=int, default=100000, help="embed partition size")
    ap.add_argument("--store-dtype", default="fp32", choices=("fp32", "fp16"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", help="keep the store and outputs here (default: a temporary "
                                   "folder, removed)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--verbose", action="store_true", help="print the build's log lines")
    args = ap.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    plan = result["plan"]
    print(f"{plan['expression']}\n  dim {plan['dim']}, modalities "
          f"{','.join(plan['modalities'])}, jobs {', '.join(result['jobs'])}")
    print(f"{args.items} items per modality, hidden {args.hidden}, {args.queries} queries")
    print(f"{'stage':34} {'seconds':>9} {'peak anon MB':>13}")
    for r in result["stages"]:
        print(f"{r['stage']:34} {r['seconds']:9.1f} {r['peak_anon_mb']:13.1f}")
    print(f"peak anonymous memory: {result['peak_anon_mb']:.1f} MB; t2a "
          + ", ".join(f"{k} {v:.3f}" for k, v in result["metrics"].items()
                      if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
