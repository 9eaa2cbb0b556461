"""Convert the FreeBind authors' released projectors into freebind bundles.

The release is a ``checkpoints`` folder with one sub-folder per projector group,
``<name>_Proj/<mode>/best.pt`` for the data modes ``mix, A, T, V, AT, AV, TV``. Each ``best.pt``
is the state dict of one projector, Linear(in, 2048) – BatchNorm1d – ReLU – Linear(2048, out) –
BatchNorm1d, stored under ``Head2.mlps.{0,1,3,4}.*`` (the Linear layers at 0 and 3, the
BatchNorms at 1 and 4). freebind keeps the K projectors of a group stacked
(:class:`freebind.fusion.projector.ProjectorGroup`): ``w1 = mlps.0.weightᵀ``, ``b1 =
mlps.0.bias``, ``bn1 = mlps.1``, ``w2 = mlps.3.weightᵀ``, ``b2 = mlps.3.bias``, ``bn2 =
mlps.4``; projector k of a group is data mode k, in the order above.

Variants (expressions and the folders that feed each projector group):

* ``imagebind++`` — ``IB + c(CLAP_g, CLAP_m)``: IB_PP_G_Proj (CLAP_g→IB), IB_PP_M_Proj.
* ``internvl_ib`` — ``IB + d(InternVL)``: InternVL_IB_Proj (IB→InternVL).
* ``internvl_ib++`` — ``IB + d(InternVL) + c(CLAP_g, CLAP_m)``: InternVL_IB_Proj,
  InternVL_IB_PP_G_Proj, InternVL_IB_PP_M_Proj (CLAP→InternVL_IB).

With equal expert weights the parallel combination n(½·m_g + ½·m_m) equals the authors' one
mean over all 14 projectors, and the bundles carry the paper's presets plus ``authors`` (the
factors the released inference code uses). :func:`convert` checks the bundle against a
direct re-implementation of the authors' computation on random inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from freebind.util.errors import FreebindError, UsageError

DATA_MODES = ("mix", "A", "T", "V", "AT", "AV", "TV")
HIDDEN = 2048
LAYERS = {"linear1": "0", "bn1": "1", "linear2": "3", "bn2": "4"}


@dataclass(frozen=True)
class Variant:
    name: str
    expression: str
    #: job source space (or expression) -> release folder
    folders: dict
    #: the factors of the authors' released inference code, as overrides
    authors: tuple = ()
    description: str = ""
    extra: dict = field(default_factory=dict)


VARIANTS = {
    "imagebind++": Variant(
        "imagebind++", "IB + c(CLAP_g, CLAP_m)",
        {"CLAP_g": "IB_PP_G_Proj", "CLAP_m": "IB_PP_M_Proj"},
        ("b1.audio=0.5", "b1.text=0.5"),
        "ImageBind++: ImageBind combined with two audio-text experts"),
    "internvl_ib": Variant(
        "internvl_ib", "IB + d(InternVL)", {"IB": "InternVL_IB_Proj"},
        ("b1.image=0.8", "b1.text=0.8"),
        "InternVL_IB: ImageBind displaced into InternVL-C's image-text space"),
    "internvl_ib++": Variant(
        "internvl_ib++", "IB + d(InternVL) + c(CLAP_g, CLAP_m)",
        {"IB": "InternVL_IB_Proj", "CLAP_g": "InternVL_IB_PP_G_Proj",
         "CLAP_m": "InternVL_IB_PP_M_Proj"},
        ("b1.image=0.8", "b1.text=0.8", "b2.audio=0.5", "b2.text=0.1"),
        "InternVL_IB++: InternVL_IB combined with two audio-text experts"),
}


class ConvertError(FreebindError):
    """The release folder is incomplete or a checkpoint does not have the expected layout."""


def variant(name: str) -> Variant:
    key = name.strip().lower().replace("-", "_")
    key = {"ib++": "imagebind++", "imagebind_pp": "imagebind++",
           "internvl_ib_pp": "internvl_ib++"}.get(key, key)
    if key not in VARIANTS:
        raise UsageError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[key]


def projector_tensors(path: Path, d_in: int, d_out: int, hidden: int | None = None) -> dict:
    """One released projector as freebind's per-projector tensors (unstacked).

    ``hidden`` defaults to the checkpoint's own width (2048 in the release)."""
    from freebind.util.errors import SpaceError
    from freebind.spaces import weights

    try:
        state = weights.load_state_dict(path, "projector checkpoint")
    except SpaceError as exc:
        raise ConvertError(str(exc)) from None
    state = weights.strip_prefix(state)
    prefix = _find_prefix(state, path)
    if hidden is None:
        hidden = int(state[f"{prefix}0.weight"].shape[0])

    def get(layer: str, name: str, shape: tuple):
        key = f"{prefix}{LAYERS[layer]}.{name}"
        if key not in state:
            raise ConvertError(f"{path}: missing tensor {key}")
        t = state[key].detach().to("cpu").float()
        if tuple(t.shape) != shape:
            raise ConvertError(f"{path}: {key} has shape {tuple(t.shape)}, expected {shape}")
        return t

    out = {"w1": get("linear1", "weight", (hidden, d_in)).T.contiguous(),
           "b1": get("linear1", "bias", (hidden,)),
           "w2": get("linear2", "weight", (d_out, hidden)).T.contiguous(),
           "b2": get("linear2", "bias", (d_out,))}
    for bn, width in (("bn1", hidden), ("bn2", d_out)):
        for stat in ("weight", "bias", "running_mean", "running_var"):
            out[f"{bn}.{stat}"] = get(bn, stat, (width,))
    return out


def _find_prefix(state: dict, path: Path) -> str:
    for key in state:
        if key.endswith("0.weight") and "mlps." in key:
            return key[: -len("0.weight")]
    raise ConvertError(f"{path}: not a FreeBind projector (no Head2.mlps.0.weight; keys: "
                       f"{', '.join(list(state)[:4])}…)")


def group_from_folder(folder: Path, d_in: int, d_out: int, modes=DATA_MODES):
    """The stacked :class:`ProjectorGroup` of ``folder/<mode>/best.pt`` for every mode."""
    import torch

    from freebind.fusion.projector import PARAM_NAMES, ProjectorGroup

    if not folder.is_dir():
        raise ConvertError(f"{folder}: release folder missing")
    per_mode = []
    hidden = None
    for mode in modes:
        path = folder / mode / "best.pt"
        if not path.exists():
            raise ConvertError(f"{path}: missing (expected one best.pt per data mode: "
                               f"{', '.join(modes)})")
        per_mode.append(projector_tensors(path, d_in, d_out, hidden))
        hidden = int(per_mode[-1]["b1"].shape[0])
    stacked = {f"g.{name}": torch.stack([p[name] for p in per_mode]) for name in PARAM_NAMES}
    return ProjectorGroup.from_tensors(stacked, "g")


