"""The paper's own build end to end at scale, in bounded memory: every job of
``IB + d(InternVL) + c(CLAP_g, CLAP_m)``, then embed, index and eval, each stage's seconds
and peak *anonymous* memory (RssAnon: what the process holds, not the page cache that
memory-mapped reads leave behind)::

    .venv/bin/python benchmarks/bench_paper_build.py --items 200000 --hidden 256 --route
    .venv/bin/python benchmarks/bench_paper_build.py --items 50000 --json

Stand-in spaces carry the paper's names, dims and modalities (IB 1024 audio/image/text,
InternVL 768 image/text, CLAP_g and CLAP_m 512 audio/text) as ``paper:IB`` … Their
embeddings are deterministic synthetic unit vectors written straight into the embedding
store (no encoder runs): item i of every modality shares a latent, so text i and audio i
are a pair and the retrieval suite has an answer. The build runs through
:func:`freebind.build` exactly as a user's does (``--route`` puts ``route=learned`` on the
combination bond); ``--queries`` caps the pseudo-tuple queries per modality (the bond
option ``max_queries``) so that a 2-core machine finishes, while every pool stays whole.
Then N texts are embedded with ``freebind.embed`` (partitions written block by block), N
audio clips with the bundle through the target API, the texts are indexed for search, and
text→audio retrieval is evaluated on the embedded rows (memory-mapped).

Target (docs/building.md, "Paper scale"): ``--items N --hidden 256 --route`` growing by at
most 0.5 KB per item from 50,000 to 200,000 items, and ``--items 1000000`` under 3 GB peak
anonymous memory. The stand-in pools are compact arrays (:mod:`freebind.data.items`), as a
pool given to a build is held.
``--json`` prints ``{"items", "peak_anon_mb", "stages": [{"stage", "seconds",
"peak_anon_mb"}, …]}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from anon_memory import Stages  # noqa: E402

#: The paper's spaces: dim and modalities.
PAPER = {"IB": (1024, ("audio", "image", "text")), "InternVL": (768, ("image", "text")),
         "CLAP_g": (512, ("audio", "text")), "CLAP_m": (512, ("audio", "text"))}
LATENT = 64


# ------------------------------------------------------------------------------ stand-ins

def stand_in_items(modality: str, n: int, block: int = 65536):
    """N stand-in items of ``modality`` named by their index (``audio/000000042``), each
    with its given content key (no file behind it), as compact arrays
    (:class:`freebind.data.items.ItemList`): no Python object per item."""
    from freebind.data.items import ItemList, StringArray

    names = StringArray.pack(f"{modality}/{i:09d}" for i in range(n))
    keys = np.empty(n, dtype="S64")
    for a in range(0, n, block):
        keys[a:a + block] = [hashlib.sha256(f"paper-bench\0{modality}\0{i}".encode())
                             .hexdigest() for i in range(a, min(n, a + block))]
    return ItemList(names, keys, "keyed")


class StandIn:
    """A space whose rows are all in the store: it never encodes."""

    def __init__(self, name: str, dim: int, modalities):
        self.name, self.dim, self.modalities = f"paper:{name}", dim, tuple(modalities)
        self.fingerprint = f"paper-bench:{name}:{dim}:1"

    def encode(self, modality, items, batch_size=32):
        from freebind.util.errors import FreebindError

        raise FreebindError(f"{self.name} is a stand-in: its {modality} rows must be in the "
                            f"store")


def register(specs: dict = PAPER, stand_in=StandIn, family: str = "paper-bench") -> dict:
    """Register a ``stand_in(name, dim, modalities)`` per entry of ``specs``."""
    from freebind import spaces
    from freebind.spaces.protocol import SpaceInfo

    out = {}
    for name, (dim, mods) in specs.items():
        space = stand_in(name, dim, mods)
        spaces.register(SpaceInfo(space.name, family, mods, dim,
                                  description="benchmark stand-in",
                                  loader=lambda *_, _space=space, **__: _space), replace=True)
        out[name] = space
    return out


def texts_of(n: int):
    """N synthetic captions, packed (:class:`freebind.data.items.StringArray`)."""
    from freebind.data.items import StringArray

    return StringArray.pack(f"synthetic caption {i:09d}" for i in range(n))


def pool_items(n: int) -> dict:
    """The pools: N audio and image stand-in items, N texts (compact arrays)."""
    return {"audio": stand_in_items("audio", n), "image": stand_in_items("image", n),
            "text": texts_of(n)}


def write_rows(store, stand_ins: dict, pools: dict, seed: int, chunk: int = 8192) -> None:
    """Every (space, modality) pool row: n(W·z_i + noise), z_i the item's latent (shared by
    audio i, image i and text i), W a fixed random map per space (its modalities aligned,
    the spaces not), the noise drawn per space and modality."""
    from freebind.data.store import text_key

    n = len(pools["text"])
    for s_i, (name, space) in enumerate(stand_ins.items()):
        for m in space.modalities:
            m_i = ("audio", "image", "text").index(m)
            w = np.random.default_rng([seed, s_i, 1]).standard_normal(
                (LATENT, space.dim)).astype(np.float32) / np.sqrt(LATENT)
            for a in range(0, n, chunk):
                b = min(n, a + chunk)
                z = _latents(seed, a, b)
                noise = np.random.default_rng([seed, s_i, m_i, a]).standard_normal(
                    (b - a, space.dim)).astype(np.float32) * 0.5
                x = z @ w + noise
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                keys = [text_key(t) for t in pools["text"][a:b]] if m == "text" else \
                    [k.decode("ascii") for k in pools[m].keys[a:b].tolist()]
                store.write(space, m, keys, x)


def _latents(seed: int, a: int, b: int) -> np.ndarray:
    """Latents of items [a, b): drawn per block of 1024 items, so any range is the same."""
    out = []
    for blk in range(a // 1024, (b - 1) // 1024 + 1):
        z = np.random.default_rng([seed, 7, blk]).standard_normal((1024, LATENT)) \
            .astype(np.float32)
        lo, hi = max(a, blk * 1024), min(b, (blk + 1) * 1024)
        out.append(z[lo - blk * 1024:hi - blk * 1024])
    return np.concatenate(out)


# ------------------------------------------------------------------------------ the run

def build_bundle(args, expr: str, bundle: Path, pools: dict, stages) -> tuple[list, int, list]:
    """Build ``expr`` on the pools into ``bundle`` (its store: ``cache`` beside it), each
    job's end starting the next stage; ``(job ids, dim, modalities)`` of the result."""
    import freebind

    hyper = {"hidden": args.hidden, "epochs": args.epochs, "batch": args.batch,
             "max_queries": args.queries, "seed": args.seed, "router_epochs": args.epochs}

    def log(msg: str) -> None:   # each job's end starts the next stage
        if args.verbose:
            print(msg, file=sys.stderr)
        head = msg.split(":")[0].split()[0]
        if head.startswith("j") or head.startswith("b"):
            stages.begin(f"build after {head}")

    stages.begin("build: embed pools, j1")
    fused = freebind.build(expr, audio=pools["audio"], image=pools["image"],
                           text=pools["text"], output=bundle, cache_dir=bundle.parent / "cache",
                           hyper=hyper, progress=False, log=log,
                           store_dtype=args.store_dtype)
    return [j.id for j in fused.build_report.jobs], fused.dim, list(fused.modalities)


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
    text_rows = _partition_rows(out, "text")

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
    metrics = _evaluate(text_rows, np.load(audio_path, mmap_mode="r"), args.eval_queries)
    return {"search_top": [h.path for h in hits][:1], "metrics": metrics}


