"""Factor overrides and presets: customised inference (the paper's coarse-to-fine strategy).

An override is a string:

* ``a=0.8`` — every bond that mixes audio (global, per modality);
* ``b2.a=0.8`` — bond b2 only; ``CLAP_g.a=0.8`` — the bond whose expert is CLAP_g;
* ``b2=off`` / ``CLAP_g=off`` — switch a bond off (its expert's knowledge is not used: a
  combination returns the base embedding, a displacement the projected base), ``=on`` back;
* ``route=off`` / ``b2.route=off`` — a bond built with ``route=learned`` mixes with its fixed
  factors instead of its router's per-item weights (``route=learned`` back).

A factor set by an override or a preset pins that bond's modality: its router does not
apply there (see docs/routers.md).

Precedence, weakest first: the expression's factors, a selected preset, global overrides,
per-bond overrides, per-expert overrides. A factor is always the expert's weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from freebind.algebra.compile import bond_nodes
from freebind.algebra.keywords import FACTOR_KEYWORDS
from freebind.util.errors import UsageError


@dataclass(frozen=True)
class Override:
    target: str | None  # None: global; "b2": a bond; anything else: an expert reference
    modality: str | None  # None with switch set
    value: float | None = None
    switch: bool | None = None  # True: on, False: off
    route: bool | None = None  # with modality None: True route=learned, False route=off

    def __str__(self) -> str:
        """The override as it is written (``b2.a=0.8``, ``CLAP_g=off``, ``route=off``)."""
        from freebind.algebra.keywords import factor_keyword

        head = f"{self.target}." if self.target else ""
        if self.route is not None:
            return f"{head}route={'learned' if self.route else 'off'}"
        if self.modality is None:
            return f"{self.target}={'on' if self.switch else 'off'}"
        return f"{head}{factor_keyword(self.modality)}={self.value:g}"

    @property
    def rank(self) -> int:
        if self.target is None:
            return 0
        return 1 if _is_bond_id(self.target) else 2


def _is_bond_id(text: str) -> bool:
    return len(text) > 1 and text[0] == "b" and text[1:].isdigit()


def parse_override(spec: str) -> Override:
    """Parse one override string; raise :class:`UsageError` naming the problem."""
    if not isinstance(spec, str) or "=" not in spec:
        raise UsageError(f"factor override {spec!r}: expected KEY=VALUE, e.g. a=0.8, "
                         f"b2.t=0.5, CLAP_g.a=0.8 or b2=off")
    left, _, right = spec.partition("=")
    left, right = left.strip(), right.strip()
    target, modality = None, None
    if left == "route" or left.endswith(".route"):
        target = left[:-len(".route")] if left != "route" else None
        if target == "":
            raise UsageError(f"factor override {spec!r}: missing the bond or expert")
        if right.lower() not in ("off", "learned", "on"):
            raise UsageError(f"factor override {spec!r}: route is off or learned")
        return Override(target, None, route=right.lower() != "off")
    if left in FACTOR_KEYWORDS:
        modality = FACTOR_KEYWORDS[left]
    elif "." in left and left.rsplit(".", 1)[1] in FACTOR_KEYWORDS:
        target, key = left.rsplit(".", 1)
        modality = FACTOR_KEYWORDS[key]
    else:
        target = left
    if not left or (target is not None and not target):
        raise UsageError(f"factor override {spec!r}: missing the bond, expert or modality")
    if modality is None:
        if right.lower() not in ("on", "off"):
            raise UsageError(f"factor override {spec!r}: {left!r} is not a modality; to "
                             f"switch a bond write {left}=on or {left}=off")
        return Override(target, None, switch=right.lower() == "on")
    try:
        value = float(right)
    except ValueError:
        raise UsageError(f"factor override {spec!r}: {right!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"factor override {spec!r}: {value} is outside [0, 1]")
    return Override(target, modality, value=value)


def as_overrides(specs) -> list[Override]:
    """Accept strings, Override objects, a mapping ``{"a": 0.8, "b2": "off"}`` or None."""
    if specs is None:
        return []
    if isinstance(specs, (str, Override)):
        specs = [specs]
    if isinstance(specs, Mapping):
        specs = [f"{k}={v}" for k, v in specs.items()]
    return [s if isinstance(s, Override) else parse_override(s) for s in specs]


@dataclass
class BondFactors:
    factors: dict[str, float]
    on: bool = True
    #: The bond mixes with its router's per-item weights (built with ``route=learned`` and
    #: not switched off by ``route=off``).
    routed: bool = False
    #: Modalities whose factor an override or preset set: the router does not apply there.
    pinned: set = field(default_factory=set)

    def routes(self, modality: str) -> bool:
        """Whether the router gives this modality's weights."""
        return self.routed and modality not in self.pinned


