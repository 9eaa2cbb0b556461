"""Zero-shot classification: class embeddings from averaged prompt templates, top-k accuracy.

Protocol (CLIP's): every class name is written into every prompt template; the template
embeddings of a class are L2-normalised, averaged and normalised again to give the class
embedding; an item's logits are its cosine similarities to the class embeddings. acc@k is the
fraction of items whose true class is among the k best — with the pessimistic tie policy, a
wrong class tied with the true one is ranked first.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freebind.evaluate.metrics.checks import MetricInputError, as_index, as_matrix


def class_embeddings(template_embeddings) -> np.ndarray:
    """``[C, T, d]`` embeddings of C classes × T templates → ``[C, d]`` unit class embeddings."""
    if hasattr(template_embeddings, "detach"):
        template_embeddings = template_embeddings.detach().cpu().numpy()
    e = np.asarray(template_embeddings, dtype=np.float64)
    if e.ndim != 3:
        raise MetricInputError(f"template embeddings: expected [C, T, d], got {e.shape}")
    if e.size and not np.isfinite(e).all():
        raise MetricInputError("template embeddings: contains NaN or infinite values")
    norms = np.linalg.norm(e, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise MetricInputError("template embeddings: a zero vector cannot be normalised")
    mean = (e / norms).mean(axis=1)
    mean_norm = np.linalg.norm(mean, axis=-1, keepdims=True)
    if (mean_norm == 0).any():
        raise MetricInputError("template embeddings: a class's templates cancel out")
    return mean / mean_norm


def true_class_rank(logits, labels) -> np.ndarray:
    """0-based rank of each item's true class: #(other classes with logit ≥ the true one)."""
    s = as_matrix(logits, "logits")
    n, c = s.shape
    y = as_index(labels, "labels", n, c)
    true = s[np.arange(n), y][:, None]
    return (s >= true).sum(axis=1) - 1


def _accuracy(rank: np.ndarray, ks: Sequence[int], n_classes: int) -> dict[str, float]:
    if len(rank) == 0:
        raise MetricInputError("logits: no items")
    return {f"acc{k}": float((rank < k).mean()) for k in ks if k <= n_classes}


def _per_class_recall(rank: np.ndarray, labels) -> float:
    y = np.asarray(labels)
    present = np.unique(y)
    return float(np.mean([(rank[y == c] == 0).mean() for c in present]))


def topk_accuracy(logits, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"acc1": …, "acc5": …}`` for each k in ``ks`` up to the number of classes."""
    rank = true_class_rank(logits, labels)
    return _accuracy(rank, ks, np.asarray(logits).shape[1])


def mean_per_class_recall(logits, labels) -> float:
    """Top-1 recall averaged over the classes present in ``labels``."""
    return _per_class_recall(true_class_rank(logits, labels), labels)


def logit_blocks(items, weights: np.ndarray, block_rows: int | None = None,
                 budget_bytes: int | None = None):
    """``(start, logits)`` per block of items: ``unit(items[a:b]) @ weights.T`` (cosine
    against unit class embeddings), ``block_rows`` items at a time (default: as many as
    fit ``budget_bytes`` with their logits). ``items`` may be a memory map or store view."""
    from freebind.evaluate.metrics.retrieval import (
        DEFAULT_BUDGET_BYTES, _finite_rows, _rows, _unit,
    )

    n, d = int(items.shape[0]), int(items.shape[1])
    if d != weights.shape[1]:
        raise MetricInputError(f"dimension mismatch: items {d}, classes {weights.shape[1]}")
    budget = DEFAULT_BUDGET_BYTES if budget_bytes is None else int(budget_bytes)
    b = int(block_rows) if block_rows else \
        max(16, budget // (8 * weights.shape[0] + 16 * d))
    for a in range(0, n, b):
        x = _unit(_finite_rows(_rows(items, a, min(n, a + b)), "item embeddings", a))
        yield a, x @ weights.T


def zero_shot_from_embeddings(items, weights, labels, ks: Sequence[int] = (1, 5),
                              block_rows: int | None = None,
                              budget_bytes: int | None = None) -> dict[str, float]:
    """acc@k and mean per-class recall of ``items`` [N, d] (normalised here; arrays,
    memory maps or store views) against unit class embeddings ``weights`` [C, d], by
    blocks of items: no ``[N, C]`` logits are held, only each item's true-class rank."""
    w = np.asarray(weights)
    n = int(items.shape[0])
    y = as_index(labels, "labels", n, w.shape[0])
    rank = np.empty(n, dtype=np.int64)
    for a, logits in logit_blocks(items, w, block_rows, budget_bytes):
        b = a + len(logits)
        rank[a:b] = true_class_rank(logits, y[a:b])
    out = _accuracy(rank, ks, w.shape[0])
    out["mean_per_class_recall"] = _per_class_recall(rank, y)
    return out


def zero_shot_metrics(item_embeddings, template_embeddings, labels,
                      ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """acc@k and mean per-class recall of items ``[N, d]`` against ``[C, T, d]`` prompts."""
    x = as_matrix(item_embeddings, "item embeddings")
    w = class_embeddings(template_embeddings)
    if x.shape[1] != w.shape[1]:
        raise MetricInputError(f"dimension mismatch: items {x.shape[1]}, classes {w.shape[1]}")
    logits = x @ w.T
    out = topk_accuracy(logits, labels, ks)
    out["mean_per_class_recall"] = mean_per_class_recall(logits, labels)
    return out
