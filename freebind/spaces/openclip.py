"""OpenCLIP (``open_clip:ARCH/TAG``): any OpenCLIP image-text model as an expert.

Package: ``open_clip_torch`` (``pip install 'freebind[open_clip]'``). References name an
architecture and a pretrained tag as open_clip does (``open_clip:ViT-B-32/laion2b_s34b_b79k``;
``open_clip.list_pretrained()`` lists them); ``open_clip:ARCH`` with ``checkpoint=PATH`` loads
a local file. Aliases for common experts are registered in the catalog (``CLIP-B32``, …).

Preprocessing is open_clip's own evaluation transform for that tag (size, mean/std,
interpolation and resize mode from the pretrained config) and its own tokenizer. Weights are
resolved explicit path → ``$FREEBIND_HOME/weights/open_clip/ARCH/TAG/`` → open_clip's caches
(Hugging Face cache, ``~/.cache/clip``) → download into freebind's folder when online; they are
read with ``weights_only=True`` through open_clip's own ``load_checkpoint`` (which converts
older layouts).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces import compat, weights
from freebind.spaces.adapter import reject_unknown
from freebind.spaces.adapter import EncoderAdapter

HF_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PREPROCESS_VERSION = "openclip-pre-1"
#: Aliases registered in the catalog: name -> (arch/tag, dim, description).
ALIASES = {
    "CLIP-B32": ("ViT-B-32/laion2b_s34b_b79k", 512, "OpenCLIP ViT-B/32 (LAION-2B)"),
    "CLIP-L14": ("ViT-L-14/laion2b_s32b_b82k", 768, "OpenCLIP ViT-L/14 (LAION-2B)"),
    "CLIP-H14": ("ViT-H-14/laion2b_s32b_b79k", 1024, "OpenCLIP ViT-H/14 (LAION-2B)"),
    "CLIP-bigG14": ("ViT-bigG-14/laion2b_s39b_b160k", 1280, "OpenCLIP ViT-bigG/14 (LAION-2B)"),
    "OpenAI-L14": ("ViT-L-14/openai", 768, "OpenAI CLIP ViT-L/14 (through open_clip)"),
}


def split_spec(spec: str) -> tuple[str, str | None]:
    arch, _, tag = spec.partition("/")
    if not arch:
        raise SpaceError(f"open_clip:{spec}: give ARCH/TAG, e.g. "
                         "open_clip:ViT-B-32/laion2b_s34b_b79k")
    return arch, (tag or None)


def _config_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "model_configs"


def config_dim(arch: str) -> int | None:
    """The embedding width of ``arch`` from open_clip's bundled JSON config (no import), or
    from open_clip's registry when it is already imported (configs added at run time)."""
    import sys

    factory = sys.modules.get("open_clip.factory")
    if factory is not None and arch in getattr(factory, "_MODEL_CONFIGS", {}):
        return int(factory._MODEL_CONFIGS[arch]["embed_dim"])
    folder = _config_dir()
    if folder is None:
        return None
    path = folder / f"{arch}.json"
    if not path.exists():
        return None
    try:
        return int(json.loads(path.read_text())["embed_dim"])
    except (ValueError, KeyError, OSError):
        return None


def resolve_family(spec: str, ref: str):
    """``open_clip:ARCH/TAG`` → SpaceInfo (dimension from open_clip's config)."""
    from freebind.spaces.protocol import SpaceInfo

    arch, tag = split_spec(spec)
    known = {v[0]: v[1] for v in ALIASES.values()}
    dim = config_dim(arch) or known.get(spec)
    if dim is None:
        if _config_dir() is None:
            raise SpaceError(f"{ref}: open_clip is not installed, so {arch}'s dimension is "
                             f"unknown; pip install 'freebind[open_clip]'")
        raise SpaceError(f"{ref}: unknown open_clip architecture {arch!r}; see "
                         "open_clip.list_models()")
    options = (("arch", arch),) + ((("tag", tag),) if tag else ())
    return SpaceInfo(name=ref, family="open_clip", modalities=("image", "text"), dim=dim,
                     description=f"OpenCLIP {arch}" + (f" ({tag})" if tag else ""),
                     options=options, loader="freebind.spaces.openclip:load",
                     checker="freebind.spaces.openclip:check")


