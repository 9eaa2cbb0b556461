"""Uni3D (``Uni3D``, ``Uni3D-l`` … ``Uni3D-ti``, ``uni3d:PATH``): point clouds in the space
of EVA-CLIP, as one space over image, text and point.

The point tower is freebind's own implementation (:mod:`freebind.spaces.families.uni3d_model`)
that loads the released checkpoints (``BAAI/Uni3D``: ``modelzoo/uni3d-{g,l,b,s,ti}/model.pt``,
a ``{"module": state_dict}``) key for key; the image and text towers are the EVA-CLIP model
the point tower was aligned to, through open_clip (``EVA02-E-14-plus`` /
``laion2b_s9b_b144k``; :mod:`freebind.spaces.openclip`). A point cloud or mesh is read by
:mod:`freebind.data.points`: farthest-point sampled to ``npoints`` (10,000, as Uni3D
evaluates), centred, scaled into the unit sphere, grey 0.4 where it has no colour.

Options: ``model`` (giant, large, base, small, tiny), ``checkpoint`` (a local Uni3D file),
``clip_arch``/``clip_tag``/``clip_checkpoint`` (the image-text towers), ``npoints``,
``num_group`` (512), ``group_size`` (64), ``heads`` (checkpoints of an unreleased width),
``device``, ``precision``, ``batch_size``, ``workers``, ``download``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from freebind.util.errors import SpaceError
from freebind.spaces import weights
from freebind.spaces.adapter import EncoderAdapter, check_modality, reject_unknown

REPO = "BAAI/Uni3D"
MODELS = {"giant": "g", "large": "l", "base": "b", "small": "s", "tiny": "ti"}
CLIP_ARCH, CLIP_TAG = "EVA02-E-14-plus", "laion2b_s9b_b144k"
EMBED_DIM = 1024
PREPROCESS_VERSION = "uni3d-pre-1"
MODALITIES = ("image", "text", "point")


def weight_file(model: str) -> weights.WeightFile:
    if model not in MODELS:
        raise SpaceError(f"unknown Uni3D model {model!r} (known: {', '.join(MODELS)})")
    name = f"modelzoo/uni3d-{MODELS[model]}/model.pt"
    return weights.WeightFile(
        filename=f"uni3d-{MODELS[model]}.pt", family="uni3d", origin=f"huggingface.co/{REPO}",
        library_paths=lambda: weights.hf_cached([REPO], name),
        fetch=_renamed(weights.hf_fetch(REPO, name), f"uni3d-{MODELS[model]}.pt"))


def _renamed(fetch, filename: str):
    def run(dest: Path) -> Path:
        got = Path(fetch(dest))
        target = dest / filename
        if got != target:
            got.replace(target)
        return target

    run.host = getattr(fetch, "host", None)
    return run


def resolve_family(spec: str, ref: str):
    """``uni3d:MODEL`` (giant … tiny) or ``uni3d:/path/model.pt`` → SpaceInfo."""
    from freebind.spaces.protocol import SpaceInfo

    if spec in MODELS:
        options = (("model", spec),)
    elif spec:
        options = (("checkpoint", spec),)
    else:
        raise SpaceError(f"{ref}: give a model ({', '.join(MODELS)}) or a checkpoint path")
    return SpaceInfo(name=ref, family="uni3d", modalities=MODALITIES, dim=EMBED_DIM,
                     description=f"Uni3D point encoder ({spec}) with EVA-CLIP towers",
                     options=options, loader="freebind.spaces.families.uni3d:load",
                     checker="freebind.spaces.families.uni3d:check",
                     fetcher="freebind.spaces.families.uni3d:fetch")


def check(info=None) -> tuple[bool, str]:
    """Whether open_clip (the image-text towers) and the point checkpoint are here."""
    from freebind.spaces import openclip

    opts = dict(getattr(info, "options", ()) or ())
    ok, missing = weights.package_available("open_clip", "timm", "torchvision")
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[uni3d]'"
    if opts.get("checkpoint"):
        path = Path(opts["checkpoint"])
        if not path.exists():
            return False, f"weights missing: {path}"
    else:
        found = weight_file(opts.get("model", "giant")).find_local()
        if found is None:
            return False, f"weights not in {weights.weights_dir('uni3d')} (freebind download)"
        path = found
    if opts.get("clip_checkpoint"):
        return True, str(path)
    clip_ok, detail = openclip.check(type("I", (), {"options": (
        ("arch", opts.get("clip_arch", CLIP_ARCH)), ("tag", opts.get("clip_tag", CLIP_TAG)))})())
    return (True, str(path)) if clip_ok else (False, f"image-text towers: {detail}")


def fetch(info) -> list[Path]:
    """``freebind download``: the point checkpoint and the EVA-CLIP weights."""
    from freebind.spaces import fetch as fetchers
    from freebind.spaces.protocol import SpaceInfo

    opts = dict(info.options)
    out = [Path(opts["checkpoint"])] if opts.get("checkpoint") else [
        weights.resolve(weight_file(opts.get("model", "giant")))]
    if not opts.get("clip_checkpoint"):
        clip = SpaceInfo(name=f"{info.name} (image-text)", family="open_clip",
                         modalities=("image", "text"), dim=EMBED_DIM,
                         options=(("arch", opts.get("clip_arch", CLIP_ARCH)),
                                  ("tag", opts.get("clip_tag", CLIP_TAG))))
        out += fetchers.open_clip(clip)
    return out


def load_point_model(path, heads: int | None = None, **sizes):
    """A Uni3D point model from a checkpoint file (``module.`` prefixes and a ``module`` or
    ``state_dict`` wrapper are unwrapped), every used key loaded, every other one refused
    unless it is a part of the ViT that Uni3D never runs."""
    from freebind.spaces.families import uni3d_model as M

    state = weights.strip_prefix(weights.load_state_dict(path, "Uni3D checkpoint"))
    try:
        cfg = M.config_from_state(state, heads=heads, **sizes)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None
    model = M.Uni3D(cfg)
    unused = [k for k in state if k.startswith(M.UNUSED_PREFIXES) or k in M.UNUSED_KEYS]
    weights.load_into(model, state, path, ignore=unused)
    return model.eval()


def load(info=None, model: str = "giant", checkpoint: str | None = None,
         clip_arch: str = CLIP_ARCH, clip_tag: str | None = CLIP_TAG,
         clip_checkpoint: str | None = None, npoints: int = 10_000, num_group: int = 512,
         group_size: int = 64, heads: int | None = None, device: str | None = None,
         precision: str | None = None, batch_size: int = 16, download: bool = True,
         workers: int | None = None, **unused) -> "Uni3DSpace":
    from freebind.spaces import openclip

    reject_unknown(unused, "uni3d")
    path = (weights.resolve(weight_file(model), checkpoint, download=download)
            if not checkpoint else Path(checkpoint))
    if not path.exists():
        raise SpaceError(f"{path}: Uni3D checkpoint not found")
    points = load_point_model(path, heads=heads, num_group=int(num_group),
                              group_size=int(group_size), npoints=int(npoints))
    clip = openclip.load(None, arch=clip_arch, tag=None if clip_checkpoint else clip_tag,
                         checkpoint=clip_checkpoint, device=device, precision=precision,
                         batch_size=batch_size, download=download, workers=workers)
    name = getattr(info, "name", None) or f"uni3d:{checkpoint or model}"
    return Uni3DSpace(name, points, path, clip, batch_size=batch_size)


class Uni3DSpace(EncoderAdapter):
    """Uni3D: points through freebind's point tower, images and texts through EVA-CLIP."""

    family = "uni3d"

    def __init__(self, name: str, model, checkpoint, clip, batch_size: int = 16):
        self.name, self.clip, self.checkpoint = name, clip, Path(checkpoint)
        self.modalities = MODALITIES
        self.device, self.precision, self.dtype = clip.device, clip.precision, clip.dtype
        self.workers, self.batch_size = clip.workers, batch_size
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.npoints = model.point_encoder.cfg.npoints
        cfg_dim = model.point_encoder.cfg.embed_dim
        if cfg_dim != clip.dim:
            raise SpaceError(f"{checkpoint}: the point tower is {cfg_dim}-d, its image-text "
                             f"towers ({clip.name}) {clip.dim}-d: they are not one space")
        self.dim = cfg_dim
        self.fingerprint = hashlib.sha256(json.dumps(
            ["uni3d", weights.file_digest(self.checkpoint), clip.fingerprint,
             repr(model.point_encoder.cfg), PREPROCESS_VERSION, self.precision],
            sort_keys=True).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    def prepare(self, modality: str, items):
        import torch

        check_modality(self, modality)
        if modality == "point":
            return torch.stack([self._point(p) for p in items])
        return self.clip.prepare(modality, items)

    def _point(self, item):
        import torch

        from freebind.data.points import load_points

        return torch.from_numpy(load_points(item, self.npoints))

    def forward(self, modality: str, inputs):
        if modality == "point":
            return self.model.encode_pc(inputs.to(self.device, self.dtype)).float()
        return self.clip.forward(modality, inputs)

    def _per_item(self, modality: str):
        return self._point if modality == "point" else self.clip._per_item(modality)

    def _before_encode(self, modality: str) -> None:
        if modality != "point":
            self.clip._before_encode(modality)

    def __repr__(self) -> str:
        return (f"Uni3DSpace(name={self.name!r}, checkpoint={self.checkpoint.name}, "
                f"clip={self.clip.arch}, dim={self.dim}, device={self.device})")
