"""A generic suite for custom data: a CSV manifest with one column per modality.

``pairs.csv`` (or ``manifest.csv``, or ``manifest=FILE``) with any of the columns ``audio``,
``image`` (file paths relative to the manifest's folder) and ``text`` (the text itself;
``caption`` is accepted as its name). Every pair of present columns becomes a retrieval task.
With text, the items are the distinct audio/image files and the rows are their captions (an
item with several rows has several captions: the five-caption rule applies). Between audio
and image, the distinct audio files are the items and each row's image is one of their
matches. Empty cells leave a row out of the tasks that need them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import EvalSet, RetrievalTask, SuiteError, find_file, read_csv

ORDER = ("audio", "image", "text")


def load(root: Path, manifest: str | None = None) -> EvalSet:
    root = Path(root)
    if manifest:
        path = Path(manifest)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise SuiteError(f"{path}: no such manifest")
    else:
        path = find_file(root, ["pairs.csv", "manifest.csv"], "pairs", depth=0)
    rows = read_csv(path, [])
    if not rows:
        raise SuiteError(f"{path}: no rows")
    for r in rows:
        if "caption" in r and "text" not in r:
            r["text"] = r.pop("caption")
    present = [m for m in ORDER if m in rows[0]]
    if len(present) < 2:
        raise SuiteError(f"{path}: needs at least two of the columns audio, image, text "
                         f"(found {', '.join(rows[0]) or 'none'})")
    missing: list[str] = []
    ok_rows = []
    listed = set()
    for r in rows:
        bad = False
        for m in ("audio", "image"):
            if r.get(m):
                listed.add(r[m])
                p = path.parent / r[m]
                if not p.is_file():
                    missing.append(r[m])
                    bad = True
                else:
                    r[m] = str(p)
        if not bad:
            ok_rows.append(r)
    tasks = []
    for a_i, a in enumerate(present):
        for b in present[a_i + 1:]:
            item_m, cap_m = (a, b) if b == "text" or a == "audio" else (b, a)
            items: dict[str, int] = {}
            caps, owner = [], []
            for r in ok_rows:
                if r.get(item_m) and r.get(cap_m):
                    owner.append(items.setdefault(r[item_m], len(items)))
                    caps.append(r[cap_m])
            if items:
                tasks.append(RetrievalTask(item_m, cap_m, list(items), caps,
                                           np.asarray(owner, dtype=np.int64)))
    if not tasks:
        raise SuiteError(f"{path}: no row has two usable columns"
                         + (f" ({len(set(missing))} listed files missing)" if missing else ""))
    return EvalSet("pairs", root, tasks, listed=len(listed), missing=sorted(set(missing)),
                   notes=[f"manifest {path.name}: columns {', '.join(present)}"])