def _home(arch: str, tag: str) -> Path:
    return weights.weights_dir("open_clip") / arch / tag


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available("open_clip", "timm", "ftfy", "regex", "torchvision")
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[open_clip]'"
    opts = dict(getattr(info, "options", ()) or ())
    if opts.get("checkpoint"):
        path = Path(opts["checkpoint"])
        return (path.exists(), str(path) if path.exists() else f"weights missing: {path}")
    arch, tag = opts.get("arch"), opts.get("tag")
    if not arch or not tag:
        return False, "no pretrained tag: pass checkpoint=PATH"
    home = _home(arch, tag)
    for name in HF_NAMES:
        if (home / name).exists():
            return True, str(home / name)
    hits = [p for p in home.glob("*") if p.is_file()] if home.is_dir() else []
    if hits:
        return True, str(hits[0])
    return False, f"weights not in {home} (open_clip's own cache is searched when loading)"


def weight_file(arch: str, tag: str, pretrained_cfg: dict) -> weights.WeightFile:
    hf = pretrained_cfg.get("hf_hub", "")
    url = pretrained_cfg.get("url", "")
    home = _home(arch, tag)
    if hf:
        repo, fname = hf.rstrip("/"), ""
        if not hf.endswith("/"):
            repo, fname = hf.rsplit("/", 1)
        names = [fname] if fname else list(HF_NAMES)
        if fname.endswith((".bin", ".pth")):
            names.insert(0, fname.rsplit(".", 1)[0] + ".safetensors")

        def library_paths():
            return [home / n for n in names[1:]] + [p for n in names
                                                    for p in weights.hf_cached([repo], n)]

        def fetch(dest: Path) -> Path:
            from huggingface_hub import hf_hub_download

            last = None
            for n in names:
                try:
                    return Path(hf_hub_download(repo_id=repo, filename=n, local_dir=str(dest)))
                except Exception as exc:  # try the next candidate name
                    last = exc
            raise last

        fetch.host = "huggingface.co"
        return weights.WeightFile(filename=names[0], family=f"open_clip/{arch}/{tag}",
                                  origin=f"huggingface.co/{repo}",
                                  library_paths=library_paths, fetch=fetch)
    if url:
        fname = url.rsplit("/", 1)[-1]
        return weights.WeightFile(
            filename=fname, family=f"open_clip/{arch}/{tag}", origin=url,
            library_paths=lambda: [Path.home() / ".cache" / "clip" / fname],
            fetch=weights.url_fetch(url, fname))
    raise SpaceError(f"open_clip:{arch}/{tag}: the pretrained config names no file")


def load(info=None, arch: str | None = None, tag: str | None = None,
         checkpoint: str | None = None, device: str | None = None, precision: str | None = None,
         batch_size: int = 64, download: bool = True, workers: int | None = None,
         **unused) -> "OpenClipSpace":
    reject_unknown(unused, "open_clip")
    if arch is None:
        raise SpaceError("open_clip space needs an architecture (open_clip:ARCH/TAG)")
    open_clip = compat.require("open_clip", "open_clip", "open_clip_torch")
    if arch not in open_clip.list_models():
        raise SpaceError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    pcfg = {}
    if tag:
        pcfg = open_clip.get_pretrained_cfg(arch, tag) or {}
        if not pcfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise SpaceError(f"open_clip {arch} has no pretrained tag {tag!r}; known: "
                             f"{', '.join(tags) or 'none'}")
    if checkpoint:
        path = weights.resolve(weights.WeightFile(Path(checkpoint).name, f"open_clip/{arch}",
                                                  origin="a local file"), checkpoint,
                               download=False)
    elif tag:
        path = weights.resolve(weight_file(arch, tag, pcfg), None, download=download)
    else:
        raise SpaceError(f"open_clip:{arch} has no pretrained tag; pass checkpoint=PATH")
    name = getattr(info, "name", f"open_clip:{arch}" + (f"/{tag}" if tag else ""))
    return OpenClipSpace(path, arch=arch, tag=tag, pretrained_cfg=pcfg, name=name,
                         device=device, precision=precision, batch_size=batch_size,
                         workers=workers)


