"""The space registry: ``get(ref)`` loads a space, ``info(ref)`` describes one without loading,
``list()`` enumerates what is registered, ``register(...)`` adds a space or a family.

References are aliases (``IB``, ``CLAP``, ``mini:bind``) or prefixed specs handled by a family
resolver (``open_clip:ViT-B-32/laion2b_s34b_b79k``, ``clap:/path/to/ckpt.pt``). Heavy encoder
libraries are imported only when a space is loaded.

Plugins: an installed distribution declaring an entry point in the group
:data:`PLUGIN_GROUP` (``freebind.spaces``) registers a family with no change to freebind.
The entry point's name is the prefix, its value a resolver ``resolve(spec, ref) ->
SpaceInfo`` (static: modalities, dim, loader, fetcher, licence; no weights) or an object with
such a ``resolve`` and an optional ``EXAMPLE``. It is imported only when a reference with
its prefix is first resolved; a built-in prefix is never replaced by a plugin.
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
from typing import Callable

from freebind.util.errors import SpaceError, UnknownSpace
from freebind.spaces.protocol import Space, SpaceInfo, _resolve
from freebind.util.vocab import ALL_MODALITIES, POOL_MODALITIES

__all__ = ["Space", "SpaceInfo", "get", "info", "list", "names", "register",
           "register_family", "suggest", "is_known", "prefetch", "prefixes", "plugins",
           "ALL_MODALITIES", "POOL_MODALITIES", "PLUGIN_GROUP"]

#: the entry-point group through which installed packages register families
PLUGIN_GROUP = "freebind.spaces"

_SPACES: dict[str, SpaceInfo] = {}
_ALIASES: dict[str, str] = {}
#: prefix -> (resolver(spec_after_prefix, full_ref) -> SpaceInfo (raises SpaceError), or
#: "module:function"; example; fetcher put on the entries it resolves)
_FAMILIES: dict[str, tuple[Callable[[str, str], SpaceInfo] | str, str, object]] = {}
_LOADED: dict[tuple, Space] = {}
#: prefix -> (distribution, entry point value) of every family a plugin registered
_PLUGINS: dict[str, tuple[str, str]] = {}
_catalog_loaded = False
_catalog_ready = False
# the catalog and loaded spaces are filled on first use, possibly from several threads
_LOCK = threading.RLock()


def register(space: SpaceInfo, *, replace: bool = False) -> SpaceInfo:
    """Register a space under its name and aliases."""
    for key in (space.name, *space.aliases):
        if not replace and key in _ALIASES and _ALIASES[key] != space.name:
            raise ValueError(f"space name {key!r} is already registered")
        _ALIASES[key] = space.name
    _SPACES[space.name] = space
    return space


def register_family(prefix: str, resolver: Callable[[str, str], SpaceInfo] | str,
                    example: str = "", fetcher=None) -> None:
    """Register a resolver (a callable or ``"module:function"``, imported on first use) for
    references ``prefix:spec`` not registered by name; ``fetcher`` is put on the entries it
    resolves that name none (how ``freebind download`` fetches their weights)."""
    _FAMILIES[prefix] = (resolver, example, fetcher)


def _ensure_catalog() -> None:
    global _catalog_loaded, _catalog_ready
    if _catalog_ready:
        return
    with _LOCK:  # another thread waits here until the catalog is complete
        if _catalog_loaded:
            return
        _catalog_loaded = True
        from freebind.spaces import catalog

        for space in catalog.SPACES:
            if space.name not in _SPACES:
                register(space)
        for prefix, resolver, example, fetcher in catalog.FAMILIES:
            _FAMILIES.setdefault(prefix, (resolver, example, fetcher))
        _load_plugins()
        _catalog_ready = True


def _load_plugins() -> None:
    """Register the families installed packages declare in :data:`PLUGIN_GROUP` (nothing
    of theirs is imported here)."""
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=PLUGIN_GROUP)
    except Exception:  # a broken distribution's metadata must not break the registry
        return
    for ep in found:
        if ep.name in _FAMILIES:
            continue  # built-in (or registered in code) prefixes are never replaced
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        _PLUGINS[ep.name] = (dist, ep.value)
        _FAMILIES[ep.name] = (_plugin_resolver(ep, dist), f"{ep.name}:SPEC", None)


def _plugin_resolver(ep, dist: str) -> Callable[[str, str], SpaceInfo]:
    """``resolve(spec, ref)`` of a plugin family: its entry point, imported on first use;
    a plugin that cannot be imported or returns no SpaceInfo is one SpaceError line."""
    where = f"plugin family {ep.name!r} ({dist}, entry point {ep.value})"

    def resolve(spec: str, ref: str) -> SpaceInfo:
        try:
            target = ep.load()
        except Exception as exc:
            raise SpaceError(f"{ref}: {where} cannot be imported ({type(exc).__name__}: "
                             f"{str(exc).strip()[:160]})") from None
        fn = getattr(target, "resolve", target)
        if not callable(fn):
            raise SpaceError(f"{ref}: {where} is neither a resolver nor has a resolve()")
        found = fn(spec, ref)
        if not isinstance(found, SpaceInfo):
            raise SpaceError(f"{ref}: {where} returned {type(found).__name__}, not a "
                             f"SpaceInfo")
        return found

    return resolve


def prefixes() -> list[tuple[str, str, str]]:
    """``(prefix, example, source)`` of every family: ``built-in`` or the plugin's
    distribution."""
    _ensure_catalog()
    return [(p, ex, _PLUGINS.get(p, ("built-in",))[0]) for p, (_, ex, _) in _FAMILIES.items()]


def plugins() -> dict[str, tuple[str, str]]:
    """``{prefix: (distribution, entry point value)}`` of the families plugins registered."""
    _ensure_catalog()
    return dict(_PLUGINS)


def _family_of(ref: str) -> tuple[str, str] | None:
    """``(prefix, spec)`` of a reference a family resolves: ``prefix:spec``, or a bundle file
    named bare (``fused.safetensors[@preset]``, the ``bundle`` family)."""
    prefix, sep, rest = ref.partition(":")
    if sep and prefix in _FAMILIES:
        return prefix, rest
    if "bundle" in _FAMILIES and ref.partition("@")[0].endswith(".safetensors"):
        return "bundle", ref
    return None


def is_known(ref: str) -> bool:
    """Whether ``ref`` is a registered name or uses a registered family prefix."""
    _ensure_catalog()
    return ref in _ALIASES or _family_of(ref) is not None


def info(ref: str) -> SpaceInfo:
    """Static description of ``ref``; raises :class:`SpaceError` with suggestions."""
    _ensure_catalog()
    if ref in _ALIASES:
        return _SPACES[_ALIASES[ref]]
    family = _family_of(ref)
    if family is not None:
        prefix, rest = family
        resolver, _, fetcher = _FAMILIES[prefix]
        found = _resolve(resolver)(rest, ref)
        if fetcher is not None and found.fetcher is None:
            found = dataclasses.replace(found, fetcher=fetcher)
        return found
    hint = suggest(ref)
    raise UnknownSpace(f"unknown space {ref!r}" + (f"; did you mean {', '.join(hint)}?"
                                                   if hint else "; see `freebind spaces`"))


def get(ref: str, **options) -> Space:
    """Load (once per process and options) the space named by ``ref``."""
    meta = info(ref)
    key = (meta.name, tuple(sorted((k, repr(v)) for k, v in options.items())))
    if key not in _LOADED:
        with _LOCK:  # loaded once even when threads ask at the same time
            if key not in _LOADED:
                _LOADED[key] = meta.load(**options)
    return _LOADED[key]


def prefetch(ref: str) -> list:
    """Make every file space ``ref`` needs local (downloading when online); return paths.
    Nothing is built or loaded: only files are resolved, as the adapters would (through
    the fetcher on the space's registry entry)."""
    return info(ref).fetch()


def list() -> list[SpaceInfo]:  # noqa: A001  (mirrors open_clip.list_models)
    """Every registered space, in registration order."""
    _ensure_catalog()
    return [*_SPACES.values()]


def names() -> list[str]:
    """Every registered name and alias, plus family prefixes as ``prefix:``."""
    _ensure_catalog()
    return [*_ALIASES, *(f"{p}:" for p in _FAMILIES)]


def suggest(ref: str, n: int = 3) -> list[str]:
    """The registered names closest to ``ref`` (case-insensitive)."""
    pool = names()
    lowered = {name.lower(): name for name in pool}
    close = difflib.get_close_matches(ref.lower(), [*lowered], n=n, cutoff=0.5)
    return [lowered[c] for c in close]
