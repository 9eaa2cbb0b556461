"""Real weights against the reference implementations (slow; for machines that have them).

Each test runs only where the real checkpoint is found by freebind's own resolution
(``freebind download …`` first) and the library's reference pipeline imports (ImageBind's
``imagebind.data`` needs torchaudio and pytorchvideo; laion_clap's hook needs librosa and the
roberta-base tokenizer). Media are written at the models' native rates so the comparison
measures preprocessing, not resamplers. Run with ``pytest -m slow tests/test_real_reference.py``.
"""

from __future__ import annotations

import pytest

from real_helpers import write_png, write_wav

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _real_home(monkeypatch):
    """The real weights are in the user's FREEBIND_HOME, not the session's test home."""
    from tests.conftest import REAL_HOME

    monkeypatch.setenv("FREEBIND_HOME", REAL_HOME)


def _need(space_ref: str):
    import freebind.spaces as spaces

    ok, detail = spaces.info(space_ref).check()
    if not ok:
        pytest.skip(f"{space_ref}: {detail}")


def _cos(a, b):
    import torch

    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def test_imagebind_matches_imagebind_data_pipeline(tmp_path):
    _need("IB")
    try:
        from imagebind import data
        from imagebind.models.imagebind_model import ModalityType
    except Exception as exc:  # torchaudio/pytorchvideo missing or broken here
        pytest.skip(f"imagebind.data unavailable: {exc}")
    import torch

    import freebind.spaces as spaces

    space = spaces.get("IB")
    audio = [write_wav(tmp_path / f"a{i}.wav", s, 16000, i) for i, s in enumerate((1.5, 5, 11))]
    images = [write_png(tmp_path / f"i{i}.png", i, (300 + 40 * i, 200)) for i in range(3)]
    texts = ["a dog barking", "rain on a roof", "a car engine starting"]
    dev = space.device
    ref_inputs = {
        ModalityType.AUDIO: data.load_and_transform_audio_data([str(p) for p in audio], dev),
        ModalityType.VISION: data.load_and_transform_vision_data([str(p) for p in images], dev),
        ModalityType.TEXT: data.load_and_transform_text(texts, dev),
    }
    with torch.no_grad():
        ref = space.model({k: v.to(space.dtype) if v.is_floating_point() else v
                           for k, v in ref_inputs.items()})
    for modality, key, items in (("audio", ModalityType.AUDIO, audio),
                                 ("image", ModalityType.VISION, images),
                                 ("text", ModalityType.TEXT, texts)):
        mine = space.encode(modality, items)
        assert _cos(mine, ref[key].cpu()).min() > 0.999, modality


def test_clap_g_matches_laion_clap_hook(tmp_path):
    _need("CLAP_g")
    import importlib.util
    import os
    import sys

    try:  # the hook imports `clap_module` from its own folder (laion_clap/__init__ adds it)
        sys.path.append(os.path.dirname(importlib.util.find_spec("laion_clap").origin))
        from laion_clap.hook import CLAP_Module
    except Exception as exc:
        pytest.skip(f"laion_clap hook unavailable: {exc}")
    import freebind.spaces as spaces
    from freebind.spaces import clap, weights

    space = spaces.get("CLAP_g")
    ref = CLAP_Module(enable_fusion=True, device=str(space.device))
    ref.load_ckpt(str(weights.resolve(clap.weight_file("630k-audioset-fusion-best.pt"))),
                  verbose=False)
    audio = [write_wav(tmp_path / f"a{i}.wav", s, 48000, i) for i, s in enumerate((2, 6, 9.5))]
    mine = space.encode("audio", audio)  # all ≤ 10 s: the reference path is deterministic
    theirs = ref.get_audio_embedding_from_filelist([str(p) for p in audio], use_tensor=True)
    assert _cos(mine, theirs.detach().cpu()).min() > 0.999
    texts = ["a dog barking", "rain on a roof"]
    theirs_t = ref.get_text_embedding(texts, use_tensor=True)
    assert _cos(space.encode("text", texts), theirs_t.detach().cpu()).min() > 0.999


def test_openclip_matches_open_clip_factory(tmp_path):
    _need("CLIP-B32")
    import torch

    import freebind.spaces as spaces
    from freebind.data import media
    from freebind.spaces import compat, openclip, weights

    oc = compat.require("open_clip", "open_clip")
    space = spaces.get("CLIP-B32")
    cfg = oc.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    path = weights.resolve(openclip.weight_file("ViT-B-32", "laion2b_s34b_b79k", cfg))
    model, _, preprocess = oc.create_model_and_transforms("ViT-B-32", pretrained=str(path))
    model.eval()
    images = [write_png(tmp_path / f"i{i}.png", i, (240, 320)) for i in range(3)]
    with torch.no_grad():
        x = torch.stack([preprocess(media.load_image(p)) for p in images])
        ref = model.encode_image(x)
    assert _cos(space.encode("image", images), ref).min() > 0.999
