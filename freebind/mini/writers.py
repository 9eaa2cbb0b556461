"""Writing the mini world to disk: unpaired pools (the input of ``freebind build``) and
evaluation sets in the real datasets' on-disk layouts (the input of ``freebind eval``).

Every file is written atomically (temporary file, then ``os.replace``), so an interrupted
run never leaves a truncated WAV or PNG behind; re-running with the same seed rewrites
identical bytes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from freebind.util.atomic import atomic_write_bytes, atomic_write_text

from freebind.util.errors import UsageError
from freebind.mini.captions import caption
from freebind.mini.render import SAMPLE_RATE, render_audio, render_image
from freebind.mini.world import CLASSES, GENERATOR_VERSION, balanced_events, rng, sample_event

#: Text pool mix: which attributes a pool caption talks about.
TEXT_FOCUS_MIX = (("audio", 0.4), ("image", 0.4), ("both", 0.2))

#: Every evaluation set: (suite name, also its sub-folder; items; task; on-disk layout).
_EVALSET_ROWS = (
    ("audiocaps", 500, "audio-text retrieval",
     "test.csv (audiocap_id,youtube_id,start_time,caption; 5 rows per clip) + "
     "audio/<youtube_id>.wav"),
    ("clotho", 500, "audio-text retrieval",
     "clotho_captions_evaluation.csv (file_name,caption_1..caption_5) + evaluation/<file_name>"),
    ("esc50", 400, "audio classification",
     "meta/esc50.csv (filename,fold,target,category,esc10,src_file,take) + audio/<filename>"),
    ("coco", 1000, "image-text retrieval",
     "dataset_coco.json (Karpathy; test split + a val split) + val2014/<filename>"),
    ("flickr30k", 1000, "image-text retrieval",
     "dataset_flickr30k.json (Karpathy; test split + a val split) + "
     "flickr30k-images/<filename>"),
    ("imagenet", 600, "image classification",
     "val/<synset>/<file>.png + classnames.txt + LOC_synset_mapping.txt"),
    ("vggss", 500, "audio-image retrieval",
     "vggss.json ([{file, class}]) + audio/<file>.wav + frames/<file>.png; "
     "manifest.csv (audio,image,label)"),
    ("modelnet40", 400, "3D shape classification",
     "modelnet40_shape_names.txt + test_split.json + test_pc.npy (OpenShape/Uni3D)"),
    ("objaverse-lvis", 400, "3D shape classification",
     "lvis_testset.txt (cate_id,cate_name,model_id,point_path) + lvis/<uid>.npy"),
    ("cap3d", 500, "point-text and point-image retrieval",
     "Cap3D_automated_Objaverse.csv (uid,caption) + points/<uid>.ply + images/<uid>.png"),
)
#: The evaluation sets ``write_evalsets`` writes: suite name -> path, items, task, layout.
EVALSETS: dict[str, dict] = {name: {"path": name, "items": items, "task": task, "layout": layout}
                             for name, items, task, layout in _EVALSET_ROWS}
#: Extra Karpathy "val" items written next to the test split (loaders must filter splits).
KARPATHY_VAL_ITEMS = 50
CAPTIONS_PER_ITEM = 5
ESC10 = ("dog", "rooster", "bird", "bell", "siren", "car_horn", "engine", "train", "clock",
         "hammer")


# -------------------------------------------------------------------------------- file I/O

def _atomic_bytes(path: Path, data: bytes) -> None:
    # thousands of small regenerable files: atomic rename, no fsync per file
    atomic_write_bytes(path, data, fsync=False)


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text, fsync=False)


def wav_bytes(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _prepare_dir(root) -> Path:
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _bar(total: int, desc: str, progress: bool):
    from freebind.util.progress import bar

    return bar(total=total, desc=desc, unit="file", disable=not progress, leave=False)


def _check_count(name: str, n: int, minimum: int = 0) -> int:
    if not isinstance(n, (int, np.integer)) or n < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# ----------------------------------------------------------------------------------- pools

def pool_texts(n: int, seed: int) -> list[str]:
    """The text pool: captions of independently drawn events, mixed focus."""
    g = rng("pool", "text", seed)
    foci = [f for f, _ in TEXT_FOCUS_MIX]
    probs = [p for _, p in TEXT_FOCUS_MIX]
    out = []
    for _ in range(n):
        e = sample_event(g)
        out.append(caption(e, g, foci[int(g.choice(len(foci), p=probs))]))
    return out


def _pool_item(args) -> None:
    """Render pool item ``i`` of a modality from its own stream (pool/modality/seed/i)."""
    modality, seed, i, root = args
    g = rng("pool", modality, seed, i)
    e = sample_event(g)
    if modality == "audio":
        _atomic_bytes(Path(root) / "audio" / f"audio_{i:05d}.wav", wav_bytes(render_audio(e, g)))
    elif modality == "point":
        _atomic_bytes(Path(root) / "point" / f"point_{i:05d}.ply", cloud_bytes(e, g))
    else:
        _atomic_bytes(Path(root) / "image" / f"image_{i:05d}.png", png_bytes(render_image(e, g)))


def _process_pool(workers: int):
    """A pool of ``workers`` processes, forked where the platform can (the workers inherit
    the loaded modules instead of importing them again)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def _render_chunk(fn, chunk) -> int:
    for args in chunk:
        fn(args)
    return len(chunk)


