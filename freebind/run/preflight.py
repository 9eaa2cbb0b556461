"""Checks made before any work, reported together.

Every verb that loads spaces checks, in this order, and lists every failure in one message
(:class:`PreflightError`):

1. **libraries** — the encoder packages each space needs, naming the extra to install
   (``pip install 'freebind[clap]'``);
2. **weights** — each space's weight files: missing where they cannot be downloaded now
   (offline, or no download source), or an empty file; naming the file and
   ``freebind download``;
3. **inputs** — pools, folders and files the verb was given or needs, naming the flags.

So a fresh install learns about a missing extra before it downloads gigabytes of weights,
and a user fixes everything at once instead of one error per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from freebind.util.errors import UsageError

#: the stages, in the order they are checked and reported
STAGES = ("library", "weights", "input")


@dataclass(frozen=True)
class Problem:
    stage: str  # one of STAGES
    text: str


class PreflightError(UsageError):
    """One or more checks failed before any work; ``problems`` in :data:`STAGES` order.

    Exit status 2 when every problem is in the input (bad usage), else 1 (this machine
    lacks a library or weights)."""

    def __init__(self, what: str, problems: Sequence[Problem], hint: str = ""):
        order = {s: i for i, s in enumerate(STAGES)}
        self.what, self.hint = what, hint
        self.problems = sorted(problems, key=lambda p: order.get(p.stage, len(STAGES)))
        self.exit_code = 2 if all(p.stage == "input" for p in self.problems) else 1
        super().__init__(self._line())

    def _line(self) -> str:
        tail = f"; {self.hint}" if self.hint else ""
        if len(self.problems) == 1:
            return f"cannot {self.what}: {self.problems[0].text}{tail}"
        return (f"cannot {self.what}, {len(self.problems)} problems: "
                + "; ".join(f"({i}) {p.text}" for i, p in enumerate(self.problems, 1)) + tail)

    def render(self) -> str:
        if len(self.problems) == 1:
            return f"error: {self._line()}"
        lines = [f"error: cannot {self.what}, {len(self.problems)} problems:"]
        lines += [f"  {i}. {p.text}" for i, p in enumerate(self.problems, 1)]
        if self.hint:
            lines.append(f"  ({self.hint})")
        return "\n".join(lines)


def raise_if(what: str, problems: Iterable[Problem], hint: str = "", cls=None) -> None:
    """Raise :class:`PreflightError` (or ``cls``, a subclass) when there is any problem."""
    problems = list(problems)
    if problems:
        raise (cls or PreflightError)(what, problems, hint)


def _empty_file(detail: str) -> Path | None:
    path = Path(detail.split(" (", 1)[0].strip())
    try:
        if path.is_file() and path.stat().st_size == 0:
            return path
    except (OSError, ValueError):
        pass
    return None


def space_problems(refs: Iterable[str], space_options: Mapping | None = None,
                   store=None) -> list[Problem]:
    """Library and weight problems of the spaces ``refs`` (space references; nothing heavy
    is imported and nothing is downloaded). A space with rows imported into ``store`` (an
    :class:`~freebind.data.store.EmbeddingStore`; :mod:`freebind.run.importer`) needs neither here:
    its encoder is loaded only for items the rows lack, and reports its own problem then."""
    from freebind import spaces
    from freebind.spaces.weights import offline

    options = dict(space_options or {})
    problems: list[Problem] = []
    for ref in dict.fromkeys(str(r) for r in refs):
        try:
            info = spaces.info(ref)
        except Exception:  # an unknown reference is reported where it is resolved
            continue
        if store is not None and _has_imported_rows(store, info.name):
            continue
        try:
            ok, detail = info.check()
        except Exception as exc:  # a broken checker must not hide the other spaces
            ok, detail = True, f"check failed: {exc}"
        detail = str(detail or "")
        if not ok and detail.startswith("not installed"):
            problems.append(Problem("library", f"{ref} needs a library that is "
                                               f"{detail}"))
            continue
        if options.get("checkpoint"):
            continue  # an explicit checkpoint is checked when it is loaded
        if not ok and detail.startswith("weights missing"):
            can_fetch = info.fetcher is not None and not offline()
            if not can_fetch:
                why = "offline" if offline() else "no download source"
                problems.append(Problem("weights", f"{ref}: {detail} ({why}); run "
                                                   f"`freebind download {ref}` on a machine "
                                                   f"that is online, or put the files there"))
            continue
        empty = _empty_file(detail) if ok else None
        if empty is not None:
            problems.append(Problem("weights", f"{ref}: weights file {empty} is empty (0 "
                                               f"bytes); delete it and run `freebind download "
                                               f"{ref}` again"))
    return problems


def _has_imported_rows(store, name: str) -> bool:
    from freebind.run.importer import imported_identities

    try:
        return bool(imported_identities(store, name))
    except Exception:  # an unreadable record is the importer's to report
        return False


def leaf_spaces(target) -> list[str]:
    """The base spaces of a target: an expression, a plan, a bundle path
    (``x.safetensors[@preset]``) or a space reference."""
    from freebind import spaces
    from freebind.run.targets import split_ref

    if hasattr(target, "spaces"):  # a plan
        return list(target.spaces)
    ref = str(target)
    path = split_ref(ref)[0]
    if path.endswith(".safetensors"):
        from freebind.fusion.bundle import read_metadata

        try:
            return list(read_metadata(path).get("plan", {}).get("spaces", {}))
        except Exception:  # an unreadable bundle is reported where it is opened
            return []
    if spaces.is_known(ref):
        return [ref]
    try:
        from freebind import algebra

        return list(algebra.plan(ref).spaces)
    except Exception:
        return []


def path_problems(paths: Iterable[tuple[str, object]]) -> list[Problem]:
    """Input problems of ``(flag, path)`` pairs whose path does not exist (patterns such as
    tar shards' ``shards/{000000..000099}.tar`` and URLs are left to their readers)."""
    out = []
    for flag, p in paths:
        if p is None or (isinstance(p, Sequence) and not isinstance(p, str)):
            continue   # items themselves (a list, compact arrays), not a path
        if any(c in str(p) for c in ("{", "*", "?", "://", "::")):
            continue
        if not Path(str(p)).expanduser().exists():
            out.append(Problem("input", f"{flag} {p}: no such file or folder"))
    return out


def check_build(plan, audio=None, image=None, text=None, pools=None,
                space_options: Mapping | None = None, have_default_pools: bool = False,
                declared: Path | None = None, cls=None, store=None) -> None:
    """The pre-flight of :func:`freebind.build`: the plan's spaces, then its pools; raises
    ``cls`` (a :class:`PreflightError` subclass; the builder's is also a ``PoolError``)."""
    from freebind.run.implicit import POOLS_FILE
    from freebind.spaces.weights import freebind_home

    problems = space_problems(plan.spaces, space_options, store=store)
    given = [("--audio", audio), ("--image", image), ("--texts", text), ("--pools", pools)]
    if all(v is None for _, v in given):
        if not have_default_pools and declared is None:
            problems.append(Problem(
                "input", f"no pools given: pass --audio DIR, --image DIR, --texts FILE or "
                         f"--pools FILE (in Python audio=, image=, text=, pools=), or declare "
                         f"them once in {freebind_home() / POOLS_FILE} "
                         f'({{"audio": DIR, "image": DIR, "text": FILE}}); default pools '
                         f"exist only when every space is a mini space"))
    else:
        problems += path_problems(given)
    raise_if(f"build {plan.expression}", problems, cls=cls)
