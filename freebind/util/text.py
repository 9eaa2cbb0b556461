"""One-line messages from exceptions: the first line of an error, and the reason part of a
``PATH: reason`` message. Every user-facing error of freebind is one line (docs/architecture.md,
"Errors"); these are the two ways a nested error becomes part of one."""

from __future__ import annotations

import os
from typing import Any


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of ``exc``'s message, or its type name when it has none;
    at most ``limit`` characters when given."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if limit is None else text[:limit]


def reason(message: Any, source: Any) -> str:
    """``message`` (an exception or a string) without its leading ``"SOURCE: "``, where
    ``source`` is a path or a text: what a report lists beside the source it names."""
    msg = str(message)
    prefix = f"{source if isinstance(source, str) else os.fspath(source)}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg
