"""FusedSpace: base spaces + inference graph + projector groups + factors.

A fused space is itself a Space (``name``, ``modalities``, ``dim``, ``fingerprint``,
``encode``), so it can be embedded with, evaluated, or bound again. Factors are applied at
call time (customised inference): ``with_factors("a=0.8")`` or ``preset="at-expertise"``
returns a view sharing the same projectors.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from freebind.fusion import bundle as bundle_io
from freebind.algebra import Plan
from freebind.util.errors import BundleError
from freebind.fusion.factors import as_overrides, describe, paper_presets, resolve
from freebind.fusion.projector import PARAM_NAMES


class FusedSpace:
    def __init__(self, plan: Plan, projectors: Mapping, metadata: dict | None = None,
                 overrides: Sequence = (), preset: str | None = None):
        self.plan = plan
        self.projectors = dict(projectors)
        self.metadata = dict(metadata or {})
        self.metadata.setdefault("presets", paper_presets(plan.graph))
        self.overrides = list(as_overrides(overrides))
        self.preset = preset
        self.table = resolve(plan.graph, self.overrides, self.presets, preset)
        self.path: Path | None = None

    # --- Space protocol -----------------------------------------------------------------
    @property
    def graph(self) -> dict:
        return self.plan.graph

    @property
    def name(self) -> str:
        return self.plan.expression

    @property
    def modalities(self) -> tuple[str, ...]:
        from freebind.fusion.graph import output_modalities

        return tuple(output_modalities(self.graph, self.table))

    @property
    def dim(self) -> int:
        return self.plan.dim

    @property
    def presets(self) -> dict[str, list[str]]:
        return self.metadata["presets"]

    @property
    def routers(self) -> dict:
        """The learned routers, by bond id (bonds built with ``route=learned``)."""
        from freebind.fusion.router import BondRouter

        return {g.bond_id: g for g in self.projectors.values() if isinstance(g, BondRouter)}

    @property
    def factors(self) -> dict:
        """Effective factors and switches per bond."""
        return describe(self.table)

    @property
    def weights_fingerprint(self) -> str:
        if "_weights_fp" not in self.__dict__:
            h = hashlib.sha256(self.plan.expression.encode())
            for name, tensor in sorted(self.tensors().items()):
                h.update(name.encode())
                h.update(tensor.detach().cpu().numpy().tobytes())
            self.__dict__["_weights_fp"] = h.hexdigest()[:16]
        return self.__dict__["_weights_fp"]

    @property
    def fingerprint(self) -> str:
        """Identity of weights, base spaces and the effective factors."""
        h = hashlib.sha256(self.weights_fingerprint.encode())
        h.update(json.dumps(self.factors, sort_keys=True).encode())
        for ref, meta in sorted(self.metadata.get("spaces", {}).items()):
            h.update(f"{ref}={meta.get('fingerprint', '')}".encode())
        return h.hexdigest()[:16]

    # --- factors ------------------------------------------------------------------------
    def with_factors(self, *specs, preset: str | None = None, **kwargs) -> "FusedSpace":
        """A view with more overrides (strings like ``"a=0.8"`` or keywords ``a=0.8``)."""
        extra = [*as_overrides(list(specs)), *as_overrides(kwargs or None)]
        view = FusedSpace(self.plan, self.projectors, self.metadata,
                          [*self.overrides, *extra], preset if preset is not None
                          else self.preset)
        view.path = self.path
        view.__dict__["_weights_fp"] = self.weights_fingerprint
        return view

    # --- fusion -------------------------------------------------------------------------
    def table_for(self, factors=None, preset: str | None = None):
        """The factor table of this view with ``factors``/``preset`` on top."""
        if factors is None and preset is None:
            return self.table
        return resolve(self.graph, [*self.overrides, *as_overrides(factors)],
                       self.presets, preset if preset is not None else self.preset)

    def fuse(self, embeddings: Mapping[str, Mapping[str, object]], factors=None,
             preset: str | None = None, modalities: list[str] | None = None,
             chunk_rows: int | None = None, device=None):
        """Fuse precomputed base embeddings ``{space_ref: {modality: array}}`` (arrays,
        tensors, memory maps or store views) into ``{modality: Tensor}``;
        ``factors``/``preset`` override this view's for this call. The work runs
        ``chunk_rows`` rows at a time (default: what the memory budget allows,
        :func:`freebind.fusion.graph.fusion_chunk_rows`), on ``device`` (default: where the inputs
        or the projectors are)."""
        from freebind.fusion.graph import fuse

        return fuse(self.graph, self.projectors, embeddings,
                    table=self.table_for(factors, preset), modalities=modalities,
                    chunk_rows=chunk_rows, device=device)

    def fuse_blocks(self, embeddings: Mapping[str, Mapping[str, object]], factors=None,
                    preset: str | None = None, modalities: list[str] | None = None,
                    chunk_rows: int | None = None, device=None):
        """Like :meth:`fuse`, block by block: yields ``(modality, start, Tensor)``, so
        nothing pool-sized is held (:func:`freebind.fusion.graph.fuse_blocks`)."""
        from freebind.fusion.graph import fuse_blocks

        return fuse_blocks(self.graph, self.projectors, embeddings,
                           table=self.table_for(factors, preset), modalities=modalities,
                           chunk_rows=chunk_rows, device=device)

    def to(self, device) -> "FusedSpace":
        """Move the projectors (and routers) to ``device``; fusion then runs there."""
        for group in self.projectors.values():
            if hasattr(group, "to"):
                group.to(device)
        return self

    def inputs_needed(self, modality: str) -> dict[str, set[str]]:
        from freebind.fusion.graph import inputs_needed

        return inputs_needed(self.graph, modality, self.table)

    def encode(self, modality: str, items: Sequence, batch_size: int = 32, store=None,
               progress: bool = False, on_error: str = "raise", **space_options):
        """Encode ``items`` with the base spaces this modality needs, then fuse.

        ``store`` (an embedding store with ``embed(space, modality, items, …)``) caches the
        base embeddings; without one the spaces encode directly. ``on_error="skip"`` drops
        the items any base space cannot decode and returns ``(rows, kept)``: the fused rows
        of the items kept and their indices in ``items`` (:mod:`freebind.data.align`)."""
        from freebind import spaces
        from freebind.data.align import encode_aligned

        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        if on_error == "skip":
            import torch

            requests = [((ref, m), spaces.get(ref, **space_options), m)
                        for ref, mods in self.inputs_needed(modality).items()
                        for m in sorted(mods)]
            got = encode_aligned(requests, items, store=store, batch_size=batch_size,
                                 progress=progress)
            if len(got.kept) == 0:
                return torch.zeros((0, self.dim), dtype=torch.float32), got.kept
            inputs: dict[str, dict[str, object]] = {}
            for (ref, m), arr in got.rows.items():
                inputs.setdefault(ref, {})[m] = arr
            return self.fuse(inputs, modalities=[modality])[modality], got.kept
        inputs = {}
        for ref, mods in self.inputs_needed(modality).items():
            space = spaces.get(ref, **space_options)
            for m in mods:
                if store is not None:
                    inputs.setdefault(ref, {})[m] = store.embed(space, m, items,
                                                                batch_size=batch_size,
                                                                progress=progress)
                else:
                    inputs.setdefault(ref, {})[m] = space.encode(m, items,
                                                                 batch_size=batch_size)
        return self.fuse(inputs, modalities=[modality])[modality]

    # --- persistence --------------------------------------------------------------------
    def tensors(self) -> dict:
        out = {}
        for job_id, group in self.projectors.items():
            out.update(group.tensors(job_id))
        return out

    def save(self, path: str | os.PathLike, **metadata) -> Path:
        meta = {**self.metadata, **metadata, "expression": self.plan.expression,
                "plan": self.plan.to_dict()}
        self.metadata.update(metadata)
        self.path = bundle_io.save(path, self.tensors(), meta)
        return self.path

    @classmethod
    def from_plan(cls, plan: Plan, projectors: Mapping, **metadata) -> "FusedSpace":
        return cls(plan, projectors, metadata)

    def __repr__(self) -> str:
        """Name, size and modalities, then what changes its output: the preset and factor
        overrides (``with_factors``), and the file it was read from."""
        extra = f", preset={self.preset!r}" if self.preset else ""
        if self.overrides:
            extra += f", factors={[str(o) for o in self.overrides]!r}"
        if self.path is not None:
            extra += f", path={str(self.path)!r}"
        return f"FusedSpace({self.name!r}, dim={self.dim}, modalities={self.modalities}{extra})"


def required_tensors(plan: Plan) -> list[str]:
    from freebind.fusion.router import required_tensors as router_tensors

    names = [f"{job.id}.{name}" for job in plan.jobs for name in PARAM_NAMES]
    for bond in plan.bonds():
        if bond.get("route") == "learned":
            names += router_tensors(bond)
    return names


def load(path: str | os.PathLike, factors=None, preset: str | None = None) -> FusedSpace:
    """Load a bundle written by ``freebind build``/``convert`` as a :class:`FusedSpace`."""
    import torch

    from freebind.fusion.projector import ProjectorGroup

    meta = bundle_io.read_metadata(path)
    try:
        plan = Plan.from_dict(meta["plan"])
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{path}: bundle metadata has no valid plan ({exc})") from None
    arrays, meta = bundle_io.load(path, required=required_tensors(plan))
    tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    projectors = {}
    for job in plan.jobs:
        group = ProjectorGroup.from_tensors(tensors, job.id)
        if (group.d_in, group.d_out) != (job.source_dim, job.target_dim):
            raise BundleError(f"{path}: projector {job.id} maps {group.d_in}->{group.d_out} "
                              f"but the plan says {job.source_dim}->{job.target_dim}")
        projectors[job.id] = group
    from freebind.util.errors import FreebindError
    from freebind.fusion.router import BondRouter, router_key

    for bond in plan.bonds():
        if bond.get("route") == "learned":
            try:
                projectors[router_key(bond["id"])] = BondRouter.from_tensors(tensors, bond)
            except FreebindError as exc:
                raise BundleError(f"{path}: {exc}") from None
    space = FusedSpace(plan, projectors, meta, as_overrides(factors), preset)
    space.path = Path(path)
    return space
