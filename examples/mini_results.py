"""The README's mini results table, in the shape of the FreeBind paper's main table.

    python examples/mini_results.py       # writes runs/mini_results/{table.md,results.json}

Rows: ``mini:bind`` (the unified space, ImageBind's role), the experts (``mini:vl`` like
InternVL-C, ``mini:clap``/``mini:clap2`` like CLAP_g/CLAP_m) and the fused spaces named after
the paper's — ImageBind++ = ``mini:bind + c(mini:clap, mini:clap2)``, InternVL_IB =
``mini:bind + d(mini:vl)``, InternVL_IB++ = ``mini:bind + d(mini:vl) + c(mini:clap,
mini:clap2)`` — under the paper's "versatile" and "AT expertise" presets, and the same
ImageBind++ and InternVL_IB++ built with ``route=learned`` on the combination bond (the
"router" rows: a learned router gives every item its own mixing weights; the projectors are
the fixed rows' own, reused from the build cache). ``--router-seed N`` trains the routers
with another seed (the projectors stay the same). Columns: R@1 of
every retrieval suite in both directions and top-1 accuracy of the classification suites,
on the mini world's evaluation sets (``freebind mini evalsets``), built with
``freebind build``. Cells are percentages; "–" where a space lacks a modality.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: (column label, suite, metric) in the paper's order: audio-text, audio classification,
#: audio-image, image-text, image classification.
COLUMNS = [
    ("AudioCaps T→A", "audiocaps", "t2a_R@1"), ("AudioCaps A→T", "audiocaps", "a2t_R@1"),
    ("Clotho T→A", "clotho", "t2a_R@1"), ("Clotho A→T", "clotho", "a2t_R@1"),
    ("ESC-50 acc", "esc50", "acc1"),
    ("VGGSS A→I", "vggss", "a2i_R@1"), ("VGGSS I→A", "vggss", "i2a_R@1"),
    ("COCO T→I", "coco", "t2i_R@1"), ("COCO I→T", "coco", "i2t_R@1"),
    ("Flickr30k T→I", "flickr30k", "t2i_R@1"), ("Flickr30k I→T", "flickr30k", "i2t_R@1"),
    ("ImageNet acc", "imagenet", "acc1"),
]

#: Bundles built for the table: (file stem, label, expression).
BUNDLES = [
    ("imagebind_pp", "mini ImageBind++", "mini:bind + c(mini:clap, mini:clap2)"),
    ("internvl_ib", "mini InternVL_IB", "mini:bind + d(mini:vl)"),
    ("internvl_ib_pp", "mini InternVL_IB++", "mini:bind + d(mini:vl) + c(mini:clap, mini:clap2)"),
    ("imagebind_pp_router", "mini ImageBind++ · router",
     "mini:bind + c(mini:clap, mini:clap2, route=learned)"),
    ("internvl_ib_pp_router", "mini InternVL_IB++ · router",
     "mini:bind + d(mini:vl) + c(mini:clap, mini:clap2, route=learned)"),
]

#: Table rows: (label, target, preset).
ROWS = [
    ("mini:bind (ImageBind role)", "mini:bind", None),
    ("mini:vl (InternVL-C role)", "mini:vl", None),
    ("mini:clap (CLAP_g role)", "mini:clap", None),
    ("mini:clap2 (CLAP_m role)", "mini:clap2", None),
    ("mini ImageBind++ · versatile", "imagebind_pp", "versatile"),
    ("mini ImageBind++ · AT expertise", "imagebind_pp", "at-expertise"),
    ("mini InternVL_IB", "internvl_ib", "versatile"),
    ("mini InternVL_IB++ · versatile", "internvl_ib_pp", "versatile"),
    ("mini InternVL_IB++ · AT expertise", "internvl_ib_pp", "at-expertise"),
    ("mini ImageBind++ · router", "imagebind_pp_router", None),
    ("mini InternVL_IB++ · router", "internvl_ib_pp_router", None),
]


def freebind_cli(*args: str) -> None:
    """Run the ``freebind`` command (the same one a user types) in a subprocess."""
    cmd = [sys.executable, "-c", "from freebind_cli.main import main; main()", *args]
    print("$ freebind " + " ".join(f"'{a}'" if " " in a else a for a in args), flush=True)
    subprocess.run(cmd, check=True)


def ensure_evalsets(root: Path, items: int | None) -> Path:
    if (root / "evalsets.json").is_file():
        return root
    if items:                        # smaller sets, for a quick look (not the README's table)
        from freebind.mini import write_evalsets

        write_evalsets(root, seed=0, items=items, progress=True)
    else:
        freebind_cli("mini", "evalsets", str(root))
    return root


def ensure_bundles(work: Path, rebuild: bool, router_seed: int | None = None
                   ) -> dict[str, Path]:
    paths = {}
    for stem, _, expression in BUNDLES:
        routed = "route=learned" in expression
        name = stem + (f"_s{router_seed}" if routed and router_seed is not None else "")
        path = work / f"{name}.safetensors"
        if rebuild or not path.is_file():
            extra = ["--hyper", f"router_seed={router_seed}"] \
                if routed and router_seed is not None else []
            freebind_cli("build", expression, "-o", str(path), *extra)
        paths[stem] = path
    return paths


def measure(work: Path, evalsets: Path, bundles: dict[str, Path]) -> list[dict]:
    from freebind.evaluate.runner import evaluate, load_target
    from freebind.evaluate.suites import load_suite
    from freebind.data.store import EmbeddingStore

    store = EmbeddingStore(work / "cache")
    index = json.loads((evalsets / "evalsets.json").read_text())["suites"]
    suites = [s for s in dict.fromkeys(s for _, s, _ in COLUMNS) if s in index]
    sets = {s: load_suite(s, evalsets / index[s]["path"]) for s in suites}
    records = []
    for label, ref, preset in ROWS:
        ref = str(bundles[ref]) if ref in bundles else ref
        target = load_target(ref, preset=preset)
        for s, evalset in sets.items():
            if not set(evalset.modalities) <= set(target.modalities):
                continue
            rec = evaluate(target, evalset, store=store, progress=False)
            rec["row"] = label
            records.append(rec)
        print(f"  measured {label}", flush=True)
    return records


def table(records: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(r["dataset"] == c[1] for r in records)]
    lines = ["| space | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    best = {c: max((r["metrics"][c[2]] for r in records if r["dataset"] == c[1]), default=None)
            for c in cols}
    for label, _, _ in ROWS:
        cells = []
        for c in cols:
            rec = next((r for r in records if r["row"] == label and r["dataset"] == c[1]), None)
            if rec is None:
                cells.append("–")
                continue
            v = rec["metrics"][c[2]]
            cell = f"{100 * v:.1f}"
            cells.append(f"**{cell}**" if v == best[c] else cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/mini_results"),
                    help="working folder (evaluation sets, bundles, cache, outputs)")
    ap.add_argument("--evalsets", type=Path, default=None,
                    help="existing `freebind mini evalsets` folder (default WORK/evalsets)")
    ap.add_argument("--items", type=int, default=None,
                    help="items per evaluation set when writing them (default: the mini sizes)")
    ap.add_argument("--rebuild", action="store_true", help="build the bundles again")
    ap.add_argument("--router-seed", type=int, default=None,
                    help="seed of the routers' training (default: the bond's seed, 0); the "
                         "tables go to WORK/table_router_sN.md, results_router_sN.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    evalsets = ensure_evalsets(args.evalsets or work / "evalsets", args.items)
    bundles = ensure_bundles(work, args.rebuild, args.router_seed)
    records = measure(work, evalsets, bundles)
    md = table(records)
    from freebind.evaluate.runner import write_json

    tail = "" if args.router_seed is None else f"_router_s{args.router_seed}"
    write_json(work / f"results{tail}.json", records)
    (work / f"table{tail}.md").write_text(md + "\n")
    print()
    print(md)
    print(f"\n{len(records)} results in {time.perf_counter() - t0:.0f}s → "
          f"{work / f'table{tail}.md'}, "
          f"{work / f'results{tail}.json'}")


if __name__ == "__main__":
    main()
