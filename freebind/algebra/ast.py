"""The typed AST of space expressions.

Nodes compare by value and ignore source positions, so ``parse(format(e)) == e``. After
parsing, chains are flat: a :class:`Chain` always has a :class:`SpaceRef` base, because
``(A + b1) + b2`` and ``A + b1 + b2`` mean the same (left-associative sequential bonds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

#: Canonical modality order; also the order factors are printed in.
from freebind.util.vocab import ALL_MODALITIES as MODALITY_ORDER  # noqa: E402


@dataclass(frozen=True)
class SpaceRef:
    """A space named by alias or prefixed spec (``IB``, ``open_clip:ViT-B-32/laion2b...``)."""

    name: str
    span: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)


@dataclass(frozen=True)
class Bond:
    """``c(E1, E2, ..., a=…)`` (combination, parallel when several experts) or ``d(E, …)``.

    ``factors`` holds (modality, value) pairs in canonical modality order; ``options`` holds
    (name, value) pairs sorted by name (``w`` holds a tuple of expert weights)."""

    kind: str
    experts: tuple["Expr", ...]
    factors: tuple[tuple[str, float], ...] = ()
    options: tuple[tuple[str, object], ...] = ()
    span: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)
    keyword_spans: tuple[tuple[str, tuple[int, int]], ...] = field(default=(), compare=False,
                                                                  repr=False)

    def factor_dict(self) -> dict[str, float]:
        return dict(self.factors)

    def option_dict(self) -> dict[str, object]:
        return dict(self.options)

    def keyword_span(self, name: str) -> tuple[int, int] | None:
        return dict(self.keyword_spans).get(name)


@dataclass(frozen=True)
class Chain:
    """A base space followed by one or more sequential bonds."""

    base: SpaceRef
    bonds: tuple[Bond, ...]
    span: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)


Expr = Union[SpaceRef, Chain]


def chain(base: "Expr", bonds: tuple[Bond, ...], span=(0, 0)) -> "Expr":
    """``base + bonds`` flattened into canonical form."""
    if not bonds:
        return base
    if isinstance(base, Chain):
        return Chain(base.base, base.bonds + tuple(bonds), span)
    return Chain(base, tuple(bonds), span)


def space_refs(expr: "Expr") -> list[SpaceRef]:
    """Every space reference in ``expr``, in textual order."""
    if isinstance(expr, SpaceRef):
        return [expr]
    refs = [expr.base]
    for bond in expr.bonds:
        for expert in bond.experts:
            refs.extend(space_refs(expert))
    return refs
