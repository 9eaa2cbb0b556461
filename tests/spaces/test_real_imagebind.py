"""ImageBind adapter end to end on a tiny random-weight ImageBindModel, through the real
loading code (checkpoint saved to disk, resolved, read with weights_only=True, loaded strictly)."""

from __future__ import annotations

import os

import pytest

from real_helpers import (  # noqa: E402
    TINY_IB, reference_imagebind, require_packages, save_tiny_imagebind, write_png, write_wav)

require_packages("torch", "imagebind", "timm", "einops", "ftfy", "iopath")
import torch  # noqa: E402

from freebind.util.errors import SpaceError  # noqa: E402
from freebind.spaces import audio_features as af  # noqa: E402
from freebind.spaces import imagebind, weights  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ib")
    model, ckpt = save_tiny_imagebind(root)
    media = {
        "audio": [write_wav(root / "a0.wav", 5.0, 16000, 0),
                  write_wav(root / "a1.wav", 0.7, 44100, 1, channels=2),   # short, stereo
                  write_wav(root / "a2.wav", 12.0, 8000, 2)],
        "image": [write_png(root / "i0.png", 0), write_png(root / "i1.png", 1, (300, 120))],
        "text": ["a dog barks", "rain on a tin roof", ""],
    }
    space = imagebind.load(None, checkpoint=str(ckpt), arch=TINY_IB, batch_size=2)
    return model, space, media, ckpt


@pytest.mark.parametrize("modality", ["audio", "image", "text"])
def test_encode_matches_the_model_on_its_own_preprocessing(tiny, modality):
    model, space, media, _ = tiny
    items = media[modality]
    out = space.encode(modality, items)
    assert out.dtype == torch.float32 and out.shape == (len(items), 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(len(items)), atol=1e-5)
    key = {"image": "vision"}.get(modality, modality)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model({key: space.prepare(modality, items)})[key],
                                            dim=-1)
    assert torch.allclose(out, ref, atol=1e-5)
    # batch size does not change the result
    assert torch.allclose(space.encode(modality, items, batch_size=1), out, atol=1e-5)


def test_audio_input_is_imagebind_layout(tiny):
    _, space, media, _ = tiny
    x = space.prepare("audio", media["audio"][:1])
    assert x.shape == (1, 3, 1, 128, 204)
    wave = __import__("freebind.data.media", fromlist=["load_audio"]).load_audio(media["audio"][0],
                                                                           16000)
    assert torch.equal(x[0], af.imagebind_audio(wave))


def test_text_tokens_start_and_end_like_clip(tiny):
    _, space, _, _ = tiny
    tok = space.prepare("text", ["a dog"])
    assert tok.shape == (1, 77)
    assert int(tok[0, 0]) == 49406 and 49407 in tok[0].tolist()


def test_unsupported_modality_and_empty_input(tiny):
    _, space, _, _ = tiny
    with pytest.raises(SpaceError, match="does not encode 'point'"):
        space.encode("point", ["x.ply"])
    assert space.encode("text", []).shape == (0, 16)


def test_fingerprint_depends_on_weights(tiny, tmp_path):
    _, space, _, _ = tiny
    ib = reference_imagebind()
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    torch.save(ib.ImageBindModel(**TINY_IB).state_dict(), other)
    again = imagebind.load(None, checkpoint=str(other), arch=TINY_IB)
    assert again.fingerprint != space.fingerprint
    assert imagebind.load(None, checkpoint=str(tiny[3]), arch=TINY_IB).fingerprint == \
        space.fingerprint


def test_missing_weights_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpaceError) as err:
        imagebind.load(None)
    msg = str(err.value)
    assert "imagebind_huge.pth" in msg and "dl.fbaipublicfiles.com" in msg
    assert str(tmp_path / "home" / "weights" / "imagebind") in msg
    assert "\n" not in msg
    assert list(tmp_path.iterdir()) == []  # nothing written into the CWD or FREEBIND_HOME


def test_freebind_home_is_found_before_downloading(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dest = tmp_path / "weights" / "imagebind" / "imagebind_huge.pth"
    dest.parent.mkdir(parents=True)
    os.symlink(tiny[3], dest)
    ok, detail = imagebind.check()
    assert ok and detail == str(dest)
    space = imagebind.load(None, arch=TINY_IB)
    assert space.fingerprint == tiny[1].fingerprint


def test_wrong_architecture_is_reported(tiny):
    arch = dict(TINY_IB, out_embed_dim=8)
    with pytest.raises(SpaceError, match="does not match the architecture"):
        imagebind.load(None, checkpoint=str(tiny[3]), arch=arch)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(SpaceError, match="holds Python objects") as err:
        weights.load_state_dict(bad)
    assert "weights_only" not in str(err.value) and "Re-running" not in str(err.value)


def test_registry_loads_ib_with_options(tiny):
    import freebind.spaces as spaces

    space = spaces.get("IB", checkpoint=str(tiny[3]), arch=TINY_IB)
    assert space.name == "IB" and space.dim == 16


def test_bf16_precision_runs_and_stays_close(tiny):
    model, space, media, ckpt = tiny
    low = imagebind.load(None, checkpoint=str(ckpt), arch=TINY_IB, precision="bf16")
    out = low.encode("text", media["text"])
    assert out.dtype == torch.float32
    ref = space.encode("text", media["text"])
    assert torch.nn.functional.cosine_similarity(out, ref).min() > 0.95
    with pytest.raises(SpaceError, match="fp16"):
        imagebind.load(None, checkpoint=str(ckpt), arch=TINY_IB, precision="fp16")


@pytest.mark.slow
def test_full_size_imagebind_huge_round_trip(tmp_path):
    ib = reference_imagebind()
    model = ib.ImageBindModel(**imagebind.HUGE).eval()
    n = sum(p.numel() for p in model.parameters())
    assert n > 1_000_000_000
    ckpt = tmp_path / "imagebind_huge.pth"
    torch.save(model.state_dict(), ckpt)
    del model
    space = imagebind.load(None, checkpoint=str(ckpt))
    out = space.encode("text", ["a dog barks"])
    assert out.shape == (1, 1024)


@pytest.mark.parametrize("modality", ["audio", "image", "text"])
def test_non_finite_output_is_never_returned(tiny, modality, monkeypatch, tmp_path):
    from nan_guard import assert_guarded

    _, space, media, _ = tiny
    assert_guarded(monkeypatch, space, modality, media[modality], 1, tmp_path)


def test_audio_reads_only_its_clips_and_embeds_as_the_whole_file(tiny, tmp_path, monkeypatch):
    """encode (the path of embed, serve and api) seeks to the three clips of a long file;
    the embeddings are those of the whole file decoded, bit for bit."""
    _, space, media, _ = tiny
    files = [write_wav(tmp_path / "l0.wav", 31.0, 44100, 3, channels=2), media["audio"][2],
             media["audio"][0]]
    seen = {}      # decoding threads: by file
    clips = af._imagebind_clips
    monkeypatch.setattr(af, "_imagebind_clips",
                        lambda f: seen.setdefault(str(f.where), clips(f)))
    seeking = space.encode("audio", files)
    assert [seen[str(p)] is not None for p in files] == [True, True, False]   # 5 s: overlap
    monkeypatch.setattr(af, "_imagebind_clips", lambda f: None)
    assert torch.equal(space.encode("audio", files), seeking)
