"""What a suite loader returns: tasks over listed media, what was missing, and the protocol.

A loader reads a dataset as published on disk and returns an :class:`EvalSet`: one or more
tasks (retrieval, zero-shot classification, multi-label classification), each naming the
items it needs per modality. The runner embeds those items with a space, then calls
:meth:`EvalSet.score` with the embeddings. Files the dataset lists but that are not on disk
are dropped *and counted* (``EvalSet.missing``); they are reported, never silently ignored.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from freebind.util.errors import UsageError
from freebind.util.vocab import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

#: Retrieval cut-offs and the mAP depth used by every retrieval suite.
RETRIEVAL_KS = (1, 5, 10)
MAP_K = 10
TIE_POLICY = ("pessimistic: a wrong candidate with the same score as a correct one ranks "
              "before it")


class SuiteError(UsageError):
    """A dataset folder does not have the layout a suite expects, or lists nothing usable."""


# --- tasks ------------------------------------------------------------------------------

@dataclass
class RetrievalTask:
    """Items (``item_modality``) and captions (``caption_modality``), each caption owned by
    one item. Scored in both directions with the five-caption rule."""

    item_modality: str
    caption_modality: str
    items: list[Any]
    captions: list[Any]
    caption_item: np.ndarray
    kind: str = "retrieval"

    def inputs(self) -> dict[str, list[Any]]:
        if self.item_modality == self.caption_modality:
            raise SuiteError("a retrieval task needs two different modalities")
        return {self.item_modality: list(self.items), self.caption_modality: list(self.captions)}

    def score(self, emb: dict[str, np.ndarray], block_rows: int | None = None,
              budget_bytes: int | None = None) -> dict[str, float]:
        """Metrics from the embeddings (arrays, memory maps or store views), streamed: the
        cosine similarities are computed and counted a block at a time
        (:func:`~freebind.evaluate.metrics.paired_retrieval_from_embeddings`)."""
        from freebind.evaluate.metrics import paired_retrieval_from_embeddings

        return paired_retrieval_from_embeddings(
            emb[self.caption_modality], emb[self.item_modality], self.caption_item,
            caption=self.caption_modality, item=self.item_modality, ks=RETRIEVAL_KS,
            map_k=MAP_K, block_rows=block_rows, budget_bytes=budget_bytes)

    def score_similarity(self, sim: np.ndarray) -> dict[str, float]:
        """Metrics from the ``[n_captions, n_items]`` cosine similarity matrix."""
        from freebind.evaluate.metrics import paired_retrieval_metrics

        return paired_retrieval_metrics(sim, self.caption_item, caption=self.caption_modality,
                                        item=self.item_modality, ks=RETRIEVAL_KS, map_k=MAP_K)

    def keep(self, modality: str, kept: Sequence[int]) -> "RetrievalTask":
        """Drop the items (or captions) of ``modality`` not in ``kept``; an item whose captions
        are all gone is dropped too, and so are the captions of a dropped item."""
        item_ok = np.ones(len(self.items), bool)
        cap_ok = np.ones(len(self.captions), bool)
        if modality == self.item_modality:
            item_ok[:] = False
            item_ok[np.asarray(kept, dtype=int)] = True
        elif modality == self.caption_modality:
            cap_ok[:] = False
            cap_ok[np.asarray(kept, dtype=int)] = True
        cap_ok &= item_ok[self.caption_item]
        item_ok &= np.bincount(self.caption_item[cap_ok], minlength=len(self.items)) > 0
        cap_ok &= item_ok[self.caption_item]
        new_index = np.cumsum(item_ok) - 1
        return RetrievalTask(self.item_modality, self.caption_modality,
                             [x for x, ok in zip(self.items, item_ok) if ok],
                             [x for x, ok in zip(self.captions, cap_ok) if ok],
                             new_index[self.caption_item[cap_ok]])

    def describe(self) -> dict[str, Any]:
        from freebind.evaluate.metrics import LETTERS

        c, i = LETTERS[self.caption_modality], LETTERS[self.item_modality]
        per = np.bincount(self.caption_item, minlength=len(self.items)) if self.items else []
        return {
            "task": "retrieval",
            "directions": [f"{c}2{i}", f"{i}2{c}"],
            "n_items": len(self.items), "n_captions": len(self.captions),
            "captions_per_item": sorted({int(x) for x in per}),
            "rule": (f"{c}2{i}: a {self.caption_modality} query has one correct "
                     f"{self.item_modality}; {i}2{c}: a {self.item_modality} query is a hit "
                     f"at K when any of its {self.caption_modality} items ranks within K"),
            "metrics": [f"R@{k}" for k in RETRIEVAL_KS] + [f"mAP@{MAP_K}"],
            "similarity": "cosine", "ties": TIE_POLICY,
        }


@dataclass
class ClassificationTask:
    """Zero-shot classification (``multilabel=False``: one label per item, acc@k) or
    multi-label classification (``multilabel=True``: a 0/1 target matrix, mAP). Class
    embeddings average the text embeddings of ``templates`` filled with each class name."""

    modality: str
    items: list[Any]
    classnames: list[str]
    templates: list[str]
    labels: np.ndarray            # [N] class index, or [N, C] 0/1 targets when multilabel
    multilabel: bool = False

    @property
    def kind(self) -> str:
        return "multilabel_classification" if self.multilabel else "zeroshot_classification"

    def prompts(self) -> list[str]:
        return [t.replace("{c}", c) for c in self.classnames for t in self.templates]

    def inputs(self) -> dict[str, list[Any]]:
        return {self.modality: list(self.items), "text": self.prompts()}

    def class_weights(self, text) -> np.ndarray:
        """``[C, d]`` class embeddings from the prompts' rows (``prompts()`` order), read a
        group of classes at a time (``text`` may be a memory map or store view)."""
        from freebind.evaluate.metrics import class_embeddings

        c, t = len(self.classnames), len(self.templates)
        group = max(1, (64 << 20) // max(1, 8 * t * int(text.shape[1])))
        return np.concatenate([
            class_embeddings(np.asarray(text[c0 * t:min(c, c0 + group) * t]).reshape(
                min(c, c0 + group) - c0, t, -1)) for c0 in range(0, c, group)])

    def score(self, emb: dict[str, np.ndarray], block_rows: int | None = None,
              budget_bytes: int | None = None) -> dict[str, float]:
        """Metrics streamed over blocks of items (no ``[N, C]`` logits beyond the budget)."""
        from freebind.evaluate.metrics.classification import zero_shot_from_embeddings
        from freebind.evaluate.metrics.multilabel import map_from_embeddings

        weights = self.class_weights(emb["text"])
        items = emb[self.modality]
        if self.multilabel:
            m, _, _ = map_from_embeddings(items, weights, self.labels, block_rows,
                                          budget_bytes)
            return {"mAP": m}
        return zero_shot_from_embeddings(items, weights, self.labels, (1, 5), block_rows,
                                         budget_bytes)

    def keep(self, modality: str, kept: Sequence[int]) -> "ClassificationTask":
        if modality != self.modality:
            if len(kept) != len(self.prompts()):
                raise SuiteError("a class prompt could not be encoded")
            return self
        idx = np.asarray(kept, dtype=int)
        return ClassificationTask(self.modality, [self.items[i] for i in idx], self.classnames,
                                  self.templates, self.labels[idx], self.multilabel)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "task": self.kind, "modality": self.modality, "n_items": len(self.items),
            "n_classes": len(self.classnames), "templates": list(self.templates),
            "class_embedding": "mean of L2-normalised template embeddings, re-normalised",
            "similarity": "cosine",
        }
        if self.multilabel:
            d["metrics"] = ["mAP"]
            d["rule"] = ("average precision per class (thresholds; tied scores enter "
                         "together), averaged over classes with at least one positive")
            d["n_classes_with_positives"] = int((np.asarray(self.labels).sum(0) > 0).sum())
        else:
            d["metrics"] = ["acc1", "acc5", "mean_per_class_recall"]
            d["rule"] = "top-k accuracy over all classes; " + TIE_POLICY
        return d


# --- the evaluation set -------------------------------------------------------------------

@dataclass
class EvalSet:
    """A loaded suite: its tasks, where it came from, and what it listed but did not find."""

    suite: str
    root: Path
    tasks: list[Any]
    listed: int = 0                          # media files the dataset lists
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def inputs(self) -> dict[str, list[Any]]:
        """Every item to embed, per modality, without duplicates, in first-seen order."""
        out: dict[str, dict[Any, None]] = {}
        for task in self.tasks:
            for m, items in task.inputs().items():
                out.setdefault(m, {}).update(dict.fromkeys(items))
        return {m: list(v) for m, v in out.items()}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.inputs())

    def score(self, embeddings: dict[str, dict[Any, np.ndarray] | tuple],
              block_rows: int | None = None,
              budget_bytes: int | None = None) -> dict[str, float]:
        """``embeddings[modality]`` is ``(items, array)``: the rows of ``array`` (in memory,
        memory-mapped or a store view) embed ``items`` (any superset of what the tasks need,
        in any order). The metrics stream in blocks (``block_rows``, else from
        ``budget_bytes``)."""
        metrics: dict[str, float] = {}
        for task in self.tasks:
            emb = {}
            for m, wanted in task.inputs().items():
                items, array = embeddings[m]
                emb[m] = select_rows(array, rows_of(items, wanted))
            for k, v in task.score(emb, block_rows=block_rows,
                                   budget_bytes=budget_bytes).items():
                if k in metrics:
                    raise SuiteError(f"{self.suite}: two tasks report {k}")
                metrics[k] = v
        return metrics

    def drop_failed(self, modality: str, failed: Iterable[Any]) -> "EvalSet":
        """The same set without the items of ``modality`` that could not be decoded; they are
        added to ``missing`` as ``<item> (unreadable)``."""
        failed = set(failed)
        if not failed:
            return self
        tasks = []
        for task in self.tasks:
            items = task.inputs().get(modality)
            if items is None:
                tasks.append(task)
                continue
            kept = [i for i, x in enumerate(items) if x not in failed]
            tasks.append(task.keep(modality, kept))
        missing = self.missing + [f"{x} (unreadable)" for x in sorted(map(str, failed))]
        return EvalSet(self.suite, self.root, tasks, self.listed, missing, list(self.notes))

    def protocol(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "tasks": [t.describe() for t in self.tasks],
            "listed": self.listed, "missing": len(self.missing),
            "missing_examples": self.missing[:10],
            "notes": list(self.notes),
        }


def rows_of(items: Sequence[Any], wanted: Sequence[Any]) -> np.ndarray:
    """Row indices in ``items`` of each of ``wanted``."""
    row = {x: i for i, x in enumerate(items)}
    return np.fromiter((row[x] for x in wanted), dtype=np.int64, count=len(wanted))


def select_rows(array, rows: np.ndarray):
    """Rows ``rows`` of ``array`` without copying a memory-mapped or stored pool: the array
    itself when ``rows`` takes every row in order, a store view's subset, else an array
    in memory indexed, else a :class:`RowSelection` read block by block."""
    rows = np.asarray(rows, dtype=np.int64)
    n = len(array)
    if len(rows) == n and np.array_equal(rows, np.arange(n)):
        return array
    if hasattr(array, "subset"):                     # freebind.data.store.PoolView
        return array.subset(rows)
    if isinstance(array, np.ndarray) and not isinstance(array, np.memmap):
        return array[rows]
    return RowSelection(array, rows)


class RowSelection:
    """Some rows of a large array (a memory map), read when asked: ``sel[a:b]`` and
    ``sel[int array]`` gather from the array; ``len`` and ``.shape`` are the selection's."""

    ndim = 2

    def __init__(self, array, rows: np.ndarray):
        self.array, self.index = array, np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.index), int(self.array.shape[1]))

    @property
    def dtype(self):
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        idx = self.index[key]
        if np.ndim(idx) == 0:
            return np.asarray(self.array[int(idx)])
        order = np.argsort(idx, kind="stable")     # a memory map reads best in order
        out = np.empty((len(idx), self.shape[1]), dtype=self.array.dtype)
        out[order] = np.asarray(self.array[idx[order]])
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


