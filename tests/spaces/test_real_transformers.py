"""Any transformers embedding model as a space (``transformers:PATH``): tiny random-weight
CLIP, SigLIP, SigLIP 2, MetaCLIP 2, AltCLIP, Chinese-CLIP, ALIGN, CLAP and X-CLIP models
saved with their own processors (tokenizers made offline), loaded through freebind and
compared with the library's own processor + ``get_*_features`` on the same files."""

from __future__ import annotations

import numpy as np
import pytest

from real_helpers import (all_video_frames, require_packages, write_png, write_video,
                          write_wav)

require_packages("torch", "transformers", "sentencepiece", "av", "soundfile")
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import tiny_transformers as tt  # noqa: E402
from freebind import spaces  # noqa: E402
from freebind.util.errors import SpaceError  # noqa: E402

TEXTS = ["a dog is barking", "the cat sleeps near car engine music plays loud",
         "quiet street"]
OTHER = {"clap": "audio", "xclip": "video"}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {"image": [write_png(root / "a.png", 0), write_png(root / "b.png", 1, (64, 200))],
            "audio": [write_wav(root / "a.wav", 0.7, 16000, 0),
                      write_wav(root / "b.wav", 1.3, 16000, 1)],
            "video": [write_video(root / "a.mp4", 13, 10), write_video(root / "b.mp4", 9, 5)]}


def reference(model, proc, modality, items):
    """The library's own processor and feature method on the same inputs."""
    import soundfile as sf
    from PIL import Image

    if modality == "text":
        kw = {"truncation": True}
        if "padding" not in (getattr(type(proc), "text_kwargs", None) or {}):
            kw.update({"padding": "max_length", "max_length": 64}
                      if model.config.model_type == "siglip" else {"padding": True})
        inputs = proc(text=items, return_tensors="pt", **kw)
        fn = model.get_text_features
    elif modality == "image":
        inputs = proc(images=[Image.open(p).convert("RGB") for p in items],
                      return_tensors="pt")
        fn = model.get_image_features
    elif modality == "audio":
        np.random.seed(0)  # freebind seeds numpy with 0 for a batch's random crops
        inputs = proc(audio=[sf.read(str(p), dtype="float32")[0] for p in items],
                      sampling_rate=16000, return_tensors="pt")
        fn = model.get_audio_features
    else:
        n = model.config.vision_config.num_frames
        videos = []
        for p in items:
            frames = all_video_frames(p)
            idx = np.linspace(0, len(frames) - 1, n).astype(int)
            videos.append(list(frames[idx]))
        inputs = proc(videos=videos, return_tensors="pt")
        fn = model.get_video_features
    import inspect

    keys = inspect.signature(fn).parameters
    with torch.no_grad():
        out = fn(**{k: v for k, v in inputs.items() if k in keys})
    out = out if torch.is_tensor(out) else out.pooler_output
    return F.normalize(out.float(), dim=-1)


@pytest.mark.parametrize("kind", tt.KINDS)
def test_equals_the_library(kind, tmp_path, media):
    model, proc = tt.save(kind, tmp_path / kind)
    ref = f"transformers:{tmp_path / kind}"
    info = spaces.info(ref)
    other = OTHER.get(kind, "image")
    assert info.family == "transformers" and set(info.modalities) == {other, "text"}
    space = spaces.get(ref, batch_size=2)
    for modality, items in (("text", TEXTS), (other, media[other])):
        got = space.encode(modality, items)
        want = reference(model, proc, modality, items)
        assert got.shape == (len(items), info.dim) == want.shape
        assert torch.allclose(got, want, atol=1e-5), (kind, modality,
                                                      (got - want).abs().max())
