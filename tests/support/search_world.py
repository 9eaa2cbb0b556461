"""A small searchable mini world for the serve and browser tests: real WAV/PNG files from the
mini generator, a bundle of the quick start's expression with untrained (seeded) projectors,
and its index."""

from __future__ import annotations

from pathlib import Path

import torch

from freebind.algebra import plan
from freebind.fusion.fused import FusedSpace
from freebind.fusion.projector import ProjectorGroup

EXPR = "mini:bind + d(mini:vl) + c(mini:clap)"


def make_bundle(path: Path, expr: str = EXPR, seed: int = 0) -> Path:
    p = plan(expr)
    g = torch.Generator().manual_seed(seed)
    proj = {j.id: ProjectorGroup(2, j.source_dim, j.target_dim, hidden=32, generator=g).eval()
            for j in p.jobs}
    return FusedSpace(p, proj).save(path)


def make_index(root: Path, n: int = 24) -> Path:
    from freebind.mini.writers import write_pools
    from freebind.search import Index

    write_pools(root / "pools", n_audio=n, n_image=n, n_text=0, seed=3)
    bundle = make_bundle(root / "bundle.safetensors")
    index = Index(str(bundle))
    store = root / "cache"
    index.add("audio", sorted((root / "pools" / "audio").glob("*.wav")), store=store)
    index.add("image", sorted((root / "pools" / "image").glob("*.png")), store=store)
    for wav in sorted((root / "pools" / "audio").glob("*.wav"))[:4]:
        wav.with_suffix(".txt").write_text(f"caption of {wav.stem}\n")
    out = index.save(root / "index")
    from freebind.search.thumbs import write_media_info

    write_media_info(out)
    return out
