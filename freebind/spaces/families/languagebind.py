"""LanguageBind as a space: ``languagebind`` (the Hub towers) or ``languagebind:PATH``.

Package: ``transformers`` + torchvision's transforms (``pip install 'freebind[languagebind]'``);
the ``languagebind`` package is never imported (it declares ``transformers<5`` and its
``__init__`` imports ``cv2``; it is the tests' reference). LanguageBind (Zhu et al., ICLR 2024)
binds each modality to one frozen CLIP ViT-L/14 text tower: every released tower repository
(``LanguageBind/LanguageBind_Image``, ``_Depth``, ``_Thermal``, ``_Audio(_FT)``,
``_Video(_FT)``; code and weights MIT) holds the text tower and one modality's vision tower,
768-d. freebind binds the text tower with the image, depth, thermal, audio and video towers as
the modalities of one space.

Each tower is transformers' ``CLIPVisionModelWithProjection`` (LanguageBind's towers are CLIP
vision transformers: the audio tower over a rectangular fbank-image patch grid, the video
tower's layers each preceded by a temporal attention, :func:`build_video`), the text tower
``CLIPTextModelWithProjection`` pooled at the highest id (the end token), loaded key for key,
strictly, from the repository's ``pytorch_model.bin`` / ``model.safetensors``. A tower trained
with LoRA (``vision_config.lora_r > 0``) is saved under peft's wrapper
(``vision_model.encoder.base_model.model.…``, ``….base_layer.weight``, ``….lora_A.default``);
its LoRA deltas are merged: ``W + B·A·alpha/r``.

Preprocessing, as LanguageBind's processors (audio: :meth:`LanguageBindSpace.audio_item`,
video: :meth:`LanguageBindSpace.video_item`): image and thermal files decoded by PIL (made RGB;
upstream fails on other modes), ``to_tensor``, bicubic antialiased resize of the short side to
224, centre crop 224, OpenAI CLIP mean/std. Depth: a single-channel file (16-bit PNG in
millimetres) as float, ÷1000 (metres), clipped below at 0.01 m and above at ``max_depth``
(10 m in the released config) and divided by it (``max_depth`` 0: by the image maximum),
repeated to three channels, then the same resize, crop and normalisation. Text: the CLIP
tokenizer of the text tower's folder, padded / cut to 77 tokens.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces import weights
from freebind.spaces.adapter import EncoderAdapter, reject_unknown

PREFIX = "languagebind"
HUB_ORG = "LanguageBind"
ORIGIN = "the LanguageBind release (huggingface.co/LanguageBind)"
#: the Hub model cards and the GitHub repository (PKU-YuanGroup/LanguageBind) declare MIT
LICENCE = "MIT"
DIM = 768
PREPROCESS_VERSION = "languagebind-pre-1"
#: modality → Hub repository of its tower (the fine-tuned audio / video ones where released)
HUB_TOWERS = {"image": "LanguageBind_Image", "depth": "LanguageBind_Depth",
              "thermal": "LanguageBind_Thermal", "audio": "LanguageBind_Audio_FT",
              "video": "LanguageBind_Video_FT"}
#: the towers freebind loads
BOUND = ("image", "depth", "thermal", "audio", "video")
#: the repository whose text tower is the space's (all towers share the frozen text tower)
TEXT_FROM = "image"
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 224
TEXT_LEN = 77
_DROPPED = (r"(^|\.)position_ids$", r"^logit_scale$")


def towers_of(spec: str) -> dict[str, str | None]:
    """``modality → folder`` (None: the Hub tower) for a spec: empty (every bound Hub tower),
    ``image+depth`` (those Hub towers), or a folder holding one subfolder per modality
    (``image/``, ``depth/``, ``thermal/``, each a tower repository's files)."""
    if not spec:
        return {m: None for m in BOUND}
    names = spec.split("+")
    if all(n in HUB_TOWERS for n in names):
        return {n: None for n in HUB_TOWERS if n in names}
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise SpaceError(f"languagebind:{spec}: give towers ({'+'.join(BOUND)}) or a folder "
                         f"with one subfolder per tower ({', '.join(BOUND)})")
    found = {m: str(folder / m) for m in HUB_TOWERS if (folder / m / CONFIG_FILE).exists()}
    if not found:
        raise SpaceError(f"{folder}: no LanguageBind tower found (expected subfolders "
                         f"{', '.join(BOUND)}, each with {CONFIG_FILE} and weights)")
    return found


def resolve_family(spec: str, ref: str):
    """``languagebind[:image+depth|:PATH]`` → SpaceInfo (768-d, no weights read)."""
    from freebind.spaces.protocol import SpaceInfo

    towers = towers_of(spec)
    unbound = [m for m in towers if m not in BOUND]
    if unbound:
        raise SpaceError(f"{ref}: LanguageBind's {', '.join(unbound)} tower is not bound yet "
                         f"(bound: {', '.join(BOUND)})")
    dims = {_config_dim(Path(f) / CONFIG_FILE) for f in towers.values() if f}
    if dims - {DIM}:
        raise SpaceError(f"{ref}: towers of different dimensions {sorted(dims)}")
    options = [("towers", tuple(sorted(towers.items(), key=lambda kv: kv[0])))]
    return SpaceInfo(name=ref, family=PREFIX, modalities=(*towers, "text"), dim=DIM,
                     description=f"LanguageBind ({', '.join(towers)} + text towers)",
                     options=tuple(options), licence=LICENCE, loader=f"{__name__}:load",
                     checker=f"{__name__}:check", fetcher=f"{__name__}:fetch")


def _config_dim(path: Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("projection_dim", DIM))
    except (OSError, ValueError) as exc:
        raise SpaceError(f"{path}: unreadable LanguageBind config ({exc})") from None


def _towers(info) -> dict[str, str | None]:
    opts = dict(getattr(info, "options", ()) or ())
    return dict(opts.get("towers") or {m: None for m in BOUND})


# --- files ----------------------------------------------------------------------------------
def hub_files(modality: str, names: Sequence[str]) -> list[weights.WeightFile]:
    repo = f"{HUB_ORG}/{HUB_TOWERS[modality]}"
    return [weights.WeightFile(
        filename=f, family=f"languagebind/{HUB_TOWERS[modality]}",
        what="checkpoint" if f in WEIGHT_FILES else "tower file",
        origin=f"{ORIGIN}: {repo}", library_paths=lambda f=f: weights.hf_cached([repo], f),
        fetch=weights.hf_fetch(repo, f)) for f in names]


def _local_folder(modality: str, download: bool) -> Path:
    """The folder of a Hub tower's files (config, weights, tokenizer), fetched if allowed
    (files found in different caches are linked into one temporary folder)."""
    names = (CONFIG_FILE,) + TOKENIZER_FILES
    paths = [weights.resolve(w, None, download=download) for w in hub_files(modality, names)]
    found = [w.find_local() for w in hub_files(modality, WEIGHT_FILES)]
    paths.append(next((f for f in found if f is not None), None) or weights.resolve(
        hub_files(modality, WEIGHT_FILES[1:])[0], None, download=download))
    return weights.one_folder(paths, "freebind-languagebind-")


def _weight_path(folder: Path) -> Path | None:
    return next((folder / f for f in WEIGHT_FILES if (folder / f).exists()), None)


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available("transformers", "torchvision")
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[languagebind]'"
    for modality, folder in _towers(info).items():
        if folder:
            if _weight_path(Path(folder)) is None:
                return False, f"weights missing in {folder} ({' or '.join(WEIGHT_FILES)})"
        elif all(w.find_local() is None for w in hub_files(modality, WEIGHT_FILES)):
            return False, f"weights missing: {hub_files(modality, WEIGHT_FILES[1:])[0].home_path}"
    return True, ", ".join(f"{m}: {f or HUB_TOWERS[m]}" for m, f in _towers(info).items())


def fetch(info) -> list[Path]:
    """``freebind download``: each tower's config, weights and tokenizer files."""
    out = []
    for modality, folder in _towers(info).items():
        if folder is None:
            out += [weights.resolve(w) for w in hub_files(
                modality, (CONFIG_FILE, WEIGHT_FILES[1], *TOKENIZER_FILES))]
    return out


def load(info=None, towers: dict | None = None, device: str | None = None,
         precision: str | None = None, batch_size: int = 16, download: bool = True,
         workers: int | None = None, **unused) -> "LanguageBindSpace":
    """Load LanguageBind's text tower and the towers of ``towers`` (``modality → folder``,
    None: the Hub's)."""
    reject_unknown(unused, "LanguageBind")
    towers = dict(towers or _towers(info))
    bad = [m for m in towers if m not in BOUND]
    if bad:
        raise SpaceError(f"LanguageBind's {', '.join(bad)} tower is not bound yet")
    folders = {m: Path(f) if f else _local_folder(m, download) for m, f in towers.items()}
    return LanguageBindSpace(folders, name=getattr(info, "name", PREFIX), device=device,
                             precision=precision, batch_size=batch_size, workers=workers)


# --- the model ------------------------------------------------------------------------------
def _torch():
    from freebind.spaces import compat

    compat.torchvision_if_present()
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise SpaceError(f"LanguageBind needs torch and transformers ({exc.name or exc} "
                         f"missing): pip install 'freebind[languagebind]'") from None
    return torch


def read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpaceError(f"{path}: unreadable LanguageBind config ({exc})") from None


def build_vision(config: dict):
    """transformers' CLIP vision tower with projection at a tower config's sizes."""
    _torch()
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = dict(config.get("vision_config") or {})
    keep = {k: v for k, v in vision.items() if k in CLIPVisionConfig().to_dict()}
    keep["projection_dim"] = int(config.get("projection_dim", DIM))
    grid = mel_grid(vision)
    if grid is not None:  # the audio tower: fbank images, a rectangular position grid
        keep["image_size"] = SIZE
        tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**keep))
        tower.vision_model.embeddings = rect_embeddings(tower.config, grid)
        return tower
    if vision.get("add_time_attn"):
        return build_video(keep, vision)
    size = keep.get("image_size", SIZE)
    if isinstance(size, (list, tuple)):  # LanguageBind's resize_pos writes [H, W] back
        if len(set(size)) != 1:
            raise SpaceError(f"a LanguageBind tower of non-square input {list(size)} is not "
                             f"bound yet")
        keep["image_size"] = int(size[0])
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**keep))


