"""Evaluation: metrics (pure functions on similarity matrices), suites (loaders for the
published datasets' on-disk layouts), the runner that embeds, fuses and scores, the
factor sweeps behind tuning, and the APIs over them (:mod:`freebind.evaluate.api`).

``freebind.evaluate(targets, suites, data, …)`` calls :func:`freebind.evaluate.api.evaluate`:
the package itself is callable, since it and the function share the name.
``freebind.evaluate.retrieval_from_embeddings`` and ``paired_retrieval_from_embeddings``
score precomputed (memory-mapped) embeddings, streamed."""

import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, targets, suites, data, **kwargs):
        from freebind.evaluate.api import evaluate

        return evaluate(targets, suites, data, **kwargs)


#: Streamed metrics of precomputed embeddings (:mod:`freebind.evaluate.metrics.retrieval`).
_METRICS = ("retrieval_from_embeddings", "paired_retrieval_from_embeddings")


def __getattr__(name):
    if name in _METRICS:
        from freebind.evaluate.metrics import retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_sys.modules[__name__].__class__ = _CallablePackage