class OpenClipSpace(EncoderAdapter):
    """A loaded OpenCLIP model implementing the Space protocol."""

    family = "open_clip"

    def __init__(self, checkpoint, arch: str, tag: str | None = None,
                 pretrained_cfg: dict | None = None, name: str = "open_clip",
                 device: str | None = None, precision: str | None = None, batch_size: int = 64,
                 workers: int | None = None):
        open_clip = compat.require("open_clip", "open_clip", "open_clip_torch")
        self.name = name
        self.modalities = ("image", "text")
        self.arch, self.tag = arch, tag
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        self.checkpoint = Path(checkpoint)
        pcfg = dict(pretrained_cfg or {})
        force = {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                 if k in pcfg}
        import logging

        logging.disable(logging.WARNING)  # "no pretrained weights loaded": they come next
        try:
            model = open_clip.create_model(arch, pretrained=None, device="cpu",
                                           force_preprocess_cfg=force or None,
                                           force_quick_gelu=bool(pcfg.get("quick_gelu")))
        finally:
            logging.disable(logging.NOTSET)
        try:
            open_clip.load_checkpoint(model, str(self.checkpoint), weights_only=True)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            text = str(exc).strip().splitlines()
            raise SpaceError(f"{self.checkpoint}: cannot load into open_clip {arch} "
                             f"({(text[0] if text else type(exc).__name__)[:200]})") from None
        except Exception as exc:  # unpickling errors of weights_only
            raise SpaceError(f"{self.checkpoint}: cannot read with weights_only=True "
                             f"({type(exc).__name__})") from None
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        from open_clip import transform as oc_transform

        self.transform = oc_transform.image_transform_v2(
            oc_transform.PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self._open_clip = open_clip
        self._tokenizer = None
        self.dim = int(_embed_dim(model))
        digest = weights.file_digest(self.checkpoint)
        self.fingerprint = hashlib.sha256(json.dumps(
            ["open_clip", arch, tag, digest, self.preprocess_cfg, PREPROCESS_VERSION,
             self.precision],
            sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    def tokenizer(self):
        if self._tokenizer is None:
            try:
                tok = self._open_clip.get_tokenizer(self.arch)
            except Exception as exc:
                reason = str(exc).strip().splitlines()
                raise SpaceError(f"{self.name} cannot encode text: its tokenizer could not be "
                                 f"loaded ({(reason[0] if reason else type(exc).__name__)[:160]})"
                                 ) from None
            probe = tok(["a dog is barking while rain falls on a metal roof"])[0].tolist()
            content = {t for t in probe if t not in (0,)}
            if len(content) < 5:
                raise SpaceError(f"{self.name}: refusing to encode text: the tokenizer maps a "
                                 f"probe sentence to {len(content)} distinct tokens")
            self._tokenizer = tok
        return self._tokenizer

    def prepare(self, modality: str, items: Sequence):
        import torch

        from freebind.data import media

        if modality == "image":
            return torch.stack([self.transform(media.load_image(p)) for p in items])
        if modality == "text":
            return self.tokenizer()([str(t) for t in items])
        raise SpaceError(f"space {self.name} does not encode {modality!r}")

    def forward(self, modality: str, inputs):
        inputs = inputs.to(self.device)
        if modality == "image":
            return self.model.encode_image(inputs.to(self.dtype)).float()
        return self.model.encode_text(inputs).float()

    # --- encode hooks (EncoderAdapter) ------------------------------------------------
    def _before_encode(self, modality: str) -> None:
        if modality == "text":
            self.tokenizer()

    def _per_item(self, modality: str):
        if modality == "text":
            return None
        from freebind.data import media

        return lambda p: self.transform(media.load_image(p))

    def __repr__(self) -> str:
        return (f"OpenClipSpace(name={self.name!r}, arch={self.arch}, tag={self.tag}, "
                f"dim={self.dim}, device={self.device}, precision={self.precision})")


def _embed_dim(model) -> int:
    proj = getattr(model, "text_projection", None)
    if proj is not None and hasattr(proj, "shape") and len(proj.shape) == 2:
        return int(proj.shape[1])
    visual = getattr(model, "visual", None)
    out = getattr(visual, "output_dim", None)
    if out:
        return int(out)
    import torch

    context = int(getattr(model, "context_length", None) or 77)   # SigLIP's is 64
    with torch.no_grad():
        return int(model.encode_text(torch.zeros(1, context, dtype=torch.long)).shape[-1])
