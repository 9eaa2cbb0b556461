"""ESC-50 (Piczak, ACM MM 2015): zero-shot environmental sound classification, 50 classes.

Layout (the ESC-50 repository): ``meta/esc50.csv`` with
``filename,fold,target,category,esc10,src_file,take`` and ``audio/<filename>``. Class k is the
``category`` whose ``target`` is k, underscores written as spaces in prompts
(``dog``, ``crying baby``, ``door wood knock``). All folds are evaluated (zero-shot: no fold is
used for training); ``folds=1,2`` restricts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    ClassificationTask, EvalSet, SuiteError, data_file, find_dir, find_file, read_csv,
    read_templates, require_some,
)


def load(root: Path, templates: str | None = None, folds: str | None = None) -> EvalSet:
    root = Path(root)
    meta = find_file(root, ["meta/esc50.csv", "esc50.csv"], "ESC-50")
    base = meta.parent.parent if meta.parent.name == "meta" else meta.parent
    rows = read_csv(meta, ["filename", "fold", "target", "category"])
    if not rows:
        raise SuiteError(f"{meta}: no rows")
    names: dict[int, str] = {}
    for r in rows:
        try:
            t = int(r["target"])
        except ValueError:
            raise SuiteError(f"{meta}: target {r['target']!r} is not an integer") from None
        name = r["category"].replace("_", " ")
        if names.setdefault(t, name) != name:
            raise SuiteError(f"{meta}: target {t} names two categories "
                             f"({names[t]!r}, {name!r})")
    if sorted(names) != list(range(len(names))):
        raise SuiteError(f"{meta}: targets are not 0..{len(names) - 1}")
    if folds:
        wanted = {f.strip() for f in str(folds).split(",")}
        rows = [r for r in rows if r["fold"] in wanted]
    audio_dir = find_dir(base, ["audio"], "ESC-50 audio")
    items, labels, missing = [], [], []
    for r in rows:
        p = audio_dir / r["filename"]
        if not p.is_file():
            missing.append(r["filename"])
            continue
        items.append(str(p))
        labels.append(int(r["target"]))
    require_some("esc50", root, len(items), len(rows), "clips")
    tmpl = read_templates(templates or data_file("audio_templates.txt"))
    task = ClassificationTask("audio", items, [names[k] for k in range(len(names))], tmpl,
                              np.asarray(labels, dtype=np.int64))
    notes = [f"folds {folds}" if folds else "all folds"]
    return EvalSet("esc50", root, [task], listed=len(rows), missing=missing, notes=notes)