def convert(release_dir, variant_name: str, out_path, verify: bool = True,
            progress=None) -> dict:
    """Convert a release folder into a bundle at ``out_path``; returns a summary dict."""
    from freebind.algebra import plan as make_plan
    from freebind.fusion.factors import paper_presets
    from freebind.fusion.fused import FusedSpace

    var = variant(variant_name)
    root = Path(release_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    plan = make_plan(var.expression)
    projectors, rows, files = {}, [], {}
    for job in plan.jobs:
        folder_name = var.folders.get(job.source)
        if folder_name is None:
            raise ConvertError(f"variant {var.name}: no release folder for {job.source}")
        if list(job.data_modes) != list(DATA_MODES):
            raise ConvertError(f"variant {var.name}: job {job.id} trains modes "
                               f"{job.data_modes}, the release has {list(DATA_MODES)}")
        folder = _locate(root, folder_name)
        group = group_from_folder(folder, job.source_dim, job.target_dim)
        projectors[job.id] = group
        for mode in DATA_MODES:
            p = folder / mode / "best.pt"
            files[str(p.relative_to(root))] = _sha256(p)
        rows.append({"job": job.id, "bond": job.bond, "kind": job.kind, "source": job.source,
                     "target": job.target, "folder": folder_name,
                     "dims": f"{job.source_dim}->{job.target_dim}", "projectors": group.k,
                     "hidden": group.hidden})
        if progress is not None:
            progress(job.id)
    presets = paper_presets(plan.graph)
    presets["authors"] = list(var.authors)
    space = FusedSpace.from_plan(
        plan, projectors, presets=presets,
        spaces={ref: dict(meta) for ref, meta in plan.spaces.items()},
        source={"kind": "converted", "variant": var.name, "description": var.description,
                "release_files_sha256": files})
    max_diff = _verify(space, var) if verify else None
    if max_diff is not None:
        space.metadata["source"]["verified_max_abs_diff"] = max_diff
    path = space.save(out_path)
    return {"variant": var.name, "expression": plan.expression, "output": str(path),
            "dim": plan.dim, "jobs": rows, "presets": sorted(presets),
            "verified_max_abs_diff": max_diff}


def _locate(root: Path, name: str) -> Path:
    for candidate in (root / name, root / "checkpoints" / name):
        if candidate.is_dir():
            return candidate
    raise ConvertError(f"{root / name}: release folder missing")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- the authors' computation, re-implemented for verification --------------------------------
def reference_projection(groups, inputs):
    """The released inference code's projection: every projector (an eval-mode
    Linear–BN–ReLU–Linear–BN followed by L2 normalisation) applied to its expert's input, one
    mean over all of them, normalised."""
    import torch
    from torch.nn import functional as F

    outs = []
    for group, x in zip(groups, inputs):
        for k in range(group.k):
            h = x @ group.w1[k] + group.b1[k]
            h = F.batch_norm(h, group.bn1.running_mean[k], group.bn1.running_var[k],
                             group.bn1.weight[k], group.bn1.bias[k], False, 0.0, 1e-5)
            h = F.relu(h)
            y = h @ group.w2[k] + group.b2[k]
            y = F.batch_norm(y, group.bn2.running_mean[k], group.bn2.running_var[k],
                             group.bn2.weight[k], group.bn2.bias[k], False, 0.0, 1e-5)
            outs.append(F.normalize(y, dim=-1))
    return F.normalize(torch.stack(outs, dim=1).mean(dim=1), dim=-1)


def _mix(expert, base, factor):
    from torch.nn import functional as F

    return F.normalize(expert * factor + base * (1 - factor), dim=-1)


def reference_outputs(variant_name: str, projectors: dict, emb: dict, factors: dict) -> dict:
    """The authors' fused embeddings for ``emb`` = {space: {modality: Tensor}} (unit rows)."""
    var = variant(variant_name)
    out = {}
    if var.name == "imagebind++":
        g, m = projectors["j1"], projectors["j2"]
        for mod, key in (("audio", "audio"), ("text", "text")):
            ex = reference_projection([g, m], [emb["CLAP_g"][mod], emb["CLAP_m"][mod]])
            out[mod] = _mix(ex, emb["IB"][mod], factors[key])
        out["image"] = emb["IB"]["image"]
        return out
    d = projectors["j1"]
    vl = {}
    for mod in ("image", "text"):
        vl[mod] = _mix(reference_projection([d], [emb["IB"][mod]]), emb["InternVL"][mod],
                       1 - factors[f"d.{mod}"])
    vl["audio"] = reference_projection([d], [emb["IB"]["audio"]])
    if var.name == "internvl_ib":
        return vl
    g, m = projectors["j2"], projectors["j3"]
    for mod in ("audio", "text"):
        ex = reference_projection([g, m], [emb["CLAP_g"][mod], emb["CLAP_m"][mod]])
        out[mod] = _mix(ex, vl[mod], factors[mod])
    out["image"] = vl["image"]
    return out


def _verify(space, var: Variant, n: int = 8, seed: int = 0) -> float:
    """Largest |bundle − authors' computation| over random unit inputs, authors' factors."""
    import torch
    from torch.nn import functional as F

    gen = torch.Generator().manual_seed(seed)
    emb = {}
    for ref, meta in space.plan.spaces.items():
        emb[ref] = {m: F.normalize(torch.randn(n, meta["dim"], generator=gen), dim=-1)
                    for m in meta["modalities"]}
    view = space.with_factors(preset="authors")
    with torch.no_grad():
        mine = view.fuse(emb)
        factors = _authors_factors(var)
        ref = reference_outputs(var.name, space.projectors, emb, factors)
    return float(max((mine[m] - ref[m]).abs().max() for m in ref))


def _authors_factors(var: Variant) -> dict:
    table = {}
    for spec in var.authors:
        bond_mod, value = spec.split("=")
        bond, mod = bond_mod.split(".")
        kind = "d" if (var.name != "imagebind++" and bond == "b1") else "c"
        table[f"d.{mod}" if kind == "d" else mod] = float(value)
    return table
