"""Any transformers embedding model as a space: ``transformers:ORG/NAME[@REVISION][~HEAD]``
(a Hub model repository) or ``transformers:PATH`` (a ``save_pretrained`` folder).

``hf:`` references name freebind *bundles* on the Hub; ``transformers:`` names *models*.
The two are never confused: a ``transformers:`` reference whose folder holds a bundle and
no ``config.json`` is refused naming ``hf:``, and the ``hf:`` resolver names
``transformers:`` when it finds a model repository (:func:`bundle_or_model`).

Modalities and dimension come from the config alone (no weights): a model class's
``get_text_features`` / ``get_image_features`` / ``get_audio_features`` /
``get_video_features`` make its modalities (CLIP, SigLIP, SigLIP 2, MetaCLIP 2, AltCLIP,
Chinese-CLIP, ALIGN, CLAP, X-CLIP, ...), and Perception Encoder's ``PeAudioModel``,
``PeVideoModel`` and ``PeAudioVideoModel`` use their ``get_*_embeds`` methods (``~HEAD``
picks PE-AV's text head: ``audio`` (default), ``video`` or ``audio_video``).

Preprocessing is the model's own processor from the same folder (``AutoProcessor``):
tokenizer, image processor, feature extractor (audio resampled to its rate), video
processor (frames sampled evenly, as many as the model takes).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces.adapter import EncoderAdapter, reject_unknown

PREFIX = "transformers"
SYNTAX = "transformers:ORG/NAME[@REVISION][~HEAD] or transformers:/path/to/folder"
PREPROCESS_VERSION = "transformers-pre-1"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: feature methods of the CLIP-like classes, by modality
FEATURE_METHODS = {"text": "get_text_features", "image": "get_image_features",
                   "audio": "get_audio_features", "video": "get_video_features"}
#: Perception Encoder classes: modality -> the computation of the class's own ``forward``
#: for that embedding (transformers 5.25's ``PeVideoModel`` defines its feature methods
#: inside ``__init__``, so they and ``PeAudioVideoModel``'s video and text-audio/-video
#: methods cannot be called; the same sub-modules are run as ``forward`` runs them)
PE_METHODS = {
    "PeAudioModel": {"audio": "pe_audio", "text": "pe_text_audio"},
    "PeVideoModel": {"video": "pe_video", "text": "pe_text_video"},
    "PeAudioVideoModel": {"audio": "pe_audio", "video": "pe_video",
                          "text": "pe_text_{head}"},
}
PE_HEADS = ("audio", "video", "audio_video")
#: model_type -> (class, modalities) of the families known without importing their code
KNOWN = {
    "clip": ("CLIPModel", ("image", "text")),
    "siglip": ("SiglipModel", ("image", "text")),
    "siglip2": ("Siglip2Model", ("image", "text")),
    "metaclip_2": ("MetaClip2Model", ("image", "text")),
    "altclip": ("AltCLIPModel", ("image", "text")),
    "chinese_clip": ("ChineseCLIPModel", ("image", "text")),
    "align": ("AlignModel", ("image", "text")),
    "clap": ("ClapModel", ("audio", "text")),
    "xclip": ("XCLIPModel", ("video", "text")),
    "pe_audio": ("PeAudioModel", ("audio", "text")),
    "pe_video": ("PeVideoModel", ("video", "text")),
    "pe_audio_video": ("PeAudioVideoModel", ("audio", "video", "text")),
}
#: processors whose text is padded to a fixed length by the model's own recipe
MAX_LENGTH_TEXT = {"siglip": 64}
BUNDLE_FILE = "fused.safetensors"
MODEL_FILES = ["*.json", "*.txt", "*.model", "*.safetensors", "*.tiktoken", "README.md"]


# --- references ----------------------------------------------------------------------------
def parse(spec: str) -> dict:
    """``{"path": Path}`` or ``{"repo": ..., "revision": ...}``, plus ``head`` (or None)."""
    body, tilde, head = spec.rpartition("~")
    if not tilde or not body or "/" in head:  # no head ("~" of a home folder or in a path)
        body, head = spec, ""
    if head and head not in PE_HEADS:
        raise SpaceError(f"{PREFIX}:{spec}: unknown text head {head!r}; one of "
                         f"{', '.join(PE_HEADS)} ({SYNTAX})")
    if not body:
        raise SpaceError(f"{PREFIX}: give a model ({SYNTAX})")
    path = Path(body).expanduser()
    if body.startswith(("/", ".", "~")) or path.is_dir():
        return {"path": path, "head": head or None}
    repo, _, revision = body.partition("@")
    if not _REPO_RE.match(repo) or "@" in revision:
        raise SpaceError(f"{PREFIX}:{spec}: not a folder here and not a Hub model name "
                         f"ORG/NAME[@REVISION] ({SYNTAX})")
    return {"repo": repo, "revision": revision or None, "head": head or None}


def _hub_file(repo: str, revision, filename: str, download: bool) -> Path | None:
    """``filename`` of a Hub repository from the cache (downloaded when allowed), or None."""
    from freebind.spaces import weights

    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise SpaceError(f"{PREFIX}:{repo}: huggingface_hub is not installed; "
                         f"pip install 'freebind[transformers]'") from None
    local_only = not download or weights.offline()
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hub_cache(),
                                    local_files_only=local_only))
    except Exception:  # not cached, not on the Hub, or no network: the caller says which
        return None


def hub_cache() -> str:
    """huggingface_hub's cache folder, read from the environment at call time."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return str(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return str(Path.home() / ".cache" / "huggingface" / "hub")


