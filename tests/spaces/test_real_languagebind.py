"""LanguageBind (text + image, depth, thermal towers) end to end against its own code.

LanguageBind's model classes (``LanguageBindImage`` / ``Depth`` / ``Thermal``, imported past
the package's ``__init__``) are built from their own config classes at a tiny size with the
released image size (224) and LoRA on (``lora_r=2``: the vision encoder wrapped by peft, as the
released towers were trained; ``lora_B`` made non-zero so the merge matters), random weights.
Each tower's state dict and config are saved as a Hub repository holds them
(``config.json``, ``pytorch_model.bin``, the CLIP tokenizer files) in ``image/``, ``depth/``,
``thermal/`` of one folder, loaded by freebind as ``languagebind:FOLDER``. The reference
embeddings are the package's ``get_image_features`` / ``get_text_features`` on its own
processors' inputs (``load_and_transform_<tower>`` with ``get_<tower>_transform``: PIL for
images, cv2 for 16-bit depth PNGs; the tower tokenizer at 77 tokens)."""

from __future__ import annotations

import json

import pytest

from real_helpers import require_packages, write_png, write_video, write_wav

require_packages("torch", "transformers", "languagebind", "peft", "einops", "cv2", "PIL",
                 "soundfile")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import languagebind_reference as ref  # noqa: E402
from tiny_transformers import clip_bpe  # noqa: E402

from freebind import spaces  # noqa: E402
from freebind.spaces.families import languagebind as lb  # noqa: E402
from freebind.util.errors import SpaceError  # noqa: E402

TOWERS = ("image", "depth", "thermal", "audio", "video")
#: the video tower: temporal attention over 3 frames (LoRA on it), OpenCV decoding
VIDEO = dict(add_time_attn=True, num_frames=3, clip_type="vl", video_decode_backend="opencv")
#: the audio tower: a small fbank image (32 mels × 96 frames, patch 16: a 2 × 6 grid), the
#: released normalisation constants
AUDIO = dict(num_mel_bins=32, target_length=96, patch_size=16, audio_sample_rate=16000,
             audio_mean=-4.2677393, audio_std=4.5689974)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
              image_size=224, patch_size=32, lora_r=2, lora_alpha=16, lora_dropout=0.0)
TEXTS = ["a dog is barking", "rain falls on a metal roof", "the cat sleeps near car",
         "a " * 100]


def write_depth(path, seed: int, size=(200, 260), top: int = 14000):
    """A 16-bit PNG in millimetres (some beyond 10 m, some below 1 cm)."""
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, top, size=size).astype(np.uint16)
    Image.fromarray(arr).save(path)
    return path


def _tower(root, tower: str, tok, seed: int):
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77)
    torch.manual_seed(seed)
    vision = dict(VISION, **{"audio": AUDIO, "video": VIDEO}.get(tower, {}))
    model, cfg = ref.build(tower, text, vision, projection_dim=lb.DIM)
    with torch.no_grad():  # peft starts lora_B at zero: make the LoRA delta matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    folder = root / tower
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), default=str))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    tok.save_pretrained(str(folder))
    return model, cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("languagebind")
    tok = clip_bpe()
    models = {t: _tower(root, t, tok, seed) for seed, t in enumerate(TOWERS)}
    files = {"image": [write_png(root / "a.png", 0, (180, 240)),
                       write_png(root / "b.png", 1, (300, 200))],
             "thermal": [write_png(root / "t.png", 2, (240, 320))],
             "depth": [write_depth(root / "d.png", 3),
                       write_depth(root / "e.png", 4, (230, 170), top=3000)],
             # shorter than 96 frames (repeated), longer at 22.05 kHz (resampled, three
             # crops), stereo (the first channel, minus the mean over both)
             "audio": [write_wav(root / "short.wav", 0.5, 16000, 0),
                       write_wav(root / "long.wav", 2.3, 22050, 1),
                       write_wav(root / "stereo.wav", 1.2, 16000, 2, channels=2)],
             # 10 frames (3 sampled at 0, 4, 9), a portrait one, exactly 3 frames
             "video": [write_video(root / "v.mp4", 10, 8), write_video(root / "p.mp4", 7, 5,
                                                                       size=(64, 48)),
                       write_video(root / "three.mp4", 3, 4)]}
    space = spaces.get(f"languagebind:{root}", batch_size=2)
    return dict(root=root, models=models, files=files, space=space)


def _expected(world, tower, monkeypatch):
    model, cfg = world["models"][tower]
    monkeypatch.setattr(np.random, "choice", ref.middle_choice)
    import random

    monkeypatch.setattr(random, "random", ref.NeverFlip.random)
    load = ref.transform(tower, cfg)
    pixels = torch.stack([load(p) for p in world["files"][tower]])
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    return pixels, torch.nn.functional.normalize(out.float(), dim=-1)


@pytest.mark.parametrize("tower", TOWERS)
def test_tower_embeddings_equal_languagebind(world, tower, monkeypatch):
    pixels, expected = _expected(world, tower, monkeypatch)
    space = world["space"]
    ours = torch.stack([space._per_item(tower)(p) for p in world["files"][tower]])
    assert (ours - pixels).abs().max().item() <= 1e-5
    out = space.encode(tower, world["files"][tower])
    assert out.shape == (len(world["files"][tower]), lb.DIM)
    assert (out - expected).abs().max().item() <= 1e-5


def test_text_embeddings_and_ids_equal_languagebind(world):
    model, _ = world["models"]["image"]
    tok = ref.tokenizer("image", world["root"] / "image")
    enc = tok(TEXTS, max_length=77, padding="max_length", truncation=True, return_tensors="pt")
    ours = world["space"].tokenize(TEXTS)
    assert torch.equal(ours["input_ids"], enc["input_ids"])
    assert torch.equal(ours["attention_mask"], enc["attention_mask"])
    with torch.no_grad():
        expected = model.get_text_features(input_ids=enc["input_ids"],
                                           attention_mask=enc["attention_mask"])
    expected = torch.nn.functional.normalize(expected.float(), dim=-1)
    out = world["space"].encode("text", TEXTS)
    assert (out - expected).abs().max().item() <= 1e-5


def test_lora_is_merged_not_dropped(world):
    """Dropping the LoRA deltas would change the embeddings: the merge is what matches."""
    model, cfg = world["models"]["image"]
    state = torch.load(world["root"] / "image" / "pytorch_model.bin", weights_only=True)
    plain = {k: v for k, v in state.items() if "lora_" not in k}
    merged = lb.merge_lora(state, cfg.to_dict())
    unmerged = lb.merge_lora(plain, cfg.to_dict())
    key = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert (merged[key] - unmerged[key]).abs().max().item() > 1e-3


def test_info_without_weights_and_errors(world, tmp_path):
    info = spaces.info(f"languagebind:{world['root']}")
    assert info.modalities == ("image", "depth", "thermal", "audio", "video", "text")
    assert info.dim == lb.DIM and info.licence == "MIT"
    assert spaces.info("LanguageBind").modalities == ("image", "depth", "thermal", "audio",
                                                      "video", "text")
    assert spaces.info("languagebind:audio+image").modalities == ("image", "audio", "text")
    with pytest.raises(SpaceError, match="towers"):
        spaces.info("languagebind:smell")
    with pytest.raises(SpaceError, match="no LanguageBind tower"):
        spaces.info(f"languagebind:{tmp_path}")
    rgb = write_png(tmp_path / "rgb.png", 5)
    with pytest.raises(SpaceError, match="one channel"):
        world["space"].encode("depth", [rgb])


def test_checkpoint_of_another_model_is_one_line(world, tmp_path):
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "config.json").write_text((world["root"] / "image" / "config.json").read_text())
    torch.save({"audio_encoder.x": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(SpaceError, match="unexpected tensor audio_encoder.x"):
        spaces.get(f"languagebind:{tmp_path}")


def test_hub_towers_offline_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    info = spaces.info("languagebind:depth")
    ok, why = lb.check(info)
    assert not ok and "LanguageBind_Depth" in why and "pytorch_model.bin" in why
    with pytest.raises(SpaceError, match="LanguageBind/LanguageBind_Depth.*offline"):
        spaces.get("languagebind:depth")
