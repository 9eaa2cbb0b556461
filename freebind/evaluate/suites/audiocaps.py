"""AudioCaps (Kim et al., NAACL 2019): audio–text retrieval on the test split.

Layout: ``test.csv`` (``audiocap_id,youtube_id,start_time,caption``; one row per caption,
five rows per clip) at DIR, DIR/dataset or DIR/csv_files, and the audio below DIR/audio/test,
DIR/test, DIR/audio or DIR. A clip's file may be named by its YouTube id (``<ytid>.wav``,
``Y<ytid>.wav``, ``<ytid>_<start>.wav``) or by the ``audiocap_id`` of any of its captions;
all are accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    EvalSet, RetrievalTask, SuiteError, find_dir, find_file, index_media, lookup, read_csv,
    require_some,
)


def load(root: Path, split: str = "test") -> EvalSet:
    root = Path(root)
    csv_path = find_file(root, [f"{split}.csv"], "AudioCaps")
    rows = read_csv(csv_path, ["audiocap_id", "youtube_id", "start_time", "caption"])
    if not rows:
        raise SuiteError(f"{csv_path}: no rows")
    audio_dir = find_dir(root, [f"audio/{split}", split, "audio", "waveforms", "."],
                         "AudioCaps audio")
    index = index_media(audio_dir, "audio")

    clips: dict[str, dict] = {}
    for r in rows:
        clip = clips.setdefault(r["youtube_id"], {"ids": [], "captions": [],
                                                  "start": r["start_time"]})
        clip["ids"].append(r["audiocap_id"])
        clip["captions"].append(r["caption"])

    items, captions, owner, missing = [], [], [], []
    for ytid, clip in clips.items():
        start = clip["start"]
        try:
            start_int = str(int(float(start)))
        except ValueError:
            start_int = start
        names = [ytid, f"Y{ytid}", f"{ytid}_{start}", f"{ytid}_{start_int}",
                 f"Y{ytid}_{start_int}", *clip["ids"]]
        path = lookup(index, names)
        if path is None:
            missing.append(ytid)
            continue
        items.append(str(path))
        for c in clip["captions"]:
            captions.append(c)
            owner.append(len(items) - 1)
    require_some("audiocaps", root, len(items), len(clips), "clips")
    task = RetrievalTask("audio", "text", items, captions, np.asarray(owner, dtype=np.int64))
    notes = [f"captions from {csv_path.relative_to(root)}, audio from "
             f"{audio_dir.relative_to(root).as_posix() if audio_dir != root else '.'}"]
    return EvalSet("audiocaps", root, [task], listed=len(clips), missing=missing, notes=notes)
