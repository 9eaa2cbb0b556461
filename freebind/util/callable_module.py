"""Modules that are also the function of the same name: ``freebind.build``,
``freebind.embed`` and ``freebind.evaluate`` are packages or modules *and* the API calls
``freebind.build(...)``, ``freebind.embed(...)``, ``freebind.evaluate(...)``.

Once such a module is imported, Python binds it as the attribute of its parent package,
where the lazily exported function of the same name would otherwise be found; making the
module callable keeps both spellings working whatever was imported first."""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str, attr: str, doc: str = "") -> None:
    """Make the module ``module_name`` callable: calling it imports ``target`` and calls its
    ``attr`` with the same arguments."""

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(target), attr)(*args, **kwargs)

    def function():
        return getattr(importlib.import_module(target), attr)

    def signature(self):
        """The function's own signature: ``inspect.signature(freebind.evaluate)`` and
        notebooks show its keyword arguments, not ``(*args, **kwargs)``."""
        import inspect

        return inspect.signature(function())

    __call__.__doc__ = doc or f"Calls :func:`{target}.{attr}`."
    module = sys.modules[module_name]
    module.__class__ = type(f"Callable{attr.title()}Module", (types.ModuleType,),
                            {"__call__": __call__, "__signature__": property(signature),
                             "__text_signature__": None})
