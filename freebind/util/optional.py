"""Checks for the packages a piece of work needs, made before the work starts.

``require("matplotlib", "the factor-analysis figure")`` imports the module (a package that
is installed but cannot be imported, e.g. built against another numpy, counts as missing)
and otherwise raises one :class:`~freebind.util.errors.UsageError` line saying what to install,
so that no verb computes for minutes and then dies on a missing package."""

from __future__ import annotations

import importlib

from freebind.util.errors import UsageError


def require(module: str, purpose: str, install: str | None = None,
            alternative: str | None = None):
    """Import and return ``module``, or raise a UsageError naming what to install.

    ``install`` is the pip argument (default: ``module``); ``alternative`` a way around it
    appended to the message."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken binary extension
        why = "" if isinstance(exc, ModuleNotFoundError) else f" ({type(exc).__name__}: " \
            f"{str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''})"
        raise UsageError(f"{purpose} needs {module}, which cannot be imported{why}: "
                         f"pip install {install or module}"
                         + (f"; {alternative}" if alternative else "")) from None