# --- helpers for loaders ------------------------------------------------------------------

def find_file(root: Path, names: Sequence[str], what: str, depth: int = 3) -> Path:
    """``root/<name>`` for the first name found at ``root`` or up to ``depth`` folders below."""
    root = Path(root)
    if not root.is_dir():
        raise SuiteError(f"{root}: no such folder (expected the {what} dataset folder)")
    for name in names:
        if (root / name).is_file():
            return root / name
    for level in range(1, depth + 1):
        pattern = "/".join(["*"] * level)
        for name in names:
            hits = sorted(root.glob(f"{pattern}/{name}"))
            if hits:
                return hits[0]
    raise SuiteError(f"{root}: no {' or '.join(names)} found (the {what} layout)")


def find_dir(root: Path, names: Sequence[str], what: str) -> Path:
    """The first existing folder among ``root/<name>``; ``root`` itself for ``"."``."""
    for name in names:
        p = Path(root) / name
        if p.is_dir():
            return p
    raise SuiteError(f"{root}: none of the folders {', '.join(names)} exists ({what})")


def index_media(folder: Path, kind: str) -> dict[str, Path]:
    """Files of ``kind`` ("audio" or "image") below ``folder``, keyed by relative path without
    extension and by bare stem (first occurrence wins for a stem)."""
    exts = AUDIO_EXTENSIONS if kind == "audio" else IMAGE_EXTENSIONS
    out: dict[str, Path] = {}
    stems: dict[str, Path] = {}
    for dirpath, _, files in os.walk(folder):
        for f in sorted(files):
            p = Path(dirpath) / f
            if p.suffix.lower() in exts:
                rel = p.relative_to(folder).with_suffix("").as_posix()
                out[rel] = p
                stems.setdefault(p.stem, p)
    for s, p in stems.items():
        out.setdefault(s, p)
    return out