def bundle_or_model(folder: Path) -> str | None:
    """``"bundle"`` for a folder holding a freebind bundle and no config.json, ``"model"``
    for a transformers model folder (config.json), else None."""
    if (folder / "config.json").is_file():
        return "model"
    if (folder / BUNDLE_FILE).is_file() or any(folder.glob("*.safetensors")):
        return "bundle"
    return None


def config_folder(ref: str, parsed: dict, download: bool = True) -> Path:
    """The local folder holding the model's config.json (only that file is fetched)."""
    if "path" in parsed:
        folder = parsed["path"]
        if not folder.is_dir():
            raise SpaceError(f"{ref}: no such folder {folder}")
        kind = bundle_or_model(folder)
        if kind == "bundle":
            raise SpaceError(f"{ref}: {folder} holds a freebind bundle, not a transformers "
                             f"model (no config.json); name the bundle file itself")
        if kind is None:
            raise SpaceError(f"{ref}: {folder} is not a transformers model folder (no "
                             f"config.json)")
        return folder
    repo, rev = parsed["repo"], parsed["revision"]
    found = _hub_file(repo, rev, "config.json", download)
    if found is not None:
        return found.parent
    if _hub_file(repo, rev, BUNDLE_FILE, False) is not None:
        raise SpaceError(f"{ref}: {repo} is a freebind bundle repository ({BUNDLE_FILE}, "
                         f"no config.json); use hf:{repo}")
    from freebind.spaces.weights import offline

    why = "downloads are off" if offline() or not download else "the Hub has no such model"
    raise SpaceError(f"{ref}: config.json of {repo} is not in the Hugging Face cache and "
                     f"{why}; run `freebind download {ref}` on a machine that is online")


def read_config(folder: Path):
    transformers = _import_transformers()
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise SpaceError(f"{folder}: cannot read config.json "
                         f"({str(exc).strip().splitlines()[0][:160]})") from None


def describe(config, head: str | None = None) -> tuple[str, tuple[str, ...], int]:
    """``(model class, modalities, dim)`` of a config, without weights."""
    mtype = getattr(config, "model_type", "")
    archs = list(getattr(config, "architectures", None) or [])
    cls = next((a for a in archs if a in PE_METHODS or a.endswith("Model")), None)
    if mtype in KNOWN:
        cls, mods = KNOWN[mtype]
    elif cls is None:
        raise SpaceError(f"model type {mtype!r} names no model class (config.architectures "
                         f"is empty)")
    else:
        mods = _class_modalities(cls)
    if head and cls != "PeAudioVideoModel":
        raise SpaceError(f"~{head}: only PeAudioVideoModel has several text heads")
    return cls, mods, _config_dim(config, cls)


