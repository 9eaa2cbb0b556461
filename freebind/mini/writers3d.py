"""The mini world's 3D evaluation sets, in the real datasets' layouts
(:mod:`freebind.evaluate.suites.shapes3d` reads them as it reads the real files):

* ``modelnet40``: OpenShape's / Uni3D's test layout: ``modelnet40_shape_names.txt`` (the mini
  classes), ``test_split.json`` (``[{"category", "split", "model_id"}]``) and
  ``test_pc.npy`` (an object array of ``{"xyz", "rgb"}`` dicts, colours 0–255 as
  OpenShape stores them).
* ``objaverse-lvis``: ``lvis_testset.txt`` (``cate_id,cate_name,model_id,point_path``) and
  one ``{"xyz", "rgb"}`` ``.npy`` per shape under ``lvis/``.
* ``cap3d``: ``Cap3D_automated_Objaverse.csv`` (``uid,caption``), ``points/<uid>.ply`` and
  ``images/<uid>.png`` (a render of the same event).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from freebind.mini.world import CLASSES, balanced_events, rng, sample_event


def _uid(g) -> str:
    return "".join("0123456789abcdef"[int(i)] for i in g.integers(0, 16, size=32))


def _cloud(e, g) -> dict:
    from freebind.mini.shapes import render_points

    xyz, rgb = render_points(e, g)
    return {"xyz": xyz, "rgb": np.rint(rgb * 255).astype(np.float32)}


def _object_npy(obj) -> bytes:
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


def write_modelnet40(root: Path, seed: int, n: int, bar, io_) -> None:
    """``io_``: the writers' ``(write_bytes, write_text, png_bytes)``."""
    _atomic_bytes, _atomic_text, _ = io_
    g = rng("evalset", "modelnet40", seed)
    events = balanced_events(g, max(1, n // len(CLASSES)))
    pcs = np.empty(len(events), dtype=object)
    split = []
    for i, e in enumerate(events):
        pcs[i] = _cloud(e, g)
        split.append({"category": e.cls, "split": "test", "model_id": f"{e.cls}_{i:04d}"})
        bar.update()
    _atomic_text(root / "modelnet40_shape_names.txt", "".join(c + "\n" for c in CLASSES))
    _atomic_text(root / "test_split.json", json.dumps(split, indent=1) + "\n")
    _atomic_bytes(root / "test_pc.npy", _object_npy(pcs))


def write_objaverse_lvis(root: Path, seed: int, n: int, bar, io_) -> None:
    _atomic_bytes, _atomic_text, _ = io_
    g = rng("evalset", "objaverse-lvis", seed)
    events = balanced_events(g, max(1, n // len(CLASSES)))
    lines = []
    for e in (events[i] for i in g.permutation(len(events))):
        uid = _uid(g)
        _atomic_bytes(root / "lvis" / f"{uid}.npy", _object_npy(np.array(_cloud(e, g),
                                                                         dtype=object)))
        lines.append(f"{e.label},{e.cls},{uid},/lvis/{uid}.npy")
        bar.update()
    _atomic_text(root / "lvis_testset.txt", "".join(ln + "\n" for ln in lines))


def write_cap3d(root: Path, seed: int, n: int, bar, io_) -> None:
    import csv

    from freebind.data.points import ply_bytes
    from freebind.mini.captions import caption
    from freebind.mini.render import render_image
    from freebind.mini.shapes import render_points

    _atomic_bytes, _atomic_text, png_bytes = io_

    g = rng("evalset", "cap3d", seed)
    rows = []
    for _ in range(n):
        e = sample_event(g)
        uid = _uid(g)
        _atomic_bytes(root / "points" / f"{uid}.ply", ply_bytes(*render_points(e, g)))
        _atomic_bytes(root / "images" / f"{uid}.png", png_bytes(render_image(e, g)))
        rows.append((uid, caption(e, g, "image")))
        bar.update()
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    _atomic_text(root / "Cap3D_automated_Objaverse.csv", buf.getvalue())
