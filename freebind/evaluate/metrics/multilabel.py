"""Multi-label classification: average precision per class and its mean (AudioSet's mAP).

AP of one class = Σ_n (R_n − R_{n−1}) · P_n over the distinct score thresholds, taken from the
highest down; items with equal scores cross a threshold together, so the value does not depend
on the order of tied items (the definition of scikit-learn's ``average_precision_score``).
Classes without a positive item have no AP and are left out of the mean (their count is
returned so that a report can state it).
"""

from __future__ import annotations

import numpy as np

from freebind.evaluate.metrics.checks import MetricInputError, as_matrix


def average_precision(scores, targets) -> float:
    """AP of one class: ``scores`` [N] real, ``targets`` [N] 0/1 with at least one positive."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(targets).ravel()
    if s.shape != t.shape:
        raise MetricInputError(f"scores {s.shape} and targets {t.shape} differ in shape")
    if not np.isin(t, (0, 1)).all():
        raise MetricInputError("targets: expected 0/1 values")
    t = t.astype(bool)
    n_pos = int(t.sum())
    if n_pos == 0:
        raise MetricInputError("targets: no positive item, AP is undefined")
    if not np.isfinite(s).all():
        raise MetricInputError("scores: contains NaN or infinite values")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    tp = np.cumsum(t)
    # last index of each group of equal scores = the threshold steps
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp_at, n_at = tp[last], last + 1
    precision = tp_at / n_at
    recall = tp_at / n_pos
    gains = np.diff(np.r_[0.0, recall])
    return float((gains * precision).sum())


def mean_average_precision(scores, targets) -> tuple[float, np.ndarray, int]:
    """``(mAP, per_class_AP, n_skipped)``: AP per class (NaN where a class has no positive),
    the mean over classes with positives, and the number of classes left out."""
    s = as_matrix(scores, "scores")
    t = np.asarray(targets)
    if t.shape != s.shape:
        raise MetricInputError(f"scores {s.shape} and targets {t.shape} differ in shape")
    per_class = np.full(s.shape[1], np.nan)
    for c in range(s.shape[1]):
        if t[:, c].any():
            per_class[c] = average_precision(s[:, c], t[:, c])
    kept = ~np.isnan(per_class)
    if not kept.any():
        raise MetricInputError("targets: no class has a positive item")
    return float(per_class[kept].mean()), per_class, int((~kept).sum())


def map_from_embeddings(items, weights, targets, block_rows: int | None = None,
                        budget_bytes: int | None = None) -> tuple[float, np.ndarray, int]:
    """:func:`mean_average_precision` of ``unit(items) @ weights.T`` without the ``[N, C]``
    score matrix when it exceeds ``budget_bytes``: the classes go in groups whose scores
    for every item fit the budget, each group a pass over the items' blocks."""
    from freebind.evaluate.metrics.classification import logit_blocks
    from freebind.evaluate.metrics.retrieval import DEFAULT_BUDGET_BYTES

    w = np.asarray(weights)
    n, c = int(items.shape[0]), int(w.shape[0])
    t = np.asarray(targets)
    if t.shape != (n, c):
        raise MetricInputError(f"scores {(n, c)} and targets {t.shape} differ in shape")
    budget = DEFAULT_BUDGET_BYTES if budget_bytes is None else int(budget_bytes)
    group = int(max(1, min(c, budget // max(1, 16 * n))))
    per_class = np.full(c, np.nan)
    for c0 in range(0, c, group):
        c1 = min(c, c0 + group)
        if not t[:, c0:c1].any():
            continue
        scores = np.empty((n, c1 - c0))
        for a, logits in logit_blocks(items, w[c0:c1], block_rows, budget_bytes):
            scores[a:a + len(logits)] = logits
        for k in range(c0, c1):
            if t[:, k].any():
                per_class[k] = average_precision(scores[:, k - c0], t[:, k])
    kept = ~np.isnan(per_class)
    if not kept.any():
        raise MetricInputError("targets: no class has a positive item")
    return float(per_class[kept].mean()), per_class, int((~kept).sum())
