"""The canonical text of an AST: ``parse(format(e)) == e`` for every expression."""

from __future__ import annotations

from freebind.algebra.ast import Bond, Chain, Expr, SpaceRef
from freebind.algebra.keywords import factor_keyword
from freebind.algebra.parser import NAME_RE


def format_name(name: str) -> str:
    if NAME_RE.fullmatch(name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_number(value) -> str:
    if isinstance(value, bool):
        raise TypeError("not a number")
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def format_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "(" + ", ".join(format_number(v) for v in value) + ")"
    return format_number(value)


def format_expr(expr: Expr, nested: bool = False) -> str:
    if isinstance(expr, SpaceRef):
        return format_name(expr.name)
    text = " + ".join([format_name(expr.base.name), *(format_bond(b) for b in expr.bonds)])
    return f"({text})" if nested else text


def format_bond(bond: Bond) -> str:
    args = [format_expr(e, nested=isinstance(e, Chain)) for e in bond.experts]
    args += [f"{factor_keyword(m)}={format_number(v)}" for m, v in bond.factors]
    args += [f"{k}={format_value(v)}" for k, v in bond.options]
    return f"{bond.kind}({', '.join(args)})"