def resolve(graph: dict, overrides: Iterable = (), presets: Mapping | None = None,
            preset: str | None = None) -> dict[str, BondFactors]:
    """Effective factors of every bond: ``{bond_id: BondFactors}``."""
    bonds = bond_nodes(graph)
    table = {b["id"]: BondFactors(dict(b["factors"]), routed=b.get("route") == "learned")
             for b in bonds}
    layers: list[Override] = []
    if preset is not None:
        presets = presets or {}
        if preset not in presets:
            import difflib

            known = ", ".join(sorted(presets)) or "none stored"
            close = difflib.get_close_matches(str(preset), list(presets), n=1, cutoff=0.6)
            guess = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unknown preset {preset!r}{guess} (this bundle has: {known})")
        layers += sorted(as_overrides(presets[preset]), key=lambda o: o.rank)
    layers += sorted(as_overrides(overrides), key=lambda o: o.rank)
    for ov in layers:
        for bond in _targets(bonds, ov, strict=True):
            entry = table[bond["id"]]
            if ov.route is not None:
                if ov.target is not None and bond.get("route") != "learned":
                    raise UsageError(f"factor override {_text(ov)}: bond {bond['id']} has no "
                                     f"router (build it with route=learned)")
                entry.routed = ov.route and bond.get("route") == "learned"
            elif ov.modality is None:
                entry.on = bool(ov.switch)
            elif ov.modality in entry.factors:
                entry.factors[ov.modality] = float(ov.value)
                entry.pinned.add(ov.modality)
            elif ov.target is not None:
                raise UsageError(f"factor override {_text(ov)}: bond {bond['id']} mixes only "
                                 f"{', '.join(bond['shared'])}")
    return table


def _targets(bonds: list[dict], ov: Override, strict: bool) -> list[dict]:
    if ov.target is None:
        return bonds
    if _is_bond_id(ov.target):
        hits = [b for b in bonds if b["id"] == ov.target]
    else:
        hits = [b for b in bonds
                if any(e.get("ref") == ov.target or e["text"] == ov.target
                       for e in b["experts"])]
    if not hits and strict:
        names = [b["id"] for b in bonds] + [e["text"] for b in bonds for e in b["experts"]]
        raise UsageError(f"factor override {_text(ov)}: no bond or expert {ov.target!r}; "
                         f"this space has: {', '.join(names)}")
    return hits


def _text(ov: Override) -> str:
    if ov.route is not None:
        return (f"{ov.target}." if ov.target else "") + \
            f"route={'learned' if ov.route else 'off'}"
    key = (f"{ov.target}." if ov.target else "") + (ov.modality or "")
    key = key.rstrip(".")
    value = ov.value if ov.modality else ("on" if ov.switch else "off")
    return f"{key}={value}"


def describe(table: Mapping[str, BondFactors]) -> dict:
    """JSON-able view: ``{b1: {"on": true, "factors": {...}}}``, plus ``"routed"`` (the
    modalities a router weighs) for bonds that route."""
    out = {}
    for k, v in table.items():
        out[k] = {"on": v.on, "factors": dict(v.factors)}
        if v.routed:
            out[k]["routed"] = [m for m in v.factors if v.routes(m)]
    return out


def paper_presets(graph: dict) -> dict[str, list[str]]:
    """The paper's presets, for the bonds they apply to: combination "versatile" (a=0.5,
    t=0.1) and "at-expertise" (a=0.8, t=0.5); displacement image/text expert weight 0.8."""
    bonds = bond_nodes(graph)
    versatile: list[str] = []
    expertise: list[str] = []
    for bond in bonds:
        shared = set(bond["shared"])
        if bond["kind"] == "c":
            for key, (v1, v2) in (("audio", (0.5, 0.8)), ("text", (0.1, 0.5))):
                if key in shared:
                    versatile.append(f"{bond['id']}.{key}={v1}")
                    expertise.append(f"{bond['id']}.{key}={v2}")
        else:
            for key in ("image", "text"):
                if key in shared:
                    versatile.append(f"{bond['id']}.{key}=0.8")
                    expertise.append(f"{bond['id']}.{key}=0.8")
    presets = {"default": []}
    if any(b["kind"] == "c" and {"audio", "text"} & set(b["shared"]) for b in bonds) \
            or any(b["kind"] == "d" for b in bonds):
        presets["versatile"] = versatile
        presets["at-expertise"] = expertise
    return presets
