"""LanguageBind's own code as the tests' reference (the ``languagebind`` package, installed
``--no-deps`` by scripts/setup.sh; freebind never imports it).

The package's ``__init__`` imports every tower at once (and with the video processor decord),
so its modules are imported below a bare package object (the installed folder as its path, its
``__init__`` not run): ``languagebind.<tower>.modeling_<tower>`` (LoRA through peft, transformers'
CLIP modules), ``configuration_<tower>``, ``tokenization_<tower>`` and
``processing_<tower>`` (the transforms and file loaders, cv2 reading depth files)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from preprocess_reference import _bare, _modules

CLASS = {"image": "Image", "depth": "Depth", "thermal": "Thermal", "audio": "Audio",
         "video": "Video"}


def module(tower: str, part: str):
    """``languagebind.<tower>.<part>_<tower>`` without running ``languagebind/__init__``."""
    from freebind.spaces import compat

    compat.torchvision_if_present()
    if "languagebind" not in sys.modules:
        spec = importlib.util.find_spec("languagebind")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("languagebind is not installed (scripts/setup.sh installs it "
                              "--no-deps)")
        pkg = types.ModuleType("languagebind")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["languagebind"] = pkg
    return importlib.import_module(f"languagebind.{tower}.{part}_{tower}")


def build(tower: str, text: dict, vision: dict, projection_dim: int):
    """``LanguageBind<Tower>`` from its own config class (LoRA wrapped by peft when
    ``vision['lora_r'] > 0``), eval mode."""
    cfg_cls = getattr(module(tower, "configuration"), f"LanguageBind{CLASS[tower]}Config")
    model_cls = getattr(module(tower, "modeling"), f"LanguageBind{CLASS[tower]}")
    cfg = cfg_cls(text_config=text, vision_config=vision, projection_dim=projection_dim)
    model = model_cls(cfg).eval()
    if tower == "audio":
        transformers4_embeddings(model.vision_model.embeddings)
    return model, cfg


def transformers4_embeddings(embeddings) -> None:
    """transformers 4's ``CLIPVisionEmbeddings.forward`` (which LanguageBind was written
    against) on the audio tower's embeddings: transformers 5 added a check that the input is
    ``image_size`` square, which the audio tower's fbank image (after LanguageBind's own
    ``resize_pos`` to ``[num_mel_bins, target_length]``) never is; the computation is the
    same (class token, conv patches, every position embedding)."""
    import torch

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        batch_size = pixel_values.shape[0]
        target_dtype = self.patch_embedding.weight.dtype
        patch_embeds = self.patch_embedding(pixel_values.to(dtype=target_dtype))
        patch_embeds = patch_embeds.flatten(2).transpose(1, 2)
        class_embeds = self.class_embedding.expand(batch_size, 1, -1)
        embeddings = torch.cat([class_embeds, patch_embeds], dim=1)
        return embeddings + self.position_embedding(self.position_ids)

    embeddings.forward = forward.__get__(embeddings)


def transform(tower: str, config):
    """The tower processor's file → pixel tensor function (``get_<tower>_transform`` and
    ``load_and_transform_<tower>`` of ``processing_<tower>``)."""
    proc = {"audio": processing_audio, "video": processing_video}.get(
        tower, lambda: module(tower, "processing"))()
    tf = getattr(proc, f"get_{tower}_transform")(config)
    load = getattr(proc, f"load_and_transform_{tower}")
    if tower == "video":
        vision = config.vision_config
        return lambda path: load(str(path), tf, video_decode_backend=vision.video_decode_backend,
                                 num_frames=vision.num_frames)
    return lambda path: load(str(path), tf)


def processing_video():
    """``processing_video`` over what its OpenCV backend uses: pytorchvideo's real
    ``transforms.transforms`` (``ShortSideScale``, ``ApplyTransformToKey``,
    ``UniformTemporalSubsample``) below a bare ``pytorchvideo.transforms`` (its ``__init__``
    imports augmentations needing torchvision's removed ``functional_tensor``); the imports of
    the backends the tests never select (``decord``, ``pytorchvideo.data.encoded_video``,
    neither with a wheel or a working import here) find empty modules during the import only."""
    name = "languagebind.video.processing_video"
    if name in sys.modules:
        return sys.modules[name]
    pv_dir = Path(importlib.util.find_spec("pytorchvideo").submodule_search_locations[0])
    pv_transforms = _bare("pytorchvideo.transforms", pv_dir / "transforms")
    decord = types.ModuleType("decord")
    decord.bridge = types.SimpleNamespace(set_bridge=lambda name: None)
    decord.VideoReader, decord.cpu = None, None
    encoded = types.ModuleType("pytorchvideo.data.encoded_video")
    encoded.EncodedVideo = None
    shims = {"decord": decord, "pytorchvideo.transforms": pv_transforms,
             "pytorchvideo.data": _bare("pytorchvideo.data", pv_dir / "data"),
             "pytorchvideo.data.encoded_video": encoded}
    with _modules(shims):
        real = importlib.import_module("pytorchvideo.transforms.transforms")
        for attr in ("ShortSideScale", "ApplyTransformToKey", "UniformTemporalSubsample"):
            setattr(pv_transforms, attr, getattr(real, attr))
        package = importlib.import_module("pytorchvideo")
        if not hasattr(package, "transforms"):  # ShortSideScale calls through the package
            package.transforms = pv_transforms
        return module("video", "processing")


class NeverFlip:
    """``random`` for torchvision's ``RandomHorizontalFlipVideo`` (p = 0.5, applied by
    LanguageBind's video transform at inference too): ``random() = 1``, never flipping, as
    freebind does."""

    @staticmethod
    def random() -> float:
        return 1.0


def processing_audio():
    """``processing_audio`` with torchaudio's own Python code as its ``torchaudio`` (``load``
    through soundfile, ``functional.resample``, ``compliance.kaldi.fbank``;
    preprocess_reference.py), never its native library."""
    from preprocess_reference import torchaudio_reference

    if "languagebind.audio.processing_audio" in sys.modules:
        return sys.modules["languagebind.audio.processing_audio"]
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = torchaudio_reference()
    try:
        return module("audio", "processing")
    finally:
        if saved is None:
            sys.modules.pop("torchaudio", None)
        else:
            sys.modules["torchaudio"] = saved


def middle_choice(values):
    """``np.random.choice`` for the audio transform's crop starts, fixed at the middle of each
    third (as freebind picks; upstream picks at random)."""
    return values[len(values) // 2]


def tokenizer(tower: str, folder):
    cls = getattr(module(tower, "tokenization"), f"LanguageBind{CLASS[tower]}Tokenizer")
    return cls.from_pretrained(str(folder))
