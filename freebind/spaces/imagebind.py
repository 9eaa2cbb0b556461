"""ImageBind (``IB``): the unified space of the paper, ImageBind-huge, 1024-d.

The model is freebind's own implementation of ImageBind-huge
(:mod:`freebind.spaces.imagebind_model`), loading the released state dict unchanged; the
``imagebind`` package is not needed (``pip install 'freebind[imagebind]'`` installs torchvision,
ftfy, regex and PyAV). Preprocessing is ImageBind's own, re-implemented without
torchaudio/pytorchvideo:

* image: resize the short side to 224 (bicubic), centre crop 224, CLIP mean/std;
* text: CLIP's BPE tokenizer (:mod:`freebind.spaces.clip_bpe`), 77 tokens;
* audio: resampled to 16 kHz as torchaudio does (:func:`~freebind.spaces.audio_features.
  sinc_resample`), three 2 s clips, 128-bin Kaldi fbank of the first channel, 204 frames,
  mean −4.268 / std 9.138 (see :mod:`freebind.spaces.audio_features`); the clip embeddings
  are averaged.
* video (ImageBind's ``load_and_transform_video_data``, decoded with PyAV instead of decord):
  duration = frames / average fps; five 2 s clips placed by the constant-clips sampler (starts
  0, (D−2)/5, …); a clip holds the frames ceil(fps·start) … ceil(fps·end)−1, of which the
  first and last are kept (uniform temporal subsample of 2); /255; short side → 224
  (bilinear, long side floored); CLIP mean/std; three 224 crops along the long side (start,
  centre, end). Input ``[15, 3, 2, 224, 224]``; the model averages the 15 embeddings.
* depth: a single-channel *disparity* map (baseline·focal/depth, pixel units; grey PNG/TIFF
  or ``.npy``), as ImageBind (after Omnivore) was trained on: clamp to [0.01, 75], /75,
  short side → 224 (bilinear, antialiased), centre crop, mean 0.0418 / std 0.0295.
* thermal: a single-channel image scaled to [0, 1] (8-bit /255, 16-bit /65535), short side →
  224 (bicubic, antialiased), centre crop 224, no mean/std (the release documents none).
* imu: ``.npy`` ``[6, T]`` (accelerometer xyz, gyroscope xyz; ``[T, 6]`` is transposed),
  centre-cropped or zero-padded to 2000 samples, raw values.

Weights: ``imagebind_huge.pth`` resolved by :mod:`freebind.spaces.weights` (explicit
``checkpoint=`` path → ``$FREEBIND_HOME/weights/imagebind/`` → ImageBind's own
``.checkpoints/`` folder in the current directory, read but never written → download from
dl.fbaipublicfiles.com). The tokenizer's vocabulary ``bpe_simple_vocab_16e6.txt.gz`` is
resolved the same way (``$FREEBIND_HOME/weights/imagebind/`` → the copy open_clip,
imagebind or laion_clap ship when one is installed → download from OpenAI's CLIP
repository), checked against its sha256.

Precision: fp32 by default (CPU and GPU); bf16 anywhere, fp16 on GPU only. The model is
built on the meta device and takes the checkpoint's tensors, so loading needs one copy of
the weights in memory (≈ 4.8 GB for huge in fp32).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces import clip_bpe, compat, weights
from freebind.spaces.adapter import EncoderAdapter, reject_unknown

CHECKPOINT = "imagebind_huge.pth"
URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
ORIGIN = "Meta's ImageBind release (dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth)"
#: ImageBind constructor arguments of ImageBind-huge (the released checkpoint).
HUGE = dict(vision_embed_dim=1280, vision_num_blocks=32, vision_num_heads=16,
            text_embed_dim=1024, text_num_blocks=24, text_num_heads=16, out_embed_dim=1024,
            audio_drop_path=0.1, imu_drop_path=0.7)
VOCAB_ORIGIN = ("OpenAI CLIP's BPE vocabulary "
                "(github.com/openai/CLIP, clip/bpe_simple_vocab_16e6.txt.gz)")
MODALITIES = ("audio", "image", "text", "video", "depth", "thermal", "imu")
VIDEO_CLIPS, VIDEO_CLIP_SECONDS, VIDEO_FRAMES, VIDEO_CROPS = 5, 2, 2, 3
DEPTH_MIN, DEPTH_MAX, DEPTH_MEAN, DEPTH_STD = 0.01, 75.0, 0.0418, 0.0295
IMU_CHANNELS, IMU_LENGTH = 6, 2000
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS_VERSION = "ib-pre-2"   # 2: torchaudio's sinc resampler, first channel


def weight_file() -> weights.WeightFile:
    return weights.WeightFile(
        filename=CHECKPOINT, family="imagebind", origin=ORIGIN,
        library_paths=lambda: [Path(".checkpoints") / CHECKPOINT],
        fetch=weights.url_fetch(URL, CHECKPOINT))


def vocab_file() -> weights.WeightFile:
    return weights.WeightFile(
        filename=clip_bpe.VOCAB_FILE, family="imagebind", origin=VOCAB_ORIGIN,
        what="tokenizer vocabulary", library_paths=clip_bpe.library_copies,
        fetch=weights.url_fetch(clip_bpe.VOCAB_URL, clip_bpe.VOCAB_FILE))


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available("torchvision", "ftfy", "regex")
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[imagebind]'"
    explicit = dict(getattr(info, "options", ()) or ()).get("checkpoint")
    if explicit:
        path = Path(explicit).expanduser()
        found = path if path.exists() else None
        if found is None:
            return False, f"weights missing: {path}"
    else:
        found = weight_file().find_local()
        if found is None:
            return False, f"weights missing: {weight_file().home_path}"
    if vocab_file().find_local() is None:
        return True, f"{found} (text tokenizer vocabulary missing: {vocab_file().home_path})"
    return True, str(found)


def load(info=None, checkpoint: str | None = None, device: str | None = None,
         precision: str | None = None, batch_size: int = 32, arch: dict | None = None,
         download: bool = True, workers: int | None = None, **unused) -> "ImageBindSpace":
    """Build ImageBind and load its weights (see module doc for the resolution order).

    ``arch`` overrides the ImageBind constructor's arguments (tests build a tiny ImageBind
    with it)."""
    reject_unknown(unused, "ImageBind")
    name = getattr(info, "name", "IB")
    path = weights.resolve(weight_file(), checkpoint, download=download)
    return ImageBindSpace(path, name=name, device=device, precision=precision,
                          batch_size=batch_size, arch=arch, workers=workers)


class ImageBindSpace(EncoderAdapter):
    """A loaded ImageBind model implementing the Space protocol."""

    family = "imagebind"

    def __init__(self, checkpoint, name: str = "IB", device: str | None = None,
                 precision: str | None = None, batch_size: int = 32, arch: dict | None = None,
                 workers: int | None = None):
        from freebind.spaces import imagebind_model

        self.name = name
        self.modalities = MODALITIES
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        self.arch = dict(HUGE if arch is None else arch)
        self.checkpoint = Path(checkpoint)
        try:
            self.model = imagebind_model.build(self.arch, device="meta")
        except (TypeError, ValueError) as exc:
            raise SpaceError(f"ImageBind: bad architecture arch={self.arch!r} ({exc})") from None
        state = weights.strip_prefix(weights.load_state_dict(self.checkpoint, "ImageBind weights"))
        weights.load_into(self.model, state, self.checkpoint, assign=True)
        del state
        self.model.eval().to(device=self.device, dtype=self.dtype)
        self.dim = int(self.model.out_embed_dim)
        self._tokenizer = None
        self._image_tf = None
        digest = weights.file_digest(self.checkpoint)
        self.fingerprint = hashlib.sha256(json.dumps(
            ["imagebind", self.arch, digest, PREPROCESS_VERSION, self.precision], sort_keys=True
        ).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    # --- preprocessing ------------------------------------------------------------------------
    def tokenizer(self):
        if self._tokenizer is None:
            compat.require("ftfy", "imagebind")
            compat.require("regex", "imagebind")
            self._tokenizer = clip_bpe.ClipTokenizer(weights.resolve(vocab_file()))
        return self._tokenizer

    def image_transform(self):
        if self._image_tf is None:
            tv = compat.import_torchvision()
            T = tv.transforms
            self._image_tf = T.Compose([
                T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(224),
                T.ToTensor(),
                T.Normalize(mean=IMAGE_MEAN, std=IMAGE_STD),
            ])
        return self._image_tf

    def prepare_item(self, modality: str, item):
        """One file's model input (decoded, resampled, transformed)."""
        from freebind.data import media
        from freebind.spaces import audio_features as af

        if modality == "image":
            return self.image_transform()(media.load_image(item))
        if modality == "audio":
            return af.imagebind_audio_file(item)   # reads only the three clips
        if modality == "video":
            return imagebind_video(item)
        if modality == "depth":
            return imagebind_depth(media.load_single_channel(item))
        if modality == "thermal":
            return imagebind_thermal(media.load_single_channel(item, normalise=True))
        if modality == "imu":
            return imagebind_imu(media.load_imu(item, IMU_CHANNELS))
        raise SpaceError(f"space {self.name} does not encode {modality!r} files")

    def prepare(self, modality: str, items: Sequence):
        """A batch's model input: token ids ``[N, 77]``, images ``[N, 3, 224, 224]``, audio
        ``[N, 3, 1, 128, 204]``, video ``[N, 15, 3, 2, 224, 224]``, depth/thermal
        ``[N, 1, 224, 224]`` or IMU ``[N, 6, 2000]``."""
        import torch

        if modality == "text":
            tokens = self.tokenizer()([str(t) for t in items])
            return tokens.reshape(len(items), -1)
        if modality in ("image", "audio", "video", "depth", "thermal", "imu"):
            return torch.stack([self.prepare_item(modality, p) for p in items])
        raise SpaceError(f"space {self.name} does not encode {modality!r}")

    def forward(self, modality: str, inputs):
        key = {"image": "vision", "video": "vision"}.get(modality, modality)
        if inputs.is_floating_point():
            inputs = inputs.to(self.dtype)
        out = self.model({key: inputs.to(self.device)})[key]
        return out.float()

    def _before_encode(self, modality: str) -> None:
        if modality == "text":
            self.tokenizer()  # a missing vocabulary or package is reported before any work

    def _per_item(self, modality: str):  # the encode hook of EncoderAdapter
        return None if modality == "text" else (lambda x: self.prepare_item(modality, x))

    def __repr__(self) -> str:
        return (f"ImageBindSpace(name={self.name!r}, dim={self.dim}, device={self.device}, "
                f"precision={self.precision}, checkpoint={str(self.checkpoint)!r})")


