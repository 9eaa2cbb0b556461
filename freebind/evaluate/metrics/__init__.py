"""Evaluation metrics: pure functions on similarity (or score) matrices, one module per family.

* :mod:`.retrieval` — cross-modal retrieval with the five-caption rule (R@K, mAP@K);
* :mod:`.classification` — zero-shot classification (prompt-averaged class embeddings,
  top-k accuracy);
* :mod:`.multilabel` — multi-label average precision (AudioSet mAP).

Tie policy (one rule, stated once): when a correct candidate has the *same* score as a wrong
one, the wrong one is ranked first (pessimistic ranking). A degenerate model that gives every
candidate the same score therefore gets the chance-free worst rank, never a perfect one.
Ties among correct candidates do not matter (they are interchangeable). Multi-label AP uses
thresholds: items with equal scores enter the ranking together, as in scikit-learn's
``average_precision_score`` — the value does not depend on the order of tied items.

Values are fractions in [0, 1] (CLIP_benchmark's convention); tables show percentages.
"""

from __future__ import annotations

from freebind.evaluate.metrics.checks import MetricInputError
from freebind.evaluate.metrics.classification import (
    class_embeddings,
    topk_accuracy,
    zero_shot_metrics,
)
from freebind.evaluate.metrics.multilabel import average_precision, mean_average_precision
from freebind.evaluate.metrics.retrieval import (
    LETTERS,
    average_precision_at_k,
    block_rows_for,
    paired_retrieval_from_embeddings,
    paired_retrieval_metrics,
    recall_at_k,
    relevant_positions,
    retrieval_from_embeddings,
)

__all__ = [
    "MetricInputError", "class_embeddings", "topk_accuracy", "zero_shot_metrics",
    "average_precision", "mean_average_precision", "LETTERS", "average_precision_at_k",
    "paired_retrieval_metrics", "recall_at_k", "relevant_positions", "block_rows_for",
    "paired_retrieval_from_embeddings", "retrieval_from_embeddings",
]
