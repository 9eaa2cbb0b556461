"""Clotho (Drossos et al., ICASSP 2020): audio–text retrieval on the evaluation split.

Layout: ``clotho_captions_evaluation.csv`` (``file_name,caption_1,…,caption_5``) at DIR (or
below it), audio in DIR/evaluation, DIR/clotho_audio_evaluation/evaluation, DIR/audio/evaluation,
DIR/audio or DIR, named as in ``file_name``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    EvalSet, RetrievalTask, SuiteError, find_dir, find_file, index_media, lookup, read_csv,
    require_some,
)


def load(root: Path, split: str = "evaluation") -> EvalSet:
    root = Path(root)
    csv_path = find_file(root, [f"clotho_captions_{split}.csv"], "Clotho")
    cols = [f"caption_{i}" for i in range(1, 6)]
    rows = read_csv(csv_path, ["file_name", *cols])
    if not rows:
        raise SuiteError(f"{csv_path}: no rows")
    audio_dir = find_dir(root, [split, f"clotho_audio_{split}/{split}", f"clotho_audio_{split}",
                                f"audio/{split}", "audio", "."], "Clotho audio")
    index = index_media(audio_dir, "audio")
    items, captions, owner, missing = [], [], [], []
    for r in rows:
        path = audio_dir / r["file_name"]
        if not path.is_file():
            path = lookup(index, [r["file_name"]])
        if path is None:
            missing.append(r["file_name"])
            continue
        caps = [r[c] for c in cols if r[c]]
        if not caps:
            raise SuiteError(f"{csv_path}: {r['file_name']} has no caption")
        items.append(str(path))
        captions.extend(caps)
        owner.extend([len(items) - 1] * len(caps))
    require_some("clotho", root, len(items), len(rows), "audio files")
    task = RetrievalTask("audio", "text", items, captions, np.asarray(owner, dtype=np.int64))
    return EvalSet("clotho", root, [task], listed=len(rows), missing=missing,
                   notes=[f"captions from {csv_path.relative_to(root)}"])
