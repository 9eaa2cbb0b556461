"""One resolver for every target string: :func:`open`.

A *target* is what a verb embeds with or evaluates: a space reference (``mini:bind``,
``IB``, ``open_clip:ViT-B-32/laion2b_s34b_b79k``), a bundle file (``fused.safetensors``) or
a bundle with one of its stored presets (``fused.safetensors@versatile``). The
:class:`Target` it returns is itself a space (``name``, ``modalities``, ``dim``,
``fingerprint``, ``encode``), so a bundle is usable wherever a space is, and it has the
two halves of encoding apart, for engines that decode in one stage and encode in another:
:meth:`Target.prepare` (one item → the decoded inputs of every base space, no encoder
run) and :meth:`Target.encode_prepared` (decoded inputs → rows).

See docs/architecture.md ("Interfaces", "Target").
"""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from freebind.util.errors import MediaError, UsageError

from freebind.util.vocab import TEXT_MODALITIES  # noqa: E402  (items are strings)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"b.safetensors@versatile"`` → ``("b.safetensors", "versatile")``; a reference
    without ``@`` (or a space reference) → ``(ref, None)``; a hub reference
    (``hf:org/name@main@versatile``) → its bundle's local path (:mod:`freebind.run.hub_refs`,
    cached or downloaded) and preset."""
    ref = os.fspath(ref)
    if ref.startswith("hf:"):
        from freebind.run import hub_refs as hub

        return hub.split(ref)
    path, at, preset = ref.rpartition("@")
    if at and preset and (path.endswith(".safetensors") or Path(path).is_file()):
        return path, preset
    return ref, None


def is_bundle_ref(ref) -> bool:
    """Whether ``ref`` names a bundle file (``.safetensors``, or any existing file, or a
    hub reference ``hf:…``), with or without an ``@preset``; nothing is downloaded."""
    ref = os.fspath(ref)
    if ref.startswith("hf:"):
        return True
    path, _ = split_ref(ref)
    return path.endswith(".safetensors") or Path(path).is_file()


@dataclass
class Target:
    """A resolved target: a loaded space, or a fused bundle with its factor view.

    ``name`` is the space's name or the bundle's expression; ``label`` is what result
    tables show (the bundle's file stem with ``@preset`` and ``[factors]``)."""

    ref: str
    label: str
    space: Any = None                    # a loaded Space (plain targets)
    fused: Any = None                    # a FusedSpace (bundles)
    preset: str | None = None
    factors: list[str] = field(default_factory=list)
    #: loader options of every ``spaces.get`` for this target (device, precision, …)
    space_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # a bundle fuses where its encoders run
        if self.fused is not None and self.space_options.get("device"):
            self.fused.to(self.space_options["device"])

    # --- what it is ---------------------------------------------------------------------
    @property
    def is_bundle(self) -> bool:
        return self.fused is not None

    @property
    def path(self) -> Path | None:
        return Path(split_ref(self.ref)[0]) if self.is_bundle else None

    @property
    def name(self) -> str:
        return self.fused.name if self.is_bundle else self.space.name

    @property
    def dim(self) -> int:
        return int(self.fused.dim if self.is_bundle else self.space.dim)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.fused.modalities if self.is_bundle else self.space.modalities)

    @property
    def fingerprint(self) -> str:
        return str(self.fused.fingerprint if self.is_bundle else self.space.fingerprint)

    def leaf_refs(self, modality: str) -> list[str]:
        """Base spaces whose ``modality`` embeddings fusing may read (any factors)."""
        if not self.is_bundle:
            return [self.ref]
        return [ref for ref, meta in self.fused.plan.spaces.items()
                if modality in meta["modalities"]]

    @property
    def base_ref(self) -> str:
        """The unified space a bundle starts from (the paper's "base space")."""
        node = self.fused.graph
        while node["op"] != "space":
            node = node["base"]
        return node["ref"]

    def describe_factors(self, factors: Sequence[str] = (), preset: str | None = None) -> dict:
        if not self.is_bundle:
            return {}
        view = self.fused.with_factors(*factors, preset=preset) if (factors or preset) \
            else self.fused
        return view.factors

    def base_space(self, ref: str):
        """The loaded base space ``ref`` (for a plain target, the space itself)."""
        if not self.is_bundle:
            return self.space
        from freebind import spaces

        return spaces.get(ref, **self.space_options)

    def requests(self, modality: str) -> list[tuple[tuple[str, str], Any, str]]:
        """``((ref, m), space, m)`` for every base input the target's ``modality`` reads."""
        if not self.is_bundle:
            return [((self.ref, modality), self.space, modality)]
        return [((ref, m), self.base_space(ref), m)
                for ref, mods in self.fused.inputs_needed(modality).items()
                for m in sorted(mods)]

    # --- encoding -----------------------------------------------------------------------
    def _fuse(self, modality: str, rows: Mapping[tuple[str, str], Any], n: int):
        import numpy as np

        if not self.is_bundle:
            return np.asarray(rows[(self.ref, modality)], dtype=np.float32)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        inputs: dict[str, dict[str, Any]] = {}
        for (ref, m), arr in rows.items():
            inputs.setdefault(ref, {})[m] = arr
        out = self.fused.fuse(inputs, modalities=[modality])[modality]
        return out.detach().cpu().numpy().astype(np.float32, copy=False)

    def embed(self, modality: str, items: Sequence[Any], *, store=None, batch_size: int = 64,
              progress: bool = False, lazy: bool = False):
        """``(rows [kept, dim] float32, kept indices, failures)``: ``items`` encoded through
        ``store`` (cached base embeddings) or directly; undecodable items skipped.

        ``lazy=True`` (with a store) returns the rows as :class:`Rows`: the base
        embeddings stay memory-mapped in the store and are fused chunk by chunk as they
        are read (``rows.blocks()``), so nothing of the items' size is held."""
        from freebind.data.align import encode_aligned

        self._check_modality(modality)
        got = encode_aligned(self.requests(modality), items, store=store,
                             batch_size=batch_size, progress=progress,
                             lazy=lazy and store is not None)
        if lazy and store is not None:
            return Rows(self, modality, got.rows, len(got.kept)), got.kept, got.failures
        return self._fuse(modality, got.rows, len(got.kept)), got.kept, got.failures

    def encode(self, modality: str, items: Sequence[Any], batch_size: int = 32):
        """The Space protocol: ``[len(items), dim]`` float32 tensor, unit rows."""
        self._check_modality(modality)
        if self.is_bundle:
            return self.fused.encode(modality, items, batch_size=batch_size,
                                     **self.space_options)
        return self.space.encode(modality, items, batch_size=batch_size)

    def prepare(self, modality: str, item: Any) -> dict[tuple[str, str], Any]:
        """Decode one item for every base input ``modality`` reads, without encoding:
        ``{(space_ref, modality): decoded}``. Raises :class:`MediaError` (path and reason)
        for a file that cannot be decoded."""
        self._check_modality(modality)
        return {key: decode_item(space, m, item) for key, space, m in self.requests(modality)}

    def encode_prepared(self, modality: str, prepared: Sequence[Mapping]):
        """Rows ``[len(prepared), dim]`` float32 (numpy) of items decoded by :meth:`prepare`."""
        self._check_modality(modality)
        prepared = builtins.list(prepared)
        rows = {key: encode_decoded(space, m, [p[key] for p in prepared])
                for key, space, m in self.requests(modality)}
        return self._fuse(modality, rows, len(prepared))

    def _check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise UsageError(f"{self.name} has no {modality} modality (it has "
                             f"{', '.join(self.modalities)})")

    def __repr__(self) -> str:
        kind = "bundle" if self.is_bundle else "space"
        return f"Target({self.ref!r}, {kind}, dim={self.dim})"