def _parallel(fn, tasks: list, desc: str, progress: bool, workers: int | None = None) -> None:
    """Run ``fn`` over ``tasks`` in worker processes (in-process when small or single-core);
    each task seeds its own stream, so the files do not depend on the worker count."""
    workers = workers or min(4, os.cpu_count() or 1)
    with _bar(len(tasks), desc, progress) as bar:
        if workers <= 1 or len(tasks) < 64:
            for t in tasks:
                fn(t)
                bar.update()
            return
        size = max(16, len(tasks) // (workers * 8))
        chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
        with _process_pool(workers) as ex:
            for done in ex.map(_render_chunk, [fn] * len(chunks), chunks):
                bar.update(done)


def cloud_bytes(event, g) -> bytes:
    """An event's point cloud as a binary PLY with colours (freebind.mini.shapes)."""
    from freebind.data.points import ply_bytes
    from freebind.mini.shapes import render_points

    return ply_bytes(*render_points(event, g))


def write_pools(root, n_audio: int = 3000, n_image: int = 3000, n_text: int = 3000,
                seed: int = 0, progress: bool = False, n_point: int = 0) -> dict:
    """Write unpaired pools: ``audio/*.wav``, ``image/*.png``, ``texts.txt``, ``pools.json``
    (and ``point/*.ply`` when ``n_point`` > 0: coloured point clouds of events).

    Each modality is drawn from its own random stream (``pool``/modality/seed): no item of
    one modality is paired with an item of another. Returns the summary written to
    ``pools.json``."""
    n_audio = _check_count("n_audio", n_audio)
    n_image = _check_count("n_image", n_image)
    n_text = _check_count("n_text", n_text)
    seed = _check_seed(seed)
    root = _prepare_dir(root)

    _parallel(_pool_item, [("audio", seed, i, str(root)) for i in range(n_audio)],
              "audio pool", progress)
    _parallel(_pool_item, [("image", seed, i, str(root)) for i in range(n_image)],
              "image pool", progress)
    _atomic_text(root / "texts.txt", "".join(t + "\n" for t in pool_texts(n_text, seed)))
    summary = {"generator": GENERATOR_VERSION, "seed": seed,
               "audio": "audio", "image": "image", "text": "texts.txt",
               "counts": {"audio": n_audio, "image": n_image, "text": n_text}}
    n_point = _check_count("n_point", n_point)
    if n_point:
        _parallel(_pool_item, [("point", seed, i, str(root)) for i in range(n_point)],
                  "point pool", progress)
        summary["point"] = "point"
        summary["counts"]["point"] = n_point
    _atomic_text(root / "pools.json", json.dumps(summary, indent=2) + "\n")
    return summary


# ------------------------------------------------------------------------------- evalsets

def _youtube_id(g: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return "".join(alphabet[i] for i in g.integers(0, 64, size=11))


def _audiocaps(root: Path, seed: int, n: int, bar) -> None:
    g = rng("evalset", "audiocaps", seed)
    rows, used, cap_id = [], set(), 90000 + int(g.integers(0, 9000))
    for _ in range(n):
        e = sample_event(g)
        yid = _youtube_id(g)
        while yid in used:
            yid = _youtube_id(g)
        used.add(yid)
        start = int(g.integers(0, 30)) * 10
        _atomic_bytes(root / "audio" / f"{yid}.wav", wav_bytes(render_audio(e, g)))
        for _ in range(CAPTIONS_PER_ITEM):
            cap_id += 1
            rows.append((cap_id, yid, start, caption(e, g, "audio")))
        bar.update()
    _atomic_text(root / "test.csv",
                 _csv_text(("audiocap_id", "youtube_id", "start_time", "caption"), rows))


def _clotho(root: Path, seed: int, n: int, bar) -> None:
    g = rng("evalset", "clotho", seed)
    rows = []
    for i in range(n):
        e = sample_event(g)
        name = f"mini_clip_{i:04d}.wav"
        _atomic_bytes(root / "evaluation" / name, wav_bytes(render_audio(e, g)))
        rows.append((name, *(caption(e, g, "audio") for _ in range(CAPTIONS_PER_ITEM))))
        bar.update()
    header = ("file_name", *(f"caption_{k}" for k in range(1, CAPTIONS_PER_ITEM + 1)))
    _atomic_text(root / "clotho_captions_evaluation.csv", _csv_text(header, rows))


def _esc50(root: Path, seed: int, n: int, bar) -> None:
    g = rng("evalset", "esc50", seed)
    per_class = max(1, n // len(CLASSES))
    events = balanced_events(g, per_class)
    order = g.permutation(len(events))
    rows = []
    for k, idx in enumerate(order):
        e = events[idx]
        fold = k % 5 + 1
        src = int(g.integers(100000, 999999))
        name = f"{fold}-{src}-A-{e.label}.wav"
        _atomic_bytes(root / "audio" / name, wav_bytes(render_audio(e, g)))
        rows.append((name, fold, e.label, e.cls, e.cls in ESC10, src, "A"))
        bar.update()
    rows.sort(key=lambda r: (r[1], r[0]))
    _atomic_text(root / "meta" / "esc50.csv",
                 _csv_text(("filename", "fold", "target", "category", "esc10", "src_file",
                            "take"), rows))


def _karpathy(root: Path, seed: int, n: int, bar, dataset: str) -> None:
    g = rng("evalset", dataset, seed)
    images, sentid = [], 0
    folder = "val2014" if dataset == "coco" else "flickr30k-images"
    for i in range(n + KARPATHY_VAL_ITEMS):
        e = sample_event(g)
        split = "test" if i < n else "val"
        if dataset == "coco":
            cocoid = 100000 + i * 7 + int(g.integers(0, 7))
            filename = f"COCO_val2014_{cocoid:012d}.png"
        else:
            cocoid = None
            filename = f"{1000000 + i * 13 + int(g.integers(0, 13))}.png"
        _atomic_bytes(root / folder / filename, png_bytes(render_image(e, g)))
        sentences = []
        for _ in range(CAPTIONS_PER_ITEM):
            raw = caption(e, g, "image")
            sentences.append({"tokens": raw.lower().replace(",", " ").split(), "raw": raw,
                              "imgid": i, "sentid": sentid})
            sentid += 1
        entry = {"filename": filename, "imgid": i, "split": split, "sentences": sentences,
                 "sentids": [s["sentid"] for s in sentences]}
        if dataset == "coco":
            entry.update({"filepath": folder, "cocoid": cocoid})
        images.append(entry)
        bar.update()
    _atomic_text(root / f"dataset_{dataset}.json",
                 json.dumps({"images": images, "dataset": dataset}) + "\n")


def synset_id(label: int) -> str:
    return f"n{90000000 + label:08d}"


def _imagenet(root: Path, seed: int, n: int, bar) -> None:
    g = rng("evalset", "imagenet", seed)
    per_class = max(1, n // len(CLASSES))
    for k, e in enumerate(balanced_events(g, per_class)):
        syn = synset_id(e.label)
        _atomic_bytes(root / "val" / syn / f"ILSVRC2012_val_{k + 1:08d}.png",
                      png_bytes(render_image(e, g)))
        bar.update()
    names = [c.replace("_", " ") for c in CLASSES]
    _atomic_text(root / "classnames.txt", "".join(n_ + "\n" for n_ in names))
    _atomic_text(root / "LOC_synset_mapping.txt",
                 "".join(f"{synset_id(i)} {n_}\n" for i, n_ in enumerate(names)))


def _vggss(root: Path, seed: int, n: int, bar) -> None:
    g = rng("evalset", "vggss", seed)
    entries, rows = [], []
    for i in range(n):
        e = sample_event(g)
        fid = f"{_youtube_id(g)}_{int(g.integers(0, 30)) * 10:06d}"
        _atomic_bytes(root / "audio" / f"{fid}.wav", wav_bytes(render_audio(e, g)))
        _atomic_bytes(root / "frames" / f"{fid}.png", png_bytes(render_image(e, g)))
        entries.append({"file": fid, "class": e.cls.replace("_", " ")})
        rows.append((f"audio/{fid}.wav", f"frames/{fid}.png", e.cls.replace("_", " ")))
        bar.update()
    _atomic_text(root / "vggss.json", json.dumps(entries, indent=1) + "\n")
    _atomic_text(root / "manifest.csv", _csv_text(("audio", "image", "label"), rows))


_WRITERS: dict[str, Callable] = {
    "audiocaps": _audiocaps, "clotho": _clotho, "esc50": _esc50,
    "coco": lambda r, s, n, b: _karpathy(r, s, n, b, "coco"),
    "flickr30k": lambda r, s, n, b: _karpathy(r, s, n, b, "flickr30k"),
    "imagenet": _imagenet, "vggss": _vggss,
    "modelnet40": lambda r, s, n, b: _3d("write_modelnet40", r, s, n, b),
    "objaverse-lvis": lambda r, s, n, b: _3d("write_objaverse_lvis", r, s, n, b),
    "cap3d": lambda r, s, n, b: _3d("write_cap3d", r, s, n, b),
}


def _3d(writer: str, root: Path, seed: int, n: int, bar) -> None:
    from freebind.mini import writers3d

    getattr(writers3d, writer)(root, seed, n, bar, (_atomic_bytes, _atomic_text, png_bytes))


def _write_suite(job) -> None:
    name, path, seed, n, progress = job
    extra = KARPATHY_VAL_ITEMS if name in ("coco", "flickr30k") else 0
    with _bar(n + extra, name, progress) as bar:
        _WRITERS[name](Path(path), seed, n, bar)


def write_evalsets(root, seed: int = 0, suites: list[str] | None = None,
                   progress: bool = False, items: int | None = None) -> dict:
    """Write the evaluation sets under ``root/<suite>/`` in the real datasets' layouts and
    an index ``root/evalsets.json``. Random streams are keyed ``evalset``/suite/seed, a
    purpose that training never draws from. ``items`` overrides every suite's size (tests)."""
    seed = _check_seed(seed)
    suites = list(EVALSETS) if suites is None else list(suites)
    unknown = [s for s in suites if s not in EVALSETS]
    if unknown:
        raise UsageError(f"unknown mini evaluation set(s): {', '.join(unknown)} "
                         f"(known: {', '.join(EVALSETS)})")
    if items is not None:
        _check_count("items", items, minimum=len(CLASSES))
    root = _prepare_dir(root)
    previous = _read_index(root)
    for name in suites:   # never mix a rewritten set with another's files
        folder = root / EVALSETS[name]["path"]
        if folder.exists() and any(folder.iterdir()) and name not in previous.get("suites", {}):
            raise UsageError(f"{folder}: exists and was not written by write_evalsets (no "
                             f"entry in {root / 'evalsets.json'}); choose another folder")
    index = {"generator": GENERATOR_VERSION, "seed": seed, "suites": {}}
    jobs = []
    scratch = root / f".evalsets-tmp-{os.getpid()}"
    for name in suites:
        spec = EVALSETS[name]
        n = spec["items"] if items is None else items
        jobs.append((name, str(scratch / spec["path"]), seed, n, progress))
        if name in ("esc50", "imagenet"):
            n = (n // len(CLASSES)) * len(CLASSES)
        index["suites"][name] = {**spec, "items": n}
    workers = min(len(jobs), os.cpu_count() or 1, 4)
    if workers > 1 and sum(j[3] for j in jobs) >= 400:
        # largest first, so that the workers finish together
        jobs.sort(key=lambda j: -j[3] * (2 if j[0] == "vggss" else 1))
        with _process_pool(workers) as ex:
            list(ex.map(_write_suite, jobs))
    else:
        for job in jobs:
            _write_suite(job)
    # each rewritten set replaces the old one whole: no file of a larger earlier set stays
    import shutil

    for name in suites:
        folder, fresh = root / EVALSETS[name]["path"], scratch / EVALSETS[name]["path"]
        old = folder.with_name(f".{folder.name}-old-{os.getpid()}")
        if folder.exists():
            os.replace(folder, old)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fresh, folder)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    if previous.get("generator") == GENERATOR_VERSION and previous.get("seed") == seed:
        kept = {k: v for k, v in previous.get("suites", {}).items()
                if k not in index["suites"] and k in EVALSETS
                and (root / EVALSETS[k]["path"]).is_dir()}
        index["suites"] = {**kept, **index["suites"]}
    _atomic_text(root / "evalsets.json", json.dumps(index, indent=2) + "\n")
    return index


def _read_index(root: Path) -> dict:
    try:
        data = json.loads((root / "evalsets.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