def video_clip_frames(n_frames: int, fps: float) -> list[tuple[int, int]]:
    """For each of ImageBind's video clips, the two frame indices it keeps.

    pytorchvideo's constant-clips sampler over the duration ``n_frames / fps`` (as decord
    reports it), decord's frame range for a clip ``[ceil(fps·start), ceil(fps·end))`` cut at
    the last frame, then the uniform temporal subsample of 2 (first and last frame)."""
    import math

    from freebind.spaces.audio_features import constant_clips

    out = []
    for i, (start, end) in enumerate(constant_clips(n_frames / fps, VIDEO_CLIP_SECONDS,
                                                    VIDEO_CLIPS)):
        first = math.ceil(fps * start)
        stop = min(math.ceil(fps * end), n_frames)
        if stop <= first:
            raise ValueError(f"clip {i} ({float(start):.2f}-{float(end):.2f} s) has no frames")
        count = stop - first
        picks = [first + int(k * (count - 1) / (VIDEO_FRAMES - 1)) for k in range(VIDEO_FRAMES)]
        out.append(tuple(picks))
    return out


def _short_side_scale(x, size: int = 224, mode: str = "bilinear"):
    """pytorchvideo's ShortSideScale on ``[C, T, H, W]``: short side → size, long side
    floored, no antialiasing."""
    import math

    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if w < h:
        new_h, new_w = int(math.floor(h / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(w / h * size))
    return F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False)