def open(ref, factors: Sequence[str] | str | None = None,  # noqa: A001  (freebind.open)
         preset: str | None = None, *, space_options: Mapping[str, Any] | None = None) -> Target:
    """Resolve a target string: a space reference, a bundle path, ``bundle@preset``, or a
    Hugging Face Hub reference ``hf:ORG/NAME[@REVISION][:FILE][@preset]``
    (:mod:`freebind.run.hub_refs`).

    ``factors`` (``["a=0.8", "b2=off"]``) and ``preset`` apply to bundles only;
    ``space_options`` (device, precision, checkpoint, …) go to every ``spaces.get`` of the
    target (its base spaces, for a bundle). A preset given both in ``ref`` and as
    ``preset`` must agree."""
    if isinstance(ref, Target):
        return ref
    ref = os.fspath(ref)
    if isinstance(factors, str):
        factors = [factors]
    factors = [str(f) for f in (factors or ())]
    options = dict(space_options or {})
    if is_bundle_ref(ref):
        from freebind.fusion.fused import load

        path, inline = split_ref(ref)
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such bundle file")
        if inline and preset and inline != preset:
            raise UsageError(f"{ref}: names preset {inline!r} but preset={preset!r} was "
                             f"also given")
        chosen = inline or preset
        fused = load(path, factors=factors, preset=chosen)
        if ref.startswith("hf:"):
            from freebind.run import hub_refs as hub

            label = hub.parse(ref).bundle_ref.split(":", 1)[1]
            label += (f"@{chosen}" if chosen else "")
        else:
            label = Path(path).stem + (f"@{chosen}" if chosen else "")
        if factors:
            label += "[" + ",".join(factors) + "]"
        return Target(ref, label, fused=fused, preset=chosen, factors=factors,
                      space_options=options)
    if factors or preset:
        raise UsageError(f"{ref}: factors and presets apply to fused bundles, not to the "
                         f"plain space {ref!r}")
    from freebind import spaces

    return Target(ref, ref, space=spaces.get(ref, **options), space_options=options)


