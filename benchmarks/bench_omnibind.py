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
    return paper.register(OMNI, StandIn, "omni-bench")


def build_stage(args, root: Path, pools: dict, stages) -> tuple[Path, list, dict]:
    """Plan and build the expression; ``(bundle, jobs, plan summary)``."""
    import freebind

    expr = EXPRESSION.format(route=", route=learned" if args.route else "")
    plan = freebind.plan(expr)
    summary = {"expression": expr, "dim": plan.graph["dim"],
               "modalities": list(plan.graph["modalities"]),
               "jobs": [j.id if hasattr(j, "id") else str(j) for j in plan.jobs]}
    bundle = root / "omni.safetensors"
    jobs, summary["bundle_dim"], summary["bundle_modalities"] = paper.build_bundle(
        args, expr, bundle, pools, stages)
    return bundle, jobs, summary


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
        paper.write_rows(store, stand_ins, pools, args.seed, chunk=1024)
        bundle, jobs, summary = build_stage(args, root, pools, stages)
        used = paper.use_stage(args, root, bundle, pools, store, stages)
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
    paper.add_run_args(ap)
    args = ap.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    plan = result["plan"]
    print(f"{plan['expression']}\n  dim {plan['dim']}, modalities "
          f"{','.join(plan['modalities'])}, jobs {', '.join(result['jobs'])}")
    print(f"{args.items} items per modality, hidden {args.hidden}, {args.queries} queries")
    paper.print_stages(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
