"""A suite's data when none was given: ``$FREEBIND_DATA/<suite>`` when that folder exists;
for a target whose spaces are all mini spaces, the mini evaluation sets, written once into the
cache (beside the default mini pools); else an error naming the variable, the folder looked
in and the layout the suite expects (layouts per suite: docs/evaluation.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from freebind.run.implicit import Resolved
from freebind.util.errors import UsageError

#: the variable naming the root of the evaluation datasets (one folder per suite)
DATA_VAR = "FREEBIND_DATA"
#: seed of the mini evaluation sets that evaluation uses by default
MINI_EVALSET_SEED = 0


def _spaces_of(ref) -> dict[str, dict]:
    """The base spaces of a target (a reference, or what :func:`freebind.open` returns):
    ``{ref: {"family": …}}``."""
    from freebind import spaces

    fused = getattr(ref, "fused", None)
    if fused is not None:
        return dict(fused.plan.spaces)
    ref = str(getattr(ref, "ref", ref))
    from freebind.run.targets import is_bundle_ref, split_ref

    if is_bundle_ref(ref):
        from freebind.fusion.bundle import read_metadata

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
    from freebind.data.store import default_root

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
        from freebind.util.atomic import atomic_write_text

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
