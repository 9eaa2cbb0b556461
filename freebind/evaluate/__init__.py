"""Evaluation: metrics (pure functions on similarity matrices), suites (loaders for the
published datasets' on-disk layouts), the runner that embeds, fuses and scores, the
factor sweeps behind tuning, and the APIs over them (:mod:`freebind.evaluate.entrypoints`).

``freebind.evaluate(targets, suites, data, …)`` calls
:func:`freebind.evaluate.entrypoints.evaluate`: the package itself is callable, since it and the
function share the name. ``freebind.evaluate.retrieval_from_embeddings`` and
``paired_retrieval_from_embeddings`` score precomputed (memory-mapped) embeddings, streamed."""

from freebind.util.callable_module import make_callable as _make_callable

#: Streamed metrics of precomputed embeddings (:mod:`freebind.evaluate.metrics.retrieval`).
_METRICS = ("retrieval_from_embeddings", "paired_retrieval_from_embeddings")


def __getattr__(name):
    if name in _METRICS:
        from freebind.evaluate.metrics import retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_make_callable(__name__, "freebind.evaluate.entrypoints", "evaluate")