def _spatial_crops(x, size: int = 224):
    """ImageBind's SpatialCrop(224, 3): start, centre and end crops along the long side."""
    import math

    h, w = x.shape[-2:]
    y0, x0 = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
    crops = []
    for idx in range(VIDEO_CROPS):
        y, xx = y0, x0
        if h > w:
            y = {0: 0, 1: y0, 2: h - size}[idx]
        else:
            xx = {0: 0, 1: x0, 2: w - size}[idx]
        crops.append(x[..., y:y + size, xx:xx + size])
    return crops


def imagebind_video(path):
    """ImageBind's video input ``[15, 3, 2, 224, 224]`` for a video file (see module doc)."""
    import torch

    from freebind.data import media
    from freebind.util.errors import MediaError

    n, fps = media.video_info(path)
    try:
        clips = video_clip_frames(n, fps)
    except ValueError as exc:
        raise MediaError(f"{path}: {exc}") from None
    indices = [i for clip in clips for i in clip]
    frames = torch.from_numpy(media.load_video_frames(path, indices))  # [K, H, W, 3] uint8
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1, 1)
    out = []
    for c in range(len(clips)):
        clip = frames[c * VIDEO_FRAMES:(c + 1) * VIDEO_FRAMES].permute(3, 0, 1, 2).float()
        clip = _short_side_scale(clip / 255.0)
        clip = (clip - mean) / std
        out.extend(_spatial_crops(clip))
    return torch.stack(out).contiguous()


