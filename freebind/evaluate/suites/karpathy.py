"""Image–text retrieval on the Karpathy splits of COCO (5k test images) and Flickr30k (1k).

Layout: Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json`` (``{"images": [{"filename",
"filepath"?, "split", "sentences": [{"raw"}, …]}, …]}``) at DIR (or below it), images at
DIR/<filepath>/<filename> (COCO: ``val2014/…``), DIR/images/…, DIR/flickr30k-images/<filename>
or DIR/<filename>. Each image keeps its first five captions (some COCO images have six or
seven), the convention of CLIP-style benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    EvalSet, RetrievalTask, SuiteError, find_file, require_some,
)

CAPTIONS_PER_IMAGE = 5


def load_karpathy(suite: str, root: Path, json_name: str, split: str = "test",
                  image_dirs: tuple[str, ...] = ()) -> EvalSet:
    root = Path(root)
    path = find_file(root, [json_name, f"annotations/{json_name}"], suite)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = data["images"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SuiteError(f"{path}: not a Karpathy split file ({exc})") from None
    entries = [im for im in images if im.get("split") == split]
    if not entries:
        raise SuiteError(f"{path}: no image in split {split!r}")
    bases = [root, root / "images", *(root / d for d in image_dirs)]
    items, captions, owner, missing = [], [], [], []
    for im in entries:
        fname = im.get("filename")
        if not fname:
            raise SuiteError(f"{path}: an image entry has no filename")
        rel = Path(im.get("filepath", "")) / fname
        found = next((b / r for b in bases for r in (rel, Path(fname)) if (b / r).is_file()), None)
        if found is None:
            missing.append(rel.as_posix())
            continue
        caps = [s.get("raw", "").strip() for s in im.get("sentences", [])]
        caps = [c for c in caps if c][:CAPTIONS_PER_IMAGE]
        if not caps:
            raise SuiteError(f"{path}: {fname} has no caption")
        items.append(str(found))
        captions.extend(caps)
        owner.extend([len(items) - 1] * len(caps))
    require_some(suite, root, len(items), len(entries), "images")
    task = RetrievalTask("image", "text", items, captions, np.asarray(owner, dtype=np.int64))
    return EvalSet(suite, root, [task], listed=len(entries), missing=missing,
                   notes=[f"Karpathy split {split!r} of {path.name}; first "
                          f"{CAPTIONS_PER_IMAGE} captions per image"])


def load_coco(root: Path, split: str = "test") -> EvalSet:
    return load_karpathy("coco", root, "dataset_coco.json", split, ("val2014", "train2014"))


def load_flickr30k(root: Path, split: str = "test") -> EvalSet:
    return load_karpathy("flickr30k", root, "dataset_flickr30k.json", split,
                         ("flickr30k-images", "flickr30k_images", "Images"))
