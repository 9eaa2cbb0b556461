"""Evaluation: metrics (pure functions on similarity matrices), suites (loaders for the
published datasets' on-disk layouts), the runner that embeds, fuses and scores, the
factor sweeps behind tuning, and the APIs over them (:mod:`freebind.evaluate.api`).

``freebind.evaluate(targets, suites, data, …)`` calls :func:`freebind.evaluate.api.evaluate`:
the package itself is callable, since it and the function share the name."""

import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, targets, suites, data, **kwargs):
        from freebind.evaluate.api import evaluate

        return evaluate(targets, suites, data, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
