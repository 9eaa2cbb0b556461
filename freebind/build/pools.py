"""The pools of a build, unpaired unimodal items (audio and image files, texts):
:class:`Pools`, read from flags, a pools file, the default mini pools or the pools declared
once in ``$FREEBIND_HOME/pools.json`` (:func:`build_pools`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from freebind.build.config import MINI_POOL_SIZE, BuildConfig
from freebind.data.items import ItemList, StringArray, as_sequence
from freebind.run.preflight import PreflightError
from freebind.util.errors import UsageError
from freebind.util.vocab import POOL_MODALITIES, is_mini_only

MINI_POOL_SEED = 0


class PoolError(UsageError):
    """Pools are missing, empty or malformed."""


class BuildPreflightError(PreflightError, PoolError):
    """The pre-flight of a build failed (:mod:`freebind.run.preflight`); a PoolError too."""


@dataclass
class Pools:
    """Unpaired unimodal pools: audio and image file paths, text strings. A pool given as
    paths, texts or keyed items is held as compact arrays
    (:class:`~freebind.data.items.ItemList`: names packed in one buffer, content keys in
    one ``S64`` array), not one Python object per item."""

    items: dict[str, Sequence]
    origin: dict[str, str] = field(default_factory=dict)
    #: what the readers could not use (a truncated shard, null cells), as report entries
    problems: list[dict] = field(default_factory=list)

    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in POOL_MODALITIES if self.items.get(m))

    def counts(self) -> dict[str, int]:
        return {m: len(self.items.get(m, [])) for m in POOL_MODALITIES if self.items.get(m)}


def _files_of(modality: str, spec) -> tuple[Sequence, str]:
    from freebind.data.media import discover

    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.exists():
            raise PoolError(f"{path}: no such {modality} folder or file")
        found = discover([path])[modality]
        if not found:
            raise PoolError(f"{path}: no {modality} files found (by extension)")
        return ItemList.of(found, "path"), str(path)
    items = _compact_files(spec)
    return items, f"{len(items)} {modality} paths"


def _compact_files(spec) -> Sequence:
    """Listed paths as an :class:`ItemList` of paths, listed items that carry their own
    content key as one of keyed items; a mix (or locators of archive members, which read
    their bytes through their own fields) stays a list."""
    from freebind.data.readers import Member

    if isinstance(spec, ItemList):
        return spec
    spec = as_sequence(spec)
    keyed = sum(1 for p in spec if hasattr(p, "content_key"))
    if keyed == len(spec) and not any(isinstance(p, Member) for p in spec):
        return ItemList.of(spec, "keyed")
    if keyed == 0 and all(isinstance(p, (str, os.PathLike)) and not isinstance(p, Member)
                          for p in spec):
        return ItemList.of(spec, "path")
    return [p if hasattr(p, "content_key") or isinstance(p, Member) else Path(p) for p in spec]


def _texts_of(spec) -> tuple[Sequence[str], str]:
    from freebind.data.media import iter_texts

    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise PoolError(f"{path}: no such text file (one text per line)")
        texts = StringArray.pack(iter_texts(path))   # streamed: never a list of the lines
        if not len(texts):
            raise PoolError(f"{path}: the text pool is empty")
        return texts, str(path)
    texts = StringArray.pack(spec if isinstance(spec, StringArray)
                             else (str(t) for t in spec))
    return texts, f"{len(texts)} texts"


def read_pools_file(path: str | os.PathLike) -> dict[str, str]:
    """A pools file is JSON ``{"audio": DIR, "image": DIR, "text": FILE}`` (paths relative
    to the file), as ``freebind mini pools`` writes; a folder holding ``pools.json`` works."""
    path = Path(path)
    if path.is_dir():
        path = path / "pools.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PoolError(f"{path}: no such pools file") from None
    except (OSError, ValueError) as exc:
        raise PoolError(f"{path}: not a JSON pools file ({exc})") from None
    if not isinstance(data, dict) or not any(m in data for m in POOL_MODALITIES):
        raise PoolError(f"{path}: a pools file maps audio/image/text to paths")
    out = {}
    for m in POOL_MODALITIES:
        v = data.get(m)
        if isinstance(v, dict):   # {"path": TABLE, "column": NAME}
            if not v.get("path"):
                raise PoolError(f"{path}: {m}: an object needs a \"path\"")
            out[m] = {**v, "path": str(path.parent / v["path"])}
        elif v:
            out[m] = str(path.parent / v)
    return out


def resolve_pools(audio=None, image=None, text=None, pools=None) -> Pools:
    """Pools from flags (folders, a text file, or lists) and/or a pools file. A flag may
    also name tar shards, a table or a datasets folder, or be ``{"path", "column"}``
    (:func:`freebind.data.readers.read_pool`)."""
    from freebind.data.readers import read_pool

    spec: dict[str, object] = {}
    if pools is not None:
        spec.update(read_pools_file(pools))
    for m, v in (("audio", audio), ("image", image), ("text", text)):
        if v is not None:
            spec[m] = v
    items, origin, problems = {}, {}, []
    for m, v in spec.items():
        got = read_pool(m, v) if isinstance(v, (str, os.PathLike, Mapping)) else None
        if got is not None:
            items[m], origin[m] = got.items[m], got.origin
            problems += [{**p, "modality": m} for p in got.problems]
            continue
        if isinstance(v, Mapping):
            v = v["path"]
        if m == "text":
            items[m], origin[m] = _texts_of(v)
        else:
            items[m], origin[m] = _files_of(m, v)
    return Pools(items, origin, problems)


def default_mini_pools(root: Path, n: int = MINI_POOL_SIZE, seed: int = MINI_POOL_SEED,
                       progress: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Write (once) the default mini pools under ``root``; returns the pools file. ``log``
    hears one line when they are generated (not when they are reused)."""
    from freebind.mini import GENERATOR_VERSION, write_pools

    folder = root / f"mini-pools-g{GENERATOR_VERSION}-s{seed}-n{n}"
    marker = folder / "pools.json"
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
            if data.get("counts") == {"audio": n, "image": n, "text": n}:
                return marker
        except ValueError:
            pass
    if log is not None:
        log("generating the default mini pools (once; cached)")
    write_pools(folder, n_audio=n, n_image=n, n_text=n, seed=seed, progress=progress)
    return marker


def build_pools(config: BuildConfig, families, store, say) -> Pools:
    """The pools of a build: given ones, else the default mini pools (every space a mini
    space), else those declared in ``$FREEBIND_HOME/pools.json``."""
    audio, image, text, pools = config.audio, config.image, config.text, config.pools
    if all(v is None for v in (audio, image, text, pools)):
        from freebind.run.implicit import POOLS_FILE, declared_pools
        from freebind.spaces.weights import freebind_home

        if is_mini_only(families):
            pools = default_mini_pools(store.root, config.mini_pool_size,
                                       progress=config.progress, log=say)
        elif declared_pools() is not None:
            pools = declared_pools()
            say(f"pools: {pools}")
        else:
            raise PoolError(f"no pools given: pass audio (a folder), image (a folder), text "
                            f"(a file) or pools (a pools file), or "
                            f"declare them once in {freebind_home() / POOLS_FILE} "
                            f'({{"audio": DIR, "image": DIR, "text": FILE}}); default pools '
                            f"exist only when every space is a mini space")
    pool = resolve_pools(audio, image, text, pools)
    if not pool.modalities():
        raise PoolError("every pool is empty")
    return pool