def mel_grid(vision: dict) -> tuple[int, int] | None:
    """The audio tower's patch grid (mel bins × frames, ÷ patch size), None for image-like
    towers (LanguageBind's ``resize_pos``: the position embedding is resized to it at build,
    so the checkpoint holds it at this size)."""
    mels, frames = int(vision.get("num_mel_bins") or 0), int(vision.get("target_length") or 0)
    if not (mels and frames):
        return None
    patch = int(vision.get("patch_size", 32))
    return mels // patch, frames // patch


def rect_embeddings(config, grid: tuple[int, int]):
    """transformers' CLIP vision embeddings over a ``grid[0] × grid[1]`` patch grid (class
    token, conv patches, learned positions), for inputs of exactly that grid."""
    import torch
    from torch import nn
    from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

    class RectEmbeddings(CLIPVisionEmbeddings):
        def __init__(self, config, grid):
            super().__init__(config)
            self.grid = tuple(int(g) for g in grid)
            self.num_patches = self.grid[0] * self.grid[1]
            self.num_positions = self.num_patches + 1
            self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
            self.position_ids = nn.Buffer(torch.arange(self.num_positions).expand((1, -1)),
                                          persistent=False)

        def forward(self, pixel_values, interpolate_pos_encoding=False):
            batch, _, height, width = pixel_values.shape
            if (height // self.patch_size, width // self.patch_size) != self.grid:
                raise SpaceError(f"LanguageBind audio input {height}×{width} does not fit the "
                                 f"tower's {self.grid} patch grid")
            weight = self.patch_embedding.weight
            patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(2)
            x = torch.cat([self.class_embedding.expand(batch, 1, -1), patches.transpose(1, 2)],
                          dim=1)
            return x + self.position_embedding(self.position_ids)

    return RectEmbeddings(config, grid)


def build_video(keep: dict, vision: dict):
    """The video tower: transformers' CLIP vision tower whose every layer first attends over
    time (LanguageBind's video encoder layer: a learned temporal embedding, then a pre-norm
    temporal self-attention with a residual, no temporal MLP), frames pooled by their mean."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if str(vision.get("clip_type", "vl")) != "vl":
        raise SpaceError(f"a LanguageBind video tower of clip_type {vision.get('clip_type')!r} "
                         f"(3-D patches) is not bound yet")
    tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**keep))
    frames = int(vision.get("num_frames", 8))
    cls = temporal_layer_class()
    tower.vision_model.encoder.layers = type(tower.vision_model.encoder.layers)(
        [cls(tower.config, frames) for _ in tower.vision_model.encoder.layers])
    return tower


def temporal_layer_class():
    """transformers' ``CLIPEncoderLayer`` with LanguageBind's temporal attention before it."""
    import torch
    from torch import nn
    from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer

    class TemporalEncoderLayer(CLIPEncoderLayer):
        def __init__(self, config, frames: int):
            super().__init__(config)
            self.frames = frames
            self.temporal_embedding = nn.Parameter(torch.zeros(1, frames, config.hidden_size))
            self.temporal_attn = CLIPAttention(config)
            self.temporal_layer_norm1 = nn.LayerNorm(config.hidden_size,
                                                     eps=config.layer_norm_eps)

        def forward(self, hidden_states, attention_mask=None, **kwargs):
            bt, n, d = hidden_states.shape
            t = self.frames
            x = hidden_states.reshape(bt // t, t, n, d).transpose(1, 2).reshape(-1, t, d)
            if t != 1:
                x = x + self.temporal_embedding[:, :t]
            y, _ = self.temporal_attn(hidden_states=self.temporal_layer_norm1(x),
                                      attention_mask=None)
            x = x + y
            hidden_states = x.reshape(bt // t, n, t, d).transpose(1, 2).reshape(bt, n, d)
            return super().forward(hidden_states, attention_mask, **kwargs)

    return TemporalEncoderLayer


def build_text(config: dict):
    """transformers' CLIP text tower with projection; pooled at the highest id (as
    LanguageBind's text transformer always pools: transformers' rule for ``eos_token_id 2``)."""
    _torch()
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    text = dict(config.get("text_config") or {})
    keep = {k: v for k, v in text.items() if k in CLIPTextConfig().to_dict()}
    keep.update(projection_dim=int(config.get("projection_dim", DIM)), eos_token_id=2)
    return CLIPTextModelWithProjection(CLIPTextConfig(**keep))


def merge_lora(state: dict, config: dict) -> dict:
    """peft's wrapped vision encoder in plain CLIP keys, LoRA deltas merged
    (``W + B·A·lora_alpha/lora_r``)."""
    vision = config.get("vision_config") or {}
    r, alpha = int(vision.get("lora_r") or 0), float(vision.get("lora_alpha") or 0)
    out, lora = {}, {}
    for key, value in state.items():
        key = key.replace(".encoder.base_model.model.", ".encoder.")
        m = re.match(r"(.*)\.lora_([AB])\.default\.weight$", key)
        if m:
            lora.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        out[key.replace(".base_layer.", ".")] = value
    for prefix, ab in lora.items():
        if set(ab) != {"A", "B"} or prefix + ".weight" not in out or r <= 0:
            raise SpaceError(f"LoRA tensors of {prefix} do not match a base layer and the "
                             f"config's lora_r={r}")
        weight = out[prefix + ".weight"]
        out[prefix + ".weight"] = weight + (ab["B"].float() @ ab["A"].float()).to(
            weight.dtype) * (alpha / r)
    return out


def split_state(state: dict, config: dict) -> tuple[dict, dict]:
    """A tower checkpoint's (vision, text) tensors in transformers' CLIP towers' keys; any
    other tensor is an error (a wrong file), not silently dropped."""
    vision, text, other = {}, {}, []
    for key, value in merge_lora(state, config).items():
        if any(re.search(p, key) for p in _DROPPED):
            continue
        if key.startswith(("vision_model.", "visual_projection.")):
            vision[key] = value
        elif key.startswith(("text_model.", "text_projection.")):
            text[key] = value
        else:
            other.append(key)
    if other:
        raise SpaceError(f"not a LanguageBind tower checkpoint: unexpected tensor {other[0]}")
    return vision, text


class LanguageBindSpace(EncoderAdapter):
    """LanguageBind's text tower and image-like towers implementing the Space protocol."""

    family = PREFIX

    def __init__(self, folders: dict, name: str = PREFIX, device: str | None = None,
                 precision: str | None = None, batch_size: int = 16,
                 workers: int | None = None):
        torch = _torch()
        self.name, self.dim = name, DIM
        self.folders = {m: Path(f) for m, f in folders.items()}
        self.folders = {m: self.folders[m] for m in HUB_TOWERS if m in self.folders}
        self.modalities = (*self.folders, "text")
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        self.towers = torch.nn.ModuleDict()
        self.configs, digests = {}, []
        text_from = TEXT_FROM if TEXT_FROM in self.folders else next(iter(self.folders))
        for modality, folder in self.folders.items():
            cfg = self.configs[modality] = read_config(folder)
            path = _weight_path(folder)
            if path is None:
                raise SpaceError(f"{folder}: no LanguageBind weights "
                                 f"({' or '.join(WEIGHT_FILES)})")
            vision_state, text_state = split_state(
                weights.load_state_dict(path, "LanguageBind weights"), cfg)
            tower = build_vision(cfg)
            weights.load_into(tower, vision_state, path, ignore=_position_ids(tower))
            self.towers[modality] = tower
            if modality == text_from:
                self.text = build_text(cfg)
                weights.load_into(self.text, text_state, path, ignore=_position_ids(self.text))
            digests.append([modality, weights.file_digest(path)])
            self.dim = int(cfg.get("projection_dim", DIM))
        self.text_folder = self.folders[text_from]
        self.towers.eval().to(device=self.device, dtype=self.dtype)
        self.text.eval().to(device=self.device, dtype=self.dtype)
        self._tokenizer = None
        self.fingerprint = hashlib.sha256(json.dumps(
            [PREFIX, digests, PREPROCESS_VERSION, self.precision],
            sort_keys=True).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    # --- text ---------------------------------------------------------------------------
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import CLIPTokenizer

            missing = [f for f in TOKENIZER_FILES if not (self.text_folder / f).exists()]
            if missing and not (self.text_folder / "tokenizer.json").exists():
                raise SpaceError(f"{self.name} cannot encode text: {self.text_folder} lacks "
                                 f"{', '.join(missing)}")
            self._tokenizer = CLIPTokenizer.from_pretrained(str(self.text_folder),
                                                            local_files_only=True)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> dict:
        """LanguageBind's processors' text call: 77 tokens, padded to the length, cut."""
        enc = self.tokenizer()([str(t) for t in texts], max_length=TEXT_LEN,
                               padding="max_length", truncation=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # --- images, depth, thermal ---------------------------------------------------------
    def image_item(self, path):
        from PIL import Image

        from freebind.spaces import compat

        tf = compat.import_torchvision().transforms.functional
        try:
            with Image.open(path) as img:
                return self._resize_norm(tf.to_tensor(img.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise SpaceError(f"{path}: unreadable image ({exc})") from None

    def depth_item(self, path):
        return self._resize_norm(depth_tensor(path, self._max_depth()))

    def audio_item(self, path):
        """LanguageBind's audio transform: the file at the tower's rate (torchaudio's sinc
        resampler), minus its mean over every channel and sample, Kaldi fbank of the first
        channel, cut or repeated to ``target_length`` frames as three channels, normalised."""
        import torch

        from freebind.data import media
        from freebind.spaces import audio_features as af

        vision = self.configs["audio"].get("vision_config") or {}
        rate = int(vision.get("audio_sample_rate", 16000))
        wave = torch.from_numpy(np.atleast_2d(media.load_audio(
            path, rate, mono=False, resampler=af.sinc_resample)).astype(np.float32))
        wave = wave - wave.mean()
        mel = af.kaldi_fbank(wave[0], rate, int(vision["num_mel_bins"]))
        return mel_image(mel, int(vision["target_length"]), float(vision["audio_mean"]),
                         float(vision["audio_std"]))

    def video_item(self, path):
        """LanguageBind's video transform (its OpenCV decoding): ``num_frames`` frames at
        ``linspace(0, count − 1)`` (truncated), RGB, ÷255, OpenAI mean/std, bilinear scale of the
        short side to 224 (pytorchvideo's ``ShortSideScale``), centre crop; never flipped
        (upstream flips at random, p = 0.5, at inference too)."""
        import torch

        vision = self.configs["video"].get("vision_config") or {}
        frames = read_frames(path, int(vision.get("num_frames", 8)))
        x = frames.float() / 255.0
        mean, std = torch.tensor(MEAN)[:, None, None, None], torch.tensor(STD)[:, None, None, None]
        x = (x - mean) / std
        c, t, h, w = x.shape
        size = (int(h / w * SIZE), SIZE) if w < h else (SIZE, int(w / h * SIZE))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        i, j = int(round((size[0] - SIZE) / 2.0)), int(round((size[1] - SIZE) / 2.0))
        return x[..., i:i + SIZE, j:j + SIZE].contiguous()

    def _max_depth(self) -> float:
        return float((self.configs["depth"].get("vision_config") or {}).get("max_depth", 10))

    def _resize_norm(self, x):
        from freebind.spaces import compat

        tv = compat.import_torchvision().transforms
        x = tv.functional.resize(x, SIZE, interpolation=tv.InterpolationMode.BICUBIC,
                                 antialias=True)
        return tv.functional.normalize(tv.functional.center_crop(x, SIZE), MEAN, STD)

    def prepare(self, modality: str, items: Sequence):
        if modality == "text":
            return self.tokenize(items)
        import torch

        return torch.stack([self._per_item(modality)(p) for p in items])

    def forward(self, modality: str, inputs):
        import torch

        with torch.no_grad():
            if modality == "text":
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                return self.text(**inputs).text_embeds
            pixels = inputs.to(device=self.device, dtype=self.dtype)
            if modality == "video":  # [B, C, T, H, W] → frames, embeddings averaged
                b, c, t = pixels.shape[:3]
                frames = pixels.transpose(1, 2).reshape(b * t, c, *pixels.shape[3:])
                out = self.towers[modality](pixel_values=frames).image_embeds
                return out.reshape(b, t, -1).mean(1)
            return self.towers[modality](pixel_values=pixels).image_embeds

    def _before_encode(self, modality: str) -> None:
        if modality == "text":
            self.tokenizer()

    def _per_item(self, modality: str):
        if modality == "text":
            return None
        return {"depth": self.depth_item, "audio": self.audio_item,
                "video": self.video_item}.get(modality, self.image_item)

    def __repr__(self) -> str:
        return (f"LanguageBindSpace(name={self.name!r}, modalities={self.modalities}, "
                f"device={self.device}, precision={self.precision})")


def _position_ids(module) -> list[str]:
    return [k for k in module.state_dict() if k.endswith("position_ids")]


def read_frames(path, count: int):
    """``count`` frames at ``linspace(0, frames − 1, count)`` (integer part), decoded by OpenCV
    as LanguageBind's processor does, as a uint8 ``[3, count, H, W]`` RGB tensor."""
    import torch

    try:
        import cv2
    except ImportError:
        raise SpaceError("LanguageBind's video decoding needs OpenCV: pip install "
                         "'freebind[languagebind]'") from None
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or total <= 0:
            raise SpaceError(f"{path}: unreadable video (no frames)")
        out = []
        for idx in np.linspace(0, total - 1, count, dtype=int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
            ok, frame = cap.read()
            if not ok:
                raise SpaceError(f"{path}: frame {int(idx)} of {total} cannot be decoded")
            out.append(torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1))
    finally:
        cap.release()
    return torch.stack(out, dim=1)


def mel_image(mel, target: int, mean: float, std: float):
    """``[frames, mels]`` fbank → LanguageBind's ``[3, mels, target]`` input: a longer one as
    three crops (front, middle, back thirds of the start positions; upstream picks a random
    start in each third, freebind the middle one), a shorter one repeated and cut (the three
    channels equal); then ``(x − mean) / (2·std)``."""
    import numpy as np
    import torch

    frames = mel.shape[0]
    if frames == 0:
        raise SpaceError("audio clip shorter than one 25 ms frame")
    if frames > target:
        ranges = np.array_split(list(range(0, frames - target + 1)), 3)
        starts = [int(r[len(r) // 2]) if len(r) else 0 for r in ranges]
        x = torch.stack([mel[s:s + target] for s in starts])
    else:
        mel = mel.repeat(target // frames + 1, 1)[:target]
        x = torch.stack([mel, mel, mel])
    return (x.transpose(1, 2) - mean) / (std * 2)


def depth_tensor(path, max_depth: float):
    """LanguageBind's depth normalisation of a single-channel depth file (millimetres):
    metres clipped to [0.01, max_depth] ÷ max_depth (max_depth 0: ÷ the image maximum),
    as a 3×H×W float tensor."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise SpaceError(f"{path}: unreadable depth image ({exc})") from None
    if arr.ndim != 2:
        raise SpaceError(f"{path}: a depth image has one channel, this one has shape "
                         f"{arr.shape}")
    depth = np.clip(arr / 1000.0, 0.01, None)
    if max_depth:
        depth = np.clip(depth, None, max_depth) / max_depth
    else:
        depth = depth / depth.max()
    return torch.from_numpy(depth.astype(np.float32)).unsqueeze(0).repeat(3, 1, 1)
