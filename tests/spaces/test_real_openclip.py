"""OpenCLIP adapter end to end on a tiny random-weight CLIP config, through open_clip's own
model factory, checkpoint loader (weights_only=True) and evaluation transform."""

from __future__ import annotations

import json

import pytest

from real_helpers import require_packages, write_png

require_packages("torch", "open_clip", "timm", "ftfy", "regex")
import torch  # noqa: E402

import freebind.spaces as spaces  # noqa: E402
from freebind.util.errors import SpaceError  # noqa: E402
from freebind.spaces import compat, openclip  # noqa: E402

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                       "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("oc")
    open_clip = compat.require("open_clip", "open_clip")
    (root / "fbtest-tiny-ViT.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(str(root / "fbtest-tiny-ViT.json"))
    torch.manual_seed(0)
    model = open_clip.create_model("fbtest-tiny-ViT", pretrained=None).eval()
    ckpt = root / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    images = [write_png(root / "a.png", 0), write_png(root / "b.png", 1, (64, 200))]
    space = openclip.load(None, arch="fbtest-tiny-ViT", checkpoint=str(ckpt))
    return dict(root=root, model=model, ckpt=ckpt, images=images, space=space,
                open_clip=open_clip)


def test_image_and_text_match_open_clip(world):
    space, model, oc = world["space"], world["model"], world["open_clip"]
    img = space.encode("image", world["images"])
    assert img.shape == (2, 16) and torch.allclose(img.norm(dim=1), torch.ones(2), atol=1e-5)
    _, _, preprocess = oc.create_model_and_transforms("fbtest-tiny-ViT", pretrained=None)
    from PIL import Image

    x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in world["images"]])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
    assert torch.allclose(img, ref, atol=1e-5)
    texts = ["a photo of a dog", "a siren"]
    txt = space.encode("text", texts)
    with torch.no_grad():
        ref_t = torch.nn.functional.normalize(model.encode_text(oc.get_tokenizer(
            "fbtest-tiny-ViT")(texts)), dim=-1)
    assert torch.allclose(txt, ref_t, atol=1e-5)
    assert space.encode("audio" if False else "text", []).shape == (0, 16)
    with pytest.raises(SpaceError, match="does not encode 'audio'"):
        space.encode("audio", ["x.wav"])


def test_pretrained_tag_resolves_from_freebind_home(world, tmp_path, monkeypatch):
    oc = world["open_clip"]
    registry = oc.pretrained._PRETRAINED
    monkeypatch.setitem(registry, "fbtest-tiny-ViT",
                        {"fbtag": {"hf_hub": "freebind-test/tiny-clip/",
                                   "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}})
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpaceError) as err:
        openclip.load(None, arch="fbtest-tiny-ViT", tag="fbtag")
    msg = str(err.value)
    assert "open_clip_model.safetensors" in msg and "freebind-test/tiny-clip" in msg
    assert str(tmp_path / "weights" / "open_clip" / "fbtest-tiny-ViT" / "fbtag") in msg
    dest = tmp_path / "weights" / "open_clip" / "fbtest-tiny-ViT" / "fbtag"
    dest.mkdir(parents=True)
    (dest / "open_clip_model.safetensors").write_bytes(world["ckpt"].read_bytes())
    space = openclip.load(None, arch="fbtest-tiny-ViT", tag="fbtag")
    assert space.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)  # the tag's own normalisation
    info = spaces.info("open_clip:fbtest-tiny-ViT/fbtag")
    assert info.dim == 16 and info.check()[0]


def test_family_resolver_and_aliases_without_loading():
    info = spaces.info("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert info.dim == 512 and info.modalities == ("image", "text")
    assert spaces.info("CLIP-L14").dim == 768
    with pytest.raises(SpaceError, match="unknown open_clip architecture"):
        spaces.info("open_clip:ViT-Nope/x")


def test_unknown_tag_lists_known_ones():
    with pytest.raises(SpaceError, match="no pretrained tag 'nope'.*laion2b_s34b_b79k"):
        openclip.load(None, arch="ViT-B-32", tag="nope")


def test_missing_real_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SpaceError, match="laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        spaces.get("CLIP-B32")


@pytest.mark.slow
def test_full_size_vit_b32_round_trip(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    oc = compat.require("open_clip", "open_clip")
    model = oc.create_model("ViT-B-32", pretrained=None)
    dest = tmp_path / "weights" / "open_clip" / "ViT-B-32" / "laion2b_s34b_b79k"
    dest.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(dest / "open_clip_model.safetensors"))
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    space = openclip.load(None, arch="ViT-B-32", tag="laion2b_s34b_b79k")
    assert space.encode("text", ["a dog"]).shape == (1, 512)


def test_decode_and_encode_halves_equal_encode(world, tmp_path):
    """EncoderAdapter's two halves (decode one item; encode decoded inputs), as an engine
    with a separate decoding stage runs them, give encode's rows; a bad file fails in the
    decoding half with its path."""
    from freebind.util.errors import MediaError

    space = world["space"]
    decoded = [space.decode_item("image", p) for p in world["images"]]
    assert torch.allclose(space.encode_decoded("image", decoded),
                          space.encode("image", world["images"]), atol=1e-6)
    texts = ["a photo of a dog", "a siren"]
    assert torch.allclose(space.encode_decoded("text", [space.decode_item("text", t)
                                                        for t in texts]),
                          space.encode("text", texts), atol=1e-6)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(MediaError, match="bad.png"):
        space.decode_item("image", bad)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_non_finite_output_is_never_returned(world, modality, monkeypatch, tmp_path):
    from nan_guard import assert_guarded

    items = world["images"] + [write_png(world["root"] / "c.png", 2)] \
        if modality == "image" else ["a dog", "a cat on a mat", "rain"]
    assert_guarded(monkeypatch, world["space"], modality, items, 0, tmp_path)
