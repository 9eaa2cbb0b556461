"""Perception Encoder audio-video (``PeAudioModel``, ``PeVideoModel``,
``PeAudioVideoModel``) as ``transformers:`` spaces: tiny random-weight models saved with
their own processors; every embedding equals the one the class's own ``forward`` returns
for the same files (its processor included), for every PE-AV text head."""

from __future__ import annotations

import numpy as np
import pytest

from real_helpers import all_video_frames, require_packages, write_video, write_wav

require_packages("torch", "transformers", "timm", "av", "soundfile")
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import tiny_transformers as tt  # noqa: E402
from freebind import spaces  # noqa: E402
from freebind.util.errors import SpaceError  # noqa: E402

TEXTS = ["a dog is barking", "the cat sleeps near car engine music plays loud"]
MODS = {"pe_audio": ("audio", "text"), "pe_video": ("video", "text"),
        "pe_audio_video": ("audio", "video", "text")}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("pe-media")
    return {"audio": [write_wav(root / "a.wav", 0.5, 16000, 0),
                      write_wav(root / "b.wav", 0.8, 16000, 1)],
            "video": [write_video(root / "a.mp4", 13, 10), write_video(root / "b.mp4", 9, 5)]}


def library_forward(model, proc, media):
    """The class's own forward on the processor's outputs for the same files."""
    import soundfile as sf

    inputs = dict(proc(text=TEXTS, padding=True, truncation=True, return_tensors="pt"))
    inputs.pop("token_type_ids", None)
    if "audio" in media:
        inputs.update(proc(audio=[sf.read(str(p), dtype="float32")[0] for p in media["audio"]],
                           sampling_rate=16000, return_tensors="pt"))
    if "video" in media:
        videos = []
        for p in media["video"]:
            frames = all_video_frames(p)
            videos.append(list(frames[np.linspace(0, len(frames) - 1, 4).astype(int)]))
        inputs.update(proc(videos=videos, return_tensors="pt"))
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize("kind", tt.PE_KINDS)
def test_equals_the_library_forward(kind, tmp_path, media):
    model, proc = tt.save_pe(kind, tmp_path / kind)
    ref = f"transformers:{tmp_path / kind}"
    info = spaces.info(ref)
    assert (info.modalities, info.dim) == (MODS[kind], 32)
    mine = {m: media[m] for m in MODS[kind] if m != "text"}
    out = library_forward(model, proc, mine)
    heads = {"pe_audio": "text_audio", "pe_video": "text_video",
             "pe_audio_video": "text_audio"}
    space = spaces.get(ref, batch_size=2)
    want = {m: getattr(out, f"{m}_embeds") for m in mine}
    want["text"] = getattr(out, f"{heads[kind]}_embeds")
    for modality, rows in want.items():
        got = space.encode(modality, TEXTS if modality == "text" else mine[modality])
        assert torch.allclose(got, F.normalize(rows.float(), dim=-1), atol=1e-5), modality
    if kind == "pe_audio_video":
        for head in ("video", "audio_video"):
            other = spaces.get(f"{ref}~{head}", batch_size=2)
            assert spaces.info(f"{ref}~{head}").dim == 32
            assert torch.allclose(other.encode("text", TEXTS), F.normalize(
                getattr(out, f"text_{head}_embeds").float(), dim=-1), atol=1e-5), head
    else:
        with pytest.raises(SpaceError, match="only PeAudioVideoModel has several text heads"):
            spaces.info(f"{ref}~video")