def _class_modalities(cls: str) -> tuple[str, ...]:
    klass = getattr(_import_transformers(), cls, None)
    if klass is None:
        raise SpaceError(f"transformers has no class {cls}; upgrade transformers")
    mods = tuple(m for m, fn in FEATURE_METHODS.items() if hasattr(klass, fn))
    if not mods:
        raise SpaceError(f"{cls} is not an embedding model (no get_*_features method)")
    return tuple(sorted(mods, key=("audio", "image", "video", "text").index))


def _config_dim(config, cls: str) -> int:
    if cls in PE_METHODS:
        return int(config.text_config.hidden_size)
    for key in ("projection_dim",):
        if getattr(config, key, None):
            return int(getattr(config, key))
    text = getattr(config, "text_config", None)
    for key in ("projection_size", "hidden_size"):
        if getattr(text, key, None):
            return int(getattr(text, key))
    raise SpaceError(f"{cls}: the config names no embedding width")


def resolve_family(spec: str, ref: str):
    """``transformers:…`` → SpaceInfo (class, modalities and dim from config.json)."""
    from freebind.spaces.protocol import SpaceInfo

    parsed = parse(spec)
    folder = config_folder(ref, parsed, download=True)
    cls, mods, dim = describe(read_config(folder), parsed["head"])
    source = str(parsed.get("path") or parsed["repo"])
    if "repo" in parsed:  # the model card, for its licence (a small file)
        _hub_file(parsed["repo"], parsed["revision"], "README.md", True)
    return SpaceInfo(name=ref, family=PREFIX, modalities=mods, dim=dim,
                     description=f"{cls} ({source})", licence=card_licence(folder),
                     options=(("spec", spec), ("cls", cls)), loader=f"{__name__}:load",
                     checker=f"{__name__}:check", fetcher=f"{__name__}:fetch")


def requirements(cls: str | None, modalities=()) -> tuple[tuple[str, ...], str]:
    """``(modules, extra)`` a model class needs here (found, not imported)."""
    if cls in ("PeVideoModel", "PeAudioVideoModel"):
        return ("transformers", "huggingface_hub", "timm", "av", "torchvision"), "pe"
    mods = ("transformers", "huggingface_hub")
    if cls == "PeAudioModel":
        return mods, "pe"
    if "video" in modalities:
        mods += ("av",)
    if cls == "SiglipModel":
        mods += ("sentencepiece",)
    return mods, "transformers"


def card_licence(folder: Path) -> str:
    """The ``license`` of the model card (README.md front matter), else ``unknown``."""
    readme = folder / "README.md"
    try:
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    except OSError:
        text = ""
    if text.startswith("---"):
        for line in text.split("---", 2)[1].splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "license" and value.strip():
                return value.strip()
    return "unknown"


# --- registry hooks ---------------------------------------------------------------------------
def check(info=None) -> tuple[bool, str]:
    from freebind.spaces import weights

    opts = dict(info.options)
    needs, extra = requirements(opts.get("cls"), info.modalities)
    ok, missing = weights.package_available(*needs)
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[{extra}]'"
    parsed = parse(opts["spec"])
    try:
        folder = model_folder(info.name, parsed, download=False)
    except SpaceError as exc:
        return False, f"weights missing: {exc}"
    return True, str(folder)


def fetch(info) -> list[Path]:
    """``freebind download transformers:…``: config, processor files and weights."""
    return [model_folder(info.name, parse(dict(info.options)["spec"]), download=True)]


def model_folder(ref: str, parsed: dict, download: bool = True) -> Path:
    """The local folder with config, processor files and weights."""
    folder = config_folder(ref, parsed, download)
    if _has_weights(folder):
        return folder
    if "path" in parsed:
        raise SpaceError(f"{ref}: {folder} holds no weights (*.safetensors or "
                         f"pytorch_model.bin)")
    from freebind.spaces import weights

    if not download or weights.offline():
        raise SpaceError(f"{ref}: the weights of {parsed['repo']} are not in the Hugging Face "
                         f"cache and downloads are off; run `freebind download {ref}` online")
    from huggingface_hub import snapshot_download

    try:
        got = Path(snapshot_download(parsed["repo"], revision=parsed["revision"],
                                     allow_patterns=MODEL_FILES, cache_dir=hub_cache()))
    except Exception as exc:
        raise SpaceError(f"{ref}: download failed "
                         f"({str(exc).strip().splitlines()[0][:160]})") from None
    if not _has_weights(got):
        raise SpaceError(f"{ref}: {parsed['repo']} has no safetensors weights")
    return got


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").is_file()


