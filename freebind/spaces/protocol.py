"""The Space protocol and the static description of a space (docs/architecture.md,
"Interfaces").

A :class:`SpaceInfo` is cheap: it names a space, its family, modalities and dimension, and
knows how to load the encoder. Nothing heavy is imported until :meth:`SpaceInfo.load`.
A loaded :class:`Space` encodes items into L2-normalised float32 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable



@runtime_checkable
class Space(Protocol):
    """A loaded embedding space.

    ``encode(modality, items)`` takes file paths (audio, image, …) or strings (text) and
    returns a float32 ``torch.Tensor`` of shape ``[len(items), dim]`` with unit rows.
    ``fingerprint`` identifies weights and preprocessing; it keys the embedding cache.
    """

    name: str
    modalities: tuple[str, ...]
    dim: int
    fingerprint: str

    def encode(self, modality: str, items: Sequence[Any], batch_size: int = 32): ...


@dataclass(frozen=True)
class SpaceInfo:
    """Static metadata of a space: enough to plan with, before any encoder is installed.

    ``loader(info, **options)`` returns a :class:`Space`; ``checker(info)`` returns
    ``(ok, detail)`` telling whether the encoder package and weights are present here,
    without loading anything heavy.
    """

    name: str
    family: str
    modalities: tuple[str, ...]
    dim: int
    description: str = ""
    aliases: tuple[str, ...] = ()
    #: ``loader(**options) -> Space``, or ``"module:function"`` imported on first use.
    loader: Callable[..., Space] | str | None = field(default=None, compare=False, repr=False)
    #: ``checker() -> (ok, detail)``, or ``"module:function"``; must not import heavy code.
    checker: Callable[[], tuple[bool, str]] | str | None = field(default=None, compare=False,
                                                                 repr=False)
    #: Options passed to the loader (for instance a checkpoint name).
    options: tuple[tuple[str, Any], ...] = ()
    #: ``fetcher(info) -> [Path]`` makes the weights local (``freebind download``), or
    #: ``"module:function"``; None: the checker's detail is the only file.
    fetcher: Callable[..., Any] | str | None = field(default=None, compare=False, repr=False)
    #: the weights' licence as their publisher states it (SPDX id where there is one);
    #: "" when the family's default applies (:func:`freebind.spaces.licences.licence_of`)
    licence: str = ""

    def check(self) -> tuple[bool, str]:
        if self.checker is None:
            return (self.loader is not None, "" if self.loader else "no encoder registered")
        return _resolve(self.checker)(self)

    def load(self, **options) -> Space:
        from freebind.util.errors import SpaceError

        if self.loader is None:
            raise SpaceError(f"space {self.name!r} has no encoder here "
                             f"({self.family}); only its metadata is known")
        merged = dict(self.options)
        merged.update(options)
        return _resolve(self.loader)(self, **merged)


    def fetch(self) -> list:
        """Make every file this space needs local (downloading when allowed); the paths.
        Nothing is built or loaded."""
        from pathlib import Path

        from freebind.util.errors import SpaceError

        if self.fetcher is not None:
            return list(_resolve(self.fetcher)(self))
        ok, detail = self.check()
        if not ok:
            raise SpaceError(f"{self.name}: {detail}")
        return [Path(detail)] if detail and Path(detail).exists() else []


def _resolve(target):
    """A callable, or ``"package.module:function"`` imported now."""
    if callable(target):
        return target
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
