"""3D shape suites: ModelNet40 and Objaverse-LVIS zero-shot classification, and point-cloud
retrieval against captions and images (Cap3D's layout).

* ``modelnet40`` (Wu et al. 2015; the 2,468-shape test split) in either published layout:
  OpenShape's / Uni3D's test set (``modelnet40_shape_names.txt``, ``test_split.json`` with
  each shape's ``category``, ``test_pc.npy``: one ``{"xyz", "rgb"}`` per shape), or
  Princeton's meshes (``<class>/test/*.off``, one folder per class). Class names as
  published with ``_`` written as a space (``flower pot``, ``night stand``).
* ``objaverse-lvis`` (OpenShape's Objaverse-LVIS test set, 1,156 LVIS categories):
  ``lvis_testset.txt`` lines ``cate_id,cate_name,model_id,point_path`` with the clouds
  (``.npy`` ``{"xyz", "rgb"}``, or any point/mesh format) under the suite folder.
* ``cap3d`` (Cap3D's captions of Objaverse): ``Cap3D_automated_Objaverse.csv`` lines
  ``uid,caption`` (no header), clouds ``points/<uid>.*`` (ply, npz, npy, …) and, where they
  exist, renders ``images/<uid>.png``: point↔text and point↔image retrieval.

Prompts: the 64 templates OpenShape and Uni3D evaluate with (``point_templates.txt``).
Every cloud is read by :mod:`freebind.data.points` (the space's own sampling and
normalisation); the shapes of ``test_pc.npy`` are written once, one ``.npz`` each, into a
cache folder named by the file's digest (``$FREEBIND_HOME/cache/modelnet40/``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    ClassificationTask, EvalSet, RetrievalTask, SuiteError, data_file, find_file,
    read_templates, require_some,
)

POINT_SUFFIXES = (".npy", ".npz", ".ply", ".pcd", ".obj", ".off", ".stl", ".glb", ".gltf")


def _templates(templates) -> list[str]:
    return read_templates(templates or data_file("point_templates.txt"))


def _name(raw: str) -> str:
    return raw.strip().replace("_", " ")


# --- ModelNet40 ---------------------------------------------------------------------------

def load_modelnet40(root: Path, templates: str | None = None, split: str = "test") -> EvalSet:
    root = Path(root)
    names_file = next((p for p in (root / "modelnet40_shape_names.txt",
                                   root / "modelnet40" / "modelnet40_shape_names.txt")
                       if p.is_file()), None)
    if names_file is not None:
        return _openshape_modelnet(names_file.parent, templates)
    base = root / "ModelNet40" if (root / "ModelNet40").is_dir() else root
    classes = sorted(p.name for p in base.iterdir() if (p / split).is_dir()) \
        if base.is_dir() else []
    if not classes:
        raise SuiteError(f"{root}: not a ModelNet40 folder (expected "
                         f"modelnet40_shape_names.txt + test_split.json + test_pc.npy, or "
                         f"<class>/{split}/*.off)")
    items, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((base / c / split).iterdir()):
            if f.suffix.lower() in POINT_SUFFIXES:
                items.append(str(f))
                labels.append(k)
    require_some("modelnet40", root, len(items), len(items), "shapes")
    task = ClassificationTask("point", items, [_name(c) for c in classes],
                              _templates(templates), np.asarray(labels, dtype=np.int64))
    return EvalSet("modelnet40", root, [task], listed=len(items), missing=[],
                   notes=[f"Princeton meshes, {split} split, {len(classes)} classes"])


def _openshape_modelnet(folder: Path, templates) -> EvalSet:
    from freebind.data.points import load_object_array

    names = [ln.strip() for ln in (folder / "modelnet40_shape_names.txt").read_text(
        encoding="utf-8").splitlines() if ln.strip()]
    split_file = find_file(folder, ["test_split.json"], "ModelNet40 test split")
    try:
        split = json.loads(split_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise SuiteError(f"{split_file}: not readable JSON ({exc})") from None
    ids = {n: k for k, n in enumerate(names)}
    bad = [s.get("category") for s in split if s.get("category") not in ids]
    if bad:
        raise SuiteError(f"{split_file}: category {bad[0]!r} is not in "
                         f"modelnet40_shape_names.txt")
    pcs_file = find_file(folder, ["test_pc.npy"], "ModelNet40 clouds")
    pcs = load_object_array(pcs_file.read_bytes(), pcs_file)
    if len(pcs) != len(split):
        raise SuiteError(f"{pcs_file}: {len(pcs)} clouds for {len(split)} shapes in "
                         f"{split_file.name}")
    items = _materialised(pcs_file, pcs)
    labels = np.asarray([ids[s["category"]] for s in split], dtype=np.int64)
    task = ClassificationTask("point", items, [_name(n) for n in names],
                              _templates(templates), labels)
    return EvalSet("modelnet40", folder, [task], listed=len(split), missing=[],
                   notes=["OpenShape/Uni3D test set (test_pc.npy)", f"{len(names)} classes"])


def _materialised(pcs_file: Path, pcs) -> list[str]:
    """One ``.npz`` per shape (xyz, rgb as stored), written once into a cache folder named
    by the clouds file's content; the paths."""
    from freebind.data.store import atomic_save_npz, file_key
    from freebind.spaces.weights import freebind_home

    folder = freebind_home() / "cache" / "modelnet40" / file_key(pcs_file)[:16]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, pc in enumerate(pcs):
        path = folder / f"{i:05d}.npz"
        if not path.is_file():
            if not isinstance(pc, dict) or "xyz" not in pc:
                raise SuiteError(f"{pcs_file}: shape {i} is not a dict with 'xyz'")
            arrays = {"xyz": np.asarray(pc["xyz"])}
            if pc.get("rgb") is not None:
                arrays["rgb"] = np.asarray(pc["rgb"])
            atomic_save_npz(path, **arrays)
        out.append(str(path))
    return out


