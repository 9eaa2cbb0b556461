"""What a verb uses when it is not told: the target, a suite's data, the build pools.

* **Target**: the bundle the last :func:`freebind.build` wrote (recorded in
  ``$FREEBIND_HOME/last_build.json``) when it lives in the current folder (or below), else
  the only ``*.safetensors`` bundle in the current folder. A bundle built in another folder
  is never used unnamed: several candidates, or none here, is a one-line error naming them.
  ``tune`` stores presets only in a bundle the user named.
* **Suite data**: ``$FREEBIND_DATA/<suite>`` when that folder exists; for a target whose
  spaces are all mini spaces, the mini evaluation sets, written once into the cache (beside
  the default mini pools); else an error naming the variable, the folder looked in and the
  layout the suite expects.
* **Pools**: ``$FREEBIND_HOME/pools.json`` (the pools file format of
  :func:`freebind.builder.read_pools_file`) when a build is given no pools.

The layouts per suite are in docs/evaluation.md; the mechanism in docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from freebind.errors import UsageError
from freebind.spaces.weights import freebind_home

#: the file that records the last build, under ``$FREEBIND_HOME``
LAST_BUILD_FILE = "last_build.json"
#: the pools a build uses when given none, under ``$FREEBIND_HOME``
POOLS_FILE = "pools.json"
#: the variable naming the root of the evaluation datasets (one folder per suite)
DATA_VAR = "FREEBIND_DATA"
#: seed of the mini evaluation sets that evaluation uses by default
MINI_EVALSET_SEED = 0


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
    from freebind.atomic import atomic_write_text

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


# --------------------------------------------------------------------------- suite data

def _spaces_of(ref) -> dict[str, dict]:
    """The base spaces of a target (a reference, or what :func:`freebind.open` returns):
    ``{ref: {"family": …}}``."""
    from freebind import spaces

    fused = getattr(ref, "fused", None)
    if fused is not None:
        return dict(fused.plan.spaces)
    ref = str(getattr(ref, "ref", ref))
    from freebind.target import is_bundle_ref, split_ref

    if is_bundle_ref(ref):
        from freebind.bundle import read_metadata

        path = split_ref(ref)[0]

        return dict(read_metadata(path).get("plan", {}).get("spaces", {}))
    return {ref: {"family": spaces.info(ref).family}}


def all_mini(targets: Iterable[str]) -> bool:
    """True when every target's spaces are all mini spaces (the mini world applies)."""
    found = False
    for ref in targets:
        for meta in _spaces_of(ref).values():
            found = True
            if meta.get("family") != "mini":
                return False
    return found


def data_root() -> Path | None:
    """``$FREEBIND_DATA`` as a path, when set."""
    env = os.environ.get(DATA_VAR)
    return Path(env).expanduser() if env else None


def mini_evalsets(cache_dir: str | os.PathLike | None = None, suites: Sequence[str] = (),
                  progress: bool = False) -> Path:
    """The mini evaluation sets (seed 0), written once into the cache; returns their root.

    Only the missing suites among ``suites`` (all mini suites when empty) are written."""
    from freebind.mini import GENERATOR_VERSION, write_evalsets
    from freebind.mini.writers import EVALSETS
    from freebind.store import default_root

    root = Path(cache_dir) if cache_dir is not None else default_root()
    folder = root / f"mini-evalsets-g{GENERATOR_VERSION}-s{MINI_EVALSET_SEED}"
    wanted = [s for s in (suites or EVALSETS) if s in EVALSETS]
    done = _written_suites(folder)
    missing = [s for s in wanted if s not in done]
    if missing:
        # write into a scratch folder and move each suite in, so a killed run leaves no
        # half-written suite behind
        scratch = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        index = write_evalsets(scratch, seed=MINI_EVALSET_SEED, suites=missing,
                               progress=progress)
        folder.mkdir(parents=True, exist_ok=True)
        for name in missing:
            target = folder / EVALSETS[name]["path"]
            if not target.exists():
                os.replace(scratch / EVALSETS[name]["path"], target)
        merged = {"generator": index["generator"], "seed": index["seed"],
                  "suites": {**_index_of(folder).get("suites", {}), **index["suites"]}}
        from freebind.atomic import atomic_write_text

        atomic_write_text(folder / "evalsets.json", json.dumps(merged, indent=2) + "\n")
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _index_of(folder: Path) -> dict:
    try:
        return json.loads((folder / "evalsets.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _written_suites(folder: Path) -> set[str]:
    return {s for s in _index_of(folder).get("suites", {}) if (folder / s).is_dir()}


def suite_data(suite: str, targets: Sequence[str], cache_dir=None,
               progress: bool = False) -> Resolved:
    """The dataset folder of ``suite`` when none was given (see the module docstring)."""
    from freebind.evaluate.suites import info
    from freebind.mini.writers import EVALSETS

    layout = info(suite).layout
    root = data_root()
    if root is not None and (root / suite).is_dir():
        return Resolved(str(root / suite), f"${DATA_VAR}/{suite}")
    if suite in EVALSETS and all_mini(targets):
        folder = mini_evalsets(cache_dir, [suite], progress=progress) / suite
        return Resolved(str(folder), "the mini evaluation set")
    looked = (f"{root / suite} does not exist" if root is not None
              else f"${DATA_VAR} is not set")
    raise UsageError(f"no data for suite {suite}: {looked}; set {DATA_VAR} to a folder "
                     f"holding {suite}/ ({layout}), or pass the folder with --data (data= in "
                     f"Python)")


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
    from freebind.target import split_ref

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