# --- the two halves of a space's encode -------------------------------------------------

def decode_item(space, modality: str, item: Any):
    """One item's encoder input for ``space`` (decoded file, or the text itself), without
    running the encoder. Spaces that split their work define
    ``decode_item(modality, item)``; for any other space a file is checked to be readable
    and passed on as its path."""
    hook = getattr(space, "decode_item", None)
    if hook is not None:
        return hook(modality, item)
    if modality in TEXT_MODALITIES:
        if not isinstance(item, str):
            raise MediaError(f"{item!r}: a text item must be a string")
        return item
    path = os.fspath(item)
    try:
        with builtins.open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise MediaError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return path


def encode_decoded(space, modality: str, inputs: Sequence[Any]):
    """Rows (float32 numpy, unit norm) of inputs made by :func:`decode_item`."""
    import numpy as np

    hook = getattr(space, "encode_decoded", None)
    inputs = builtins.list(inputs)
    if hook is not None:
        out = hook(modality, inputs)
    elif not inputs:
        return np.zeros((0, int(space.dim)), dtype=np.float32)
    else:
        out = space.encode(modality, inputs, batch_size=len(inputs))
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


# --- a bundle as a space of the registry: ``bundle:PATH[@preset]`` ------------------------

def resolve_bundle_family(spec: str, ref: str):
    """``bundle:fused.safetensors[@preset]`` → the bundle's registry entry, so that a fused
    space can be bound again (``mini:bind + c(bundle:f.safetensors)``)."""
    from freebind.util.errors import SpaceError
    from freebind.fusion.fused import load
    from freebind.spaces.protocol import SpaceInfo

    if not spec:
        raise SpaceError(f"{ref}: give a bundle file, e.g. bundle:fused.safetensors")
    path, preset = split_ref(spec)
    if not Path(path).is_file():
        from freebind.util.errors import BundleMissing

        raise BundleMissing(f"{ref}: no such bundle file {path}")
    fused = load(path, preset=preset)
    return SpaceInfo(name=ref, family="bundle", modalities=tuple(fused.modalities),
                     dim=int(fused.dim), description=f"fused bundle {fused.name}",
                     options=(("path", str(path)), ("preset", preset)),
                     loader="freebind.run.targets:load_bundle_space",
                     checker="freebind.run.targets:check_bundle_space")


def resolve_hub_family(spec: str, ref: str):
    """``hf:ORG/NAME…`` as a registry entry: the bundle it names (:mod:`freebind.run.hub_refs`),
    usable as an expert (``mini:bind + c(hf:org/name)``) or bound again."""
    import dataclasses

    from freebind.run import hub_refs as hub

    parsed = hub.parse(ref)
    path = hub.resolve(parsed)
    found = resolve_bundle_family(str(path) + (f"@{parsed.preset}" if parsed.preset else ""),
                                  ref)
    return dataclasses.replace(found, description=f"{found.description} "
                                                  f"({parsed.describe()})")


def load_bundle_space(info, path: str, preset: str | None = None, **space_options) -> Target:
    """Registry loader of ``bundle:`` entries: the resolved bundle (a space); loader options
    go to its base spaces."""
    target = open(path, preset=preset, space_options=space_options)
    target.space_name = info.name
    return target


def check_bundle_space(info) -> tuple[bool, str]:
    path = dict(info.options).get("path", "")
    return (Path(path).is_file(), path if Path(path).is_file() else f"missing: {path}")


class Rows:
    """A target's rows of some items, computed block by block from the (memory-mapped) base
    embeddings: ``.shape``, ``blocks()`` yielding ``(start, float32 array)``, and
    ``np.asarray(rows)`` for everything at once."""

    def __init__(self, target: Target, modality: str, inputs, n: int):
        self.target, self.modality, self.inputs, self.n = target, modality, inputs, int(n)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, int(self.target.dim))

    def __len__(self) -> int:
        return self.n

    def blocks(self, chunk_rows: int | None = None):
        import numpy as np

        if self.n == 0:
            return
        if not self.target.is_bundle:
            view = self.inputs[(self.target.ref, self.modality)]
            step = int(chunk_rows or 16384)
            for a in range(0, self.n, step):
                yield a, np.asarray(view[a:min(self.n, a + step)], dtype=np.float32)
            return
        inputs: dict[str, dict[str, Any]] = {}
        for (ref, m), arr in self.inputs.items():
            inputs.setdefault(ref, {})[m] = arr
        for _, a, block in self.target.fused.fuse_blocks(inputs, modalities=[self.modality],
                                                         chunk_rows=chunk_rows):
            yield a, block.detach().cpu().numpy().astype(np.float32, copy=False)

    def __array__(self, dtype=None, copy=None):
        import numpy as np

        out = np.empty(self.shape, dtype=np.float32)
        for a, block in self.blocks():
            out[a:a + len(block)] = block
        return out if dtype is None else out.astype(dtype, copy=False)