def run(args) -> dict:
    from freebind.data.store import EmbeddingStore

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="paper-build-"))
    os.environ["FREEBIND_HOME"] = str(root / "home")
    stages = Stages()
    try:
        stand_ins = register()
        pools = pool_items(args.items)
        store = EmbeddingStore(root / "cache", dtype=args.store_dtype)

        stages.begin("write pools")
        write_rows(store, stand_ins, pools, args.seed)

        route = ", route=learned" if args.route else ""
        expr = (f"paper:IB + d(paper:InternVL) + c(paper:CLAP_g, paper:CLAP_m{route})")
        jobs, _, _ = build_bundle(args, expr, root / "paper.safetensors", pools, stages)
        used = use_stage(args, root, root / "paper.safetensors", pools, store, stages)
        stages.close()
        peak = max(r["peak_anon_mb"] for r in stages.rows)
        return {"items": args.items, "hidden": args.hidden, "route": bool(args.route),
                "queries": args.queries, "jobs": jobs, "peak_anon_mb": peak,
                **used, "stages": stages.rows}
    finally:
        stages.close()
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


def _partition_rows(folder: Path, modality: str):
    """The embedded rows of ``modality`` in item order, memory-mapped (one partition) or
    concatenated lazily."""
    files = sorted((folder / f"{modality}_emb").glob(f"{modality}_emb_*.npy"),
                   key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    maps = [np.load(p, mmap_mode="r") for p in files]
    return maps[0] if len(maps) == 1 else _Concat(maps)


class _Concat:
    """Row slices over several memory-mapped partitions."""

    def __init__(self, maps):
        self.maps = maps
        self.starts = np.cumsum([0] + [len(m) for m in maps])
        self.shape = (int(self.starts[-1]), int(maps[0].shape[1]))
        self.dtype = maps[0].dtype

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        a, b, _ = key.indices(self.shape[0])
        parts = []
        for i, m in enumerate(self.maps):
            lo, hi = max(a, self.starts[i]), min(b, self.starts[i + 1])
            if lo < hi:
                parts.append(np.asarray(m[lo - self.starts[i]:hi - self.starts[i]]))
        return np.concatenate(parts) if parts else np.zeros((0, self.shape[1]), self.dtype)


def _evaluate(queries, gallery, n_queries: int) -> dict:
    """Text i → audio i retrieval on memory-mapped rows (R@1, R@10, mAP@10): the first
    ``n_queries`` texts against every audio row."""
    from freebind.evaluate import retrieval_from_embeddings

    n = min(len(queries), n_queries)
    return retrieval_from_embeddings(queries[0:n], gallery, np.arange(n)[:, None], ks=(1, 10))


def add_run_args(ap) -> None:
    """The options every stand-in build benchmark takes, after its own ``--items``,
    ``--hidden`` and route switch."""
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


def print_stages(result: dict) -> None:
    """The per-stage table and the peak / t2a line."""
    print(f"{'stage':34} {'seconds':>9} {'peak anon MB':>13}")
    for r in result["stages"]:
        print(f"{r['stage']:34} {r['seconds']:9.1f} {r['peak_anon_mb']:13.1f}")
    print(f"peak anonymous memory: {result['peak_anon_mb']:.1f} MB; t2a "
          + ", ".join(f"{k} {v:.3f}" for k, v in result["metrics"].items()
                      if isinstance(v, float)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=50000, help="items per modality")
    ap.add_argument("--hidden", type=int, default=256, help="projector hidden width")
    ap.add_argument("--route", action="store_true", help="route=learned on c(CLAP_g, CLAP_m)")
    add_run_args(ap)
    args = ap.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"paper build, {args.items} items per modality, hidden {args.hidden}"
          f"{', route=learned' if args.route else ''}, {args.queries} queries per modality")
    print_stages(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
