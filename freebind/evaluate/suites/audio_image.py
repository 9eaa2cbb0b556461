"""Audio–image retrieval on sound-source datasets: VGG-SS and Flickr-SoundNet.

Both are published as a test manifest plus ``audio/`` and ``frames/`` folders (the layout of
the sound-source-localisation releases used by EZ-VSL/SLAVC): the manifest lists one id per
test sample; its audio is ``audio/<id>.<ext>`` and its frame ``frames/<id>.<ext>`` (``images/``
is accepted too). Accepted manifests, first found wins (or ``manifest=FILE``):

* ``vggss``: ``vggss.json`` / ``metadata/vggss.json`` (a list of ``{"file": id, …}`` or of ids),
  ``vggss_test.csv`` / ``metadata/vggss_test.csv``, ``test.csv``;
* ``flickrnet``: ``flickrnet.json``, ``flickr_test.csv`` / ``metadata/flickr_test.csv``,
  ``test.csv``.

A CSV manifest is either a single column of ids (no header, or a header ``file``/``id``), or
has ``audio`` and ``image`` columns with file paths relative to the manifest's folder.
Each pair is one item: retrieval is scored both ways (``a2i``, ``i2a``), one correct match.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    EvalSet, RetrievalTask, SuiteError, find_dir, find_file, index_media, lookup, require_some,
)

MANIFESTS = {
    "vggss": ["vggss.json", "metadata/vggss.json", "vggss_test.csv", "metadata/vggss_test.csv",
              "test.csv"],
    "flickrnet": ["flickrnet.json", "flickr_test.csv", "metadata/flickr_test.csv",
                  "flickrnet_test.csv", "test.csv"],
}


def read_manifest(path: Path) -> list[tuple[str | None, str | None, str]]:
    """``[(audio_path_or_None, image_path_or_None, id)]`` from a JSON or CSV manifest."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SuiteError(f"{path}: not a readable JSON manifest ({exc})") from None
        if isinstance(data, dict):
            data = data.get("data") or data.get("samples") or list(data.values())
        out = []
        for entry in data:
            if isinstance(entry, str):
                out.append((None, None, entry))
            elif isinstance(entry, dict) and ("file" in entry or "id" in entry):
                out.append((entry.get("audio"), entry.get("image"),
                            str(entry.get("file", entry.get("id")))))
            else:
                raise SuiteError(f"{path}: entries must be ids or objects with a 'file' key")
        return out
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read ({exc.strerror})") from None
    if not rows:
        return []
    head = [c.strip().lower() for c in rows[0]]
    if "audio" in head and "image" in head:
        a, i = head.index("audio"), head.index("image")
        ident = head.index("id") if "id" in head else None
        return [(r[a].strip(), r[i].strip(),
                 r[ident].strip() if ident is not None else Path(r[a].strip()).stem)
                for r in rows[1:]]
    if head[0] in ("file", "id", "filename", "name"):
        rows = rows[1:]
    return [(None, None, r[0].strip()) for r in rows]


def load_pairs(suite: str, root: Path, manifest: str | None = None) -> EvalSet:
    root = Path(root)
    path = Path(manifest) if manifest else find_file(root, MANIFESTS[suite], suite, depth=1)
    if manifest and not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise SuiteError(f"{path}: no such manifest")
    entries = read_manifest(path)
    if not entries:
        raise SuiteError(f"{path}: the manifest lists nothing")
    audio_index = image_index = None
    audios, images, missing = [], [], []
    for a, i, ident in entries:
        if a is None or i is None:
            if audio_index is None:
                audio_index = index_media(find_dir(root, ["audio"], f"{suite} audio"), "audio")
                image_index = index_media(find_dir(root, ["frames", "images"], f"{suite} frames"),
                                          "image")
        pa = (path.parent / a) if a else lookup(audio_index, [ident])
        pi = (path.parent / i) if i else lookup(image_index, [ident])
        absent = [what for what, p in (("audio", pa), ("image", pi))
                  if p is None or not Path(p).is_file()]
        if absent:
            missing.append(f"{ident} ({', '.join(absent)})")
            continue
        audios.append(str(pa))
        images.append(str(pi))
    require_some(suite, root, len(audios), len(entries), "pairs")
    task = RetrievalTask("audio", "image", audios, images, np.arange(len(audios)))
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return EvalSet(suite, root, [task], listed=len(entries), missing=missing,
                   notes=[f"pairs from {shown}"])


def load_vggss(root: Path, manifest: str | None = None) -> EvalSet:
    return load_pairs("vggss", root, manifest)


def load_flickrnet(root: Path, manifest: str | None = None) -> EvalSet:
    return load_pairs("flickrnet", root, manifest)
