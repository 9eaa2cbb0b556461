"""What a verb uses when it is not told: the target and the build pools (a suite's data:
:mod:`freebind.evaluate.suite_data`).

* **Target**: the bundle the last :func:`freebind.build` wrote (recorded in
  ``$FREEBIND_HOME/last_build.json``) when it lives in the current folder (or below), else
  the only ``*.safetensors`` bundle in the current folder. A bundle built in another folder
  is never used unnamed: several candidates, or none here, is a one-line error naming them.
  ``tune`` stores presets only in a bundle the user named.
* **Pools**: ``$FREEBIND_HOME/pools.json`` (the pools file format of
  :func:`freebind.build.pools.read_pools_file`) when a build is given no pools.

The layouts per suite are in docs/evaluation.md; the mechanism in docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from freebind.util.errors import UsageError
from freebind.spaces.weights import freebind_home

#: the file that records the last build, under ``$FREEBIND_HOME``
LAST_BUILD_FILE = "last_build.json"
#: the pools a build uses when given none, under ``$FREEBIND_HOME``
POOLS_FILE = "pools.json"


@dataclass(frozen=True)
class Resolved:
    """A default that was looked up: the value and why it was chosen (shown to the user)."""

    value: str
    why: str  # "given", "the last build", "the only bundle here", "$FREEBIND_DATA", …

    def describe(self, verb: str) -> str:
        """The first line a verb prints, e.g. ``evaluating x.safetensors (the last build)``."""
        return f"{verb} {self.value}" + ("" if self.why == "given" else f" ({self.why})")


# --------------------------------------------------------------------------- last build

def record_build(path: str | os.PathLike, expression: str = "") -> Path:
    """Remember ``path`` as the bundle the last build wrote (atomic, small)."""
    from freebind.util.atomic import atomic_write_text

    record = {"path": str(Path(path).resolve()), "expression": expression,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return atomic_write_text(freebind_home() / LAST_BUILD_FILE,
                             json.dumps(record, indent=2) + "\n", fsync=False)


def last_build() -> Path | None:
    """The bundle recorded by the last build, if the record and the file still exist."""
    try:
        record = json.loads((freebind_home() / LAST_BUILD_FILE).read_text(encoding="utf-8"))
        path = Path(record["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_file() else None


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)


def _under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def default_target(cwd: str | os.PathLike | None = None) -> Resolved:
    """The bundle a verb uses when given no target (see the module docstring): the last
    build when it lives in the current folder (or below), else the only bundle here; a
    bundle built elsewhere is never picked behind the user's back, only named."""
    cwd = Path(cwd or os.getcwd())
    recorded = last_build()
    if recorded is not None and _under(recorded, cwd):
        return Resolved(_display(recorded, cwd), "the last build")
    here = sorted(p for p in cwd.glob("*.safetensors") if p.is_file())
    if len(here) == 1:
        return Resolved(here[0].name, "the only bundle here")
    elsewhere = (f"; the last build, {recorded}, is in another folder: name it to use it"
                 if recorded is not None else "")
    if not here:
        if recorded is not None:
            raise UsageError(f"no target given and no *.safetensors bundle in {cwd}"
                             f"{elsewhere}")
        raise UsageError(f"no target given, no build recorded in {freebind_home()} and no "
                         f"*.safetensors bundle in {cwd}: name a space or a bundle, or run "
                         f"freebind build EXPR first")
    raise UsageError(f"no target given and {len(here)} bundles in {cwd} "
                     f"({', '.join(p.name for p in here)}): name one{elsewhere}")


def resolve_targets(targets: Sequence[str] | None, cwd=None) -> list[Resolved]:
    """``targets`` as given, or the default target when there is none."""
    if targets:
        return [Resolved(str(t), "given") for t in targets]
    return [default_target(cwd)]


# --------------------------------------------------------------------------- pools

def declared_pools() -> Path | None:
    """``$FREEBIND_HOME/pools.json``, when it exists."""
    path = freebind_home() / POOLS_FILE
    return path if path.is_file() else None


# --------------------------------------------------------------------------- arguments

def looks_like_target(arg: str) -> bool:
    """Whether a command-line word names a target (a bundle, ``bundle@preset`` or a known
    space) rather than a file or folder to embed."""
    from freebind import spaces
    from freebind.run.targets import split_ref

    if str(arg).startswith("hf:"):
        return True
    path = split_ref(str(arg))[0]
    if path.endswith(".safetensors"):
        return True
    if Path(str(arg)).exists():
        return False
    return spaces.is_known(str(arg))


def split_target(args: Sequence[str], cwd=None) -> tuple[Resolved, list[str]]:
    """``[TARGET] PATH...`` → (the target, resolved as :func:`default_target` when the first
    word is not one, and the paths)."""
    args = [str(a) for a in args or ()]
    if args and looks_like_target(args[0]):
        return Resolved(args[0], "given"), args[1:]
    return default_target(cwd), args
