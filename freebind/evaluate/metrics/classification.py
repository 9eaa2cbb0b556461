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


def topk_accuracy(logits, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"acc1": …, "acc5": …}`` for each k in ``ks`` up to the number of classes."""
    rank = true_class_rank(logits, labels)
    if len(rank) == 0:
        raise MetricInputError("logits: no items")
    n_classes = np.asarray(logits).shape[1]
    return {f"acc{k}": float((rank < k).mean()) for k in ks if k <= n_classes}


def mean_per_class_recall(logits, labels) -> float:
    """Top-1 recall averaged over the classes present in ``labels``."""
    rank = true_class_rank(logits, labels)
    y = np.asarray(labels)
    present = np.unique(y)
    return float(np.mean([(rank[y == c] == 0).mean() for c in present]))


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