# --- Objaverse-LVIS -----------------------------------------------------------------------

def load_objaverse_lvis(root: Path, templates: str | None = None) -> EvalSet:
    root = Path(root)
    listing = find_file(root, ["lvis_testset.txt", "objaverse_lvis/lvis_testset.txt"],
                        "Objaverse-LVIS test list")
    base = listing.parent
    names: dict[int, str] = {}
    items, labels, missing, listed = [], [], [], 0
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            raise SuiteError(f"{listing}:{n}: expected cate_id,cate_name,model_id,point_path")
        cid, cname, path = int(parts[0]), parts[1], ",".join(parts[3:])
        if names.setdefault(cid, cname) != cname:
            raise SuiteError(f"{listing}:{n}: cate_id {cid} names two categories")
        listed += 1
        p = base / path.lstrip("/")
        if not p.is_file():
            missing.append(path)
            continue
        items.append(str(p))
        labels.append(cid)
    if sorted(names) != list(range(len(names))):
        raise SuiteError(f"{listing}: cate_ids are not 0..{len(names) - 1}")
    require_some("objaverse-lvis", root, len(items), listed, "shapes")
    task = ClassificationTask("point", items, [_name(names[k]) for k in range(len(names))],
                              _templates(templates), np.asarray(labels, dtype=np.int64))
    return EvalSet("objaverse-lvis", root, [task], listed=listed, missing=missing,
                   notes=[f"{len(names)} categories"])


# --- Cap3D: point <-> text / image retrieval -----------------------------------------------

def load_cap3d(root: Path, manifest: str | None = None) -> EvalSet:
    import csv

    root = Path(root)
    listing = Path(manifest) if manifest else find_file(
        root, ["Cap3D_automated_Objaverse.csv", "captions.csv"], "Cap3D captions")
    base = listing.parent
    with open(listing, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and rows[0][:2] == ["uid", "caption"]:
        rows = rows[1:]
    items, captions, owner, images, missing = [], [], [], [], []
    for r in rows:
        if len(r) < 2:
            raise SuiteError(f"{listing}: expected uid,caption rows")
        uid, caption = r[0].strip(), ",".join(r[1:]).strip()
        cloud = next((base / "points" / f"{uid}{s}" for s in POINT_SUFFIXES
                      if (base / "points" / f"{uid}{s}").is_file()), None)
        if cloud is None:
            missing.append(uid)
            continue
        owner.append(len(items))
        items.append(str(cloud))
        captions.append(caption)
        image = base / "images" / f"{uid}.png"
        images.append(str(image) if image.is_file() else None)
    require_some("cap3d", root, len(items), len(rows), "shapes")
    tasks = [RetrievalTask("point", "text", items, captions, np.asarray(owner))]
    with_image = [i for i, im in enumerate(images) if im is not None]
    if with_image:
        tasks.append(RetrievalTask("point", "image", [items[i] for i in with_image],
                                   [images[i] for i in with_image],
                                   np.arange(len(with_image))))
    return EvalSet("cap3d", root, tasks, listed=len(rows), missing=missing,
                   notes=[f"{len(with_image)} shapes with a render"])
