"""AudioSet (Gemmeke et al., ICASSP 2017): zero-shot multi-label classification, mAP.

Layout: the segments CSV (``eval_segments.csv`` by default; ``#``-comment header lines, then
``YTID, start_seconds, end_seconds, "mid1,mid2,…"``) and ``class_labels_indices.csv``
(``index,mid,display_name``), with audio below DIR/eval_segments, DIR/audio/eval,
DIR/audio, DIR/eval or DIR, named ``<YTID>``, ``Y<YTID>``, ``<YTID>_<start>`` or
``<YTID>_<start>_<end>`` (seconds, as written or as integers) with any audio extension.
Many published copies lack some clips: these are counted and reported as missing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    ClassificationTask, EvalSet, SuiteError, data_file, find_dir, find_file, index_media,
    lookup, read_csv, read_templates, require_some,
)


def _segments(path: Path) -> list[tuple[str, str, str, list[str]]]:
    out = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read ({exc.strerror})") from None
    for n, row in enumerate(csv.reader(lines, skipinitialspace=True), 1):
        if len(row) < 4:
            raise SuiteError(f"{path}: row {n} has {len(row)} fields, expected "
                             "YTID, start_seconds, end_seconds, positive_labels")
        mids = [m.strip() for m in ",".join(row[3:]).split(",") if m.strip()]
        out.append((row[0].strip(), row[1].strip(), row[2].strip(), mids))
    return out


def _seconds(text: str) -> list[str]:
    try:
        v = float(text)
    except ValueError:
        return [text]
    return list(dict.fromkeys([text, str(int(v)), f"{v:.3f}", f"{v:.1f}", str(int(v * 1000))]))


def load(root: Path, segments: str = "eval_segments.csv", templates: str | None = None) -> EvalSet:
    root = Path(root)
    seg_path = find_file(root, [segments, f"metadata/{segments}"], "AudioSet")
    labels_path = find_file(root, ["class_labels_indices.csv",
                                   "metadata/class_labels_indices.csv"], "AudioSet")
    classes = read_csv(labels_path, ["index", "mid", "display_name"])
    try:
        order = sorted(classes, key=lambda r: int(r["index"]))
    except ValueError:
        raise SuiteError(f"{labels_path}: index column is not integer") from None
    if [int(r["index"]) for r in order] != list(range(len(order))):
        raise SuiteError(f"{labels_path}: indices are not 0..{len(order) - 1}")
    mid_index = {r["mid"]: int(r["index"]) for r in order}
    names = [r["display_name"] for r in order]

    segs = _segments(seg_path)
    if not segs:
        raise SuiteError(f"{seg_path}: no segments")
    audio_dir = find_dir(root, ["eval_segments", "audio/eval_segments", "audio/eval", "eval",
                                "audio", "."], "AudioSet audio")
    index = index_media(audio_dir, "audio")
    items, rows, missing, unknown = [], [], [], set()
    for ytid, start, end, mids in segs:
        cands = [ytid, f"Y{ytid}"]
        for s in _seconds(start):
            cands += [f"{ytid}_{s}", f"Y{ytid}_{s}"]
            for e in _seconds(end):
                cands += [f"{ytid}_{s}_{e}", f"Y{ytid}_{s}_{e}"]
        path = lookup(index, cands)
        if path is None:
            missing.append(ytid)
            continue
        target = np.zeros(len(names), dtype=np.int8)
        for m in mids:
            if m in mid_index:
                target[mid_index[m]] = 1
            else:
                unknown.add(m)
        items.append(str(path))
        rows.append(target)
    require_some("audioset", root, len(items), len(segs), "segments")
    notes = [f"segments from {seg_path.name}"]
    if unknown:
        notes.append(f"{len(unknown)} label id(s) not in {labels_path.name} ignored: "
                     + ", ".join(sorted(unknown)[:5]))
    tmpl = read_templates(templates or data_file("audio_templates.txt"))
    task = ClassificationTask("audio", items, names, tmpl, np.stack(rows), multilabel=True)
    return EvalSet("audioset", root, [task], listed=len(segs), missing=missing, notes=notes)