def _import_transformers():
    from freebind.spaces import compat

    return compat.require("transformers", "transformers")


def load(info=None, spec: str | None = None, cls: str | None = None,
         device: str | None = None, precision: str | None = None, batch_size: int = 32,
         workers: int | None = None, download: bool = True,
         **unused) -> "TransformersSpace":
    reject_unknown(unused, PREFIX)
    if spec is None:
        raise SpaceError(f"a transformers space needs a model ({SYNTAX})")
    parsed = parse(spec)
    name = getattr(info, "name", f"{PREFIX}:{spec}")
    folder = model_folder(name, parsed, download=download)
    from freebind.spaces import weights

    needs, extra = requirements(cls, getattr(info, "modalities", ()))
    ok, missing = weights.package_available(*needs)
    if not ok:  # named before any weights are read
        raise SpaceError(f"{name} needs {missing}: pip install 'freebind[{extra}]'")
    return TransformersSpace(folder, name=name, head=parsed["head"], device=device,
                             precision=precision, batch_size=batch_size, workers=workers)


_NP_LOCK = __import__("threading").Lock()


class seeded_numpy:
    """numpy's global generator seeded with 0 for the block, then restored (a feature
    extractor that draws random crops gives every file the same crops on every run)."""

    def __enter__(self):
        import numpy as np

        _NP_LOCK.acquire()
        self.state = np.random.get_state()
        np.random.seed(0)

    def __exit__(self, *exc):
        import numpy as np

        np.random.set_state(self.state)
        _NP_LOCK.release()