def _resize_crop(x, interpolation: str):
    tv = compat.import_torchvision()
    TF = tv.transforms.functional
    mode = getattr(tv.transforms.InterpolationMode, interpolation.upper())
    x = TF.resize(x, 224, interpolation=mode, antialias=True)
    return TF.center_crop(x, 224)


def imagebind_depth(disparity):
    """Depth input ``[1, 224, 224]`` from a disparity map ``[H, W]`` (see module doc)."""
    import torch

    x = torch.as_tensor(disparity, dtype=torch.float32)[None]
    x = x.clamp(min=DEPTH_MIN).clamp(max=DEPTH_MAX) / DEPTH_MAX
    return (_resize_crop(x, "bilinear") - DEPTH_MEAN) / DEPTH_STD


def imagebind_thermal(thermal):
    """Thermal input ``[1, 224, 224]`` from a map ``[H, W]`` in [0, 1]."""
    import torch

    return _resize_crop(torch.as_tensor(thermal, dtype=torch.float32)[None], "bicubic")


def imagebind_imu(imu):
    """IMU input ``[6, 2000]``: each channel centre-cropped / zero-padded to 2000 samples."""
    import numpy as np
    import torch

    from freebind.data.media import fit_length

    return torch.from_numpy(np.stack([fit_length(ch, IMU_LENGTH) for ch in imu]))


def resolve_family(spec: str, ref: str):
    """``imagebind:PATH`` → ImageBind-huge loaded from a local checkpoint file."""
    from freebind.spaces.protocol import SpaceInfo

    if not spec:
        raise SpaceError(f"{ref}: give a checkpoint path, e.g. imagebind:/data/imagebind_huge.pth")
    return SpaceInfo(name=ref, family="imagebind", modalities=MODALITIES, dim=1024,
                     description=f"ImageBind-huge from {spec}",
                     options=(("checkpoint", spec),),
                     loader="freebind.spaces.imagebind:load",
                     checker="freebind.spaces.imagebind:check")