def lookup(index: dict[str, Path], candidates: Iterable[str]) -> Path | None:
    for c in candidates:
        c = str(c)
        stem = c.rsplit(".", 1)[0] if "." in c[-6:] else c
        for key in (c, stem):
            if key in index:
                return index[key]
    return None


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a headed CSV; ``SuiteError`` naming the file when a column is missing."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            absent = [c for c in required if c not in header]
            if absent:
                raise SuiteError(f"{path}: missing column(s) {', '.join(absent)} "
                                 f"(found {', '.join(header) or 'no header'})")
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SuiteError(f"{path}: cannot read ({exc})") from None


def read_templates(path: str | os.PathLike) -> list[str]:
    """Prompt templates, one a line, each with ``{c}`` (or ``{}``) where the class name goes."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise SuiteError(f"{p}: cannot read templates ({exc.strerror})") from None
    out = [ln.replace("{}", "{c}") for ln in lines if ln and not ln.startswith("#")]
    bad = [t for t in out if "{c}" not in t]
    if not out or bad:
        raise SuiteError(f"{p}: every template needs {{c}} for the class name"
                         + (f" (not: {bad[0]!r})" if bad else " (file is empty)"))
    return out


def data_file(name: str) -> Path:
    """A data file shipped with freebind (``freebind/evaluate/data/<name>``)."""
    return Path(__file__).resolve().parent.parent / "data" / name


def require_some(suite: str, root: Path, n: int, listed: int, what: str) -> None:
    if n == 0:
        raise SuiteError(f"{root}: none of the {listed} {what} listed by {suite} is on disk")