# --- the space --------------------------------------------------------------------------------
class TransformersSpace(EncoderAdapter):
    """A transformers model (and its processor) implementing the Space protocol."""

    family = PREFIX

    def __init__(self, folder, name: str, head: str | None = None, device=None,
                 precision=None, batch_size: int = 32, workers=None):
        transformers = _import_transformers()
        self.folder = Path(folder)
        self.name = name
        config = read_config(self.folder)
        self.cls, self.modalities, self.dim = describe(config, head)
        self.model_type = getattr(config, "model_type", "")
        self.head = head or ("audio" if self.cls == "PeAudioVideoModel" else None)
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        klass = getattr(transformers, self.cls)
        try:
            model = klass.from_pretrained(str(self.folder), local_files_only=True)
            self.processor = transformers.AutoProcessor.from_pretrained(
                str(self.folder), local_files_only=True)
        except Exception as exc:
            raise SpaceError(f"{self.folder}: cannot load {self.cls} "
                             f"({str(exc).strip().splitlines()[0][:200]})") from None
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.config = config
        self.fingerprint = self._fingerprint()
        self.last_timings: dict = {}

    def _fingerprint(self) -> str:
        from freebind.spaces import weights

        files = sorted(p for p in self.folder.iterdir() if p.is_file()
                       and p.suffix in (".json", ".txt", ".model", ".safetensors", ".bin"))
        parts = [[p.name, weights.file_digest(p)] for p in files]
        return hashlib.sha256(json.dumps(
            ["transformers", self.cls, self.head, parts, PREPROCESS_VERSION, self.precision],
            sort_keys=True).encode()).hexdigest()[:16]

    # --- preprocessing: the model's own processor ------------------------------------------
    def text_inputs(self, texts: Sequence[str]) -> dict:
        kwargs = {"truncation": True}
        defaults = getattr(type(self.processor), "text_kwargs", None) or {}
        if "padding" not in defaults:
            length = MAX_LENGTH_TEXT.get(self.model_type)
            kwargs.update({"padding": "max_length", "max_length": length} if length
                          else {"padding": True})
        return dict(self.processor(text=[str(t) for t in texts], return_tensors="pt",
                                   **kwargs))

    def decode(self, modality: str, item):
        """One file decoded for the processor (in a worker thread): ``(modality, media)``."""
        from freebind.data import media

        if modality == "image":
            return modality, media.load_image(item)
        if modality == "audio":
            rate = int(self.processor.feature_extractor.sampling_rate)
            return modality, media.load_audio(item, rate)
        if modality == "video":
            return modality, self.video_frames(item)
        raise SpaceError(f"space {self.name} does not encode {modality!r}")

    def media_inputs(self, modality: str, batch: list) -> dict:
        """The processor's outputs for a batch of decoded media, as the library batches
        them (its own padding and masks)."""
        if modality == "image":
            out = self.processor(images=batch, return_tensors="pt")
        elif modality == "audio":
            rate = int(self.processor.feature_extractor.sampling_rate)
            with seeded_numpy():  # CLAP crops long audio at random: the same crops each time
                out = self.processor(audio=batch, sampling_rate=rate, return_tensors="pt")
        else:
            out = self.processor(videos=batch, return_tensors="pt")
        return {k: v for k, v in dict(out).items() if hasattr(v, "shape")}

    def num_frames(self) -> int:
        proc = getattr(self.processor, "video_processor", None)
        for source in (proc, getattr(self.config, "vision_config", None),
                       getattr(self.config, "video_config", None)):
            n = getattr(source, "num_frames", None)
            if n:
                return int(n)
        return 8

    def video_frames(self, path) -> list:
        """``num_frames`` frames evenly spaced over the whole video, first and last kept."""
        from freebind.data import media

        total, _ = media.video_info(path)
        n = self.num_frames()
        idx = [int(i * (total - 1) / max(1, n - 1)) for i in range(n)]
        return [frame for frame in media.load_video_frames(path, idx)]

    def prepare(self, modality: str, items: Sequence):
        if modality == "text":
            return self.text_inputs(items)
        return self._collate([self.decode(modality, p) for p in items])

    def _collate(self, inputs: list) -> dict:
        return self.media_inputs(inputs[0][0], [x for _, x in inputs])

    def _per_item(self, modality: str):
        if modality == "text":
            return None
        return lambda item: self.decode(modality, item)

    # --- the model's own feature methods -------------------------------------------------------
    def method(self, modality: str):
        if self.cls in PE_METHODS:
            name = PE_METHODS[self.cls][modality].format(head=self.head)
            return getattr(self, name)
        return getattr(self.model, FEATURE_METHODS[modality])

    def forward(self, modality: str, inputs: dict):
        import inspect

        fn = self.method(modality)
        accepted = inspect.signature(fn).parameters
        args = {k: v.to(self.device) for k, v in inputs.items() if k in accepted}
        for k, v in args.items():
            if v.is_floating_point():
                args[k] = v.to(self.dtype)
        out = fn(**args)
        if not hasattr(out, "shape"):  # transformers 5: an output with the projected pooling
            out = out.pooler_output
        return out.float()

    # --- Perception Encoder: each embedding as the class's forward computes it ---------------
    def _pe_part(self, name: str):
        """The PE sub-model holding ``name`` (PE-AV nests a PeAudioModel and a PeVideoModel)."""
        if self.cls == "PeAudioVideoModel":
            return self.model.audio_model if name == "audio" else self.model.video_model
        return self.model

    def _pe_cls_text(self, input_ids, attention_mask=None):
        out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask,
                                    output_hidden_states=True, return_dict=True)
        return out.hidden_states[-1][:, 0]

    def pe_audio(self, input_values, padding_mask=None):
        return self._pe_part("audio").get_audio_embeds(input_values, padding_mask)

    def pe_video(self, pixel_values_videos, padding_mask_videos=None):
        part = self._pe_part("video")
        out = part.video_encoder(pixel_values_videos=pixel_values_videos,
                                 padding_mask_videos=padding_mask_videos, return_dict=True)
        return part.video_head(out.pooler_output)

    def pe_text_audio(self, input_ids, attention_mask=None):
        head = self._pe_part("audio").text_audio_head
        return head(self._pe_cls_text(input_ids, attention_mask))

    def pe_text_video(self, input_ids, attention_mask=None):
        head = self._pe_part("video").text_video_head
        return head(self._pe_cls_text(input_ids, attention_mask))

    def pe_text_audio_video(self, input_ids, attention_mask=None):
        return self.model.text_audio_video_head(self._pe_cls_text(input_ids, attention_mask))

    def __repr__(self) -> str:
        return (f"TransformersSpace(name={self.name!r}, class={self.cls}, dim={self.dim}, "
                f"device={self.device}, precision={self.precision})")
