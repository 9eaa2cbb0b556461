"""The bond algebra: parse an expression, print its canonical text, compile it to a Plan."""

from __future__ import annotations

from freebind.algebra.ast import Bond, Chain, Expr, SpaceRef
from freebind.algebra.compile import MODE_LETTERS, Job, Plan, data_modes
from freebind.algebra.compile import compile as compile_expr
from freebind.algebra.formatter import format_expr as format
from freebind.algebra.parser import parse

compile = compile_expr

__all__ = ["parse", "format", "compile", "plan", "Plan", "Job", "SpaceRef", "Bond", "Chain",
           "Expr", "data_modes", "MODE_LETTERS"]


def plan(text: str, hyper: dict | None = None) -> Plan:
    """Parse and compile ``text``; errors carry a caret into ``text``."""
    return compile_expr(parse(text), source=text, hyper=hyper)
