"""freebind's ImageBind (freebind.spaces.imagebind_model) against the reference implementation
(the imagebind-unofficial package, tests only): the same state-dict keys and shapes at full
size, and, with random weights, the same embeddings for all seven modalities."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from real_helpers import (TINY_IB, reference_imagebind,  # noqa: E402
                                     reference_tokenizer, require_packages)

require_packages("torch", "imagebind", "timm", "einops", "ftfy", "iopath", "regex")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from freebind.util.errors import SpaceError  # noqa: E402
from freebind.spaces import clip_bpe, imagebind, imagebind_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

#: Two blocks per trunk (so both the full blocks and the last block's one-token path run),
#: small widths, every head count > 1.
SMALL = dict(vision_embed_dim=48, vision_num_blocks=2, vision_num_heads=3,
             text_embed_dim=32, text_num_blocks=2, text_num_heads=2,
             audio_embed_dim=32, audio_num_blocks=2, audio_num_heads=4,
             depth_embed_dim=24, depth_num_blocks=2, depth_num_heads=2,
             thermal_embed_dim=32, thermal_num_blocks=3, thermal_num_heads=2,
             imu_embed_dim=16, imu_num_blocks=2, imu_num_heads=2, out_embed_dim=20)


def reference_on_meta(arch):
    """The reference model built on the meta device (its constructor reads one linspace
    with .item(), which meta tensors cannot answer: that one call runs on the CPU)."""
    ib = reference_imagebind()
    linspace = torch.linspace
    with torch.device("meta"), mock.patch.object(
            torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})):
        return ib.ImageBindModel(**arch)


def twin(arch, seed=0):
    """A seeded random reference model and freebind's model holding the same tensors."""
    torch.manual_seed(seed)
    ref = reference_imagebind().ImageBindModel(**arch).eval()
    # the reference initialises some tensors to constants; randomise everything so that
    # every parameter (biases, LayerNorms, logit scales) takes part in the comparison
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 0:                      # text's learned logit scale
                p.add_(0.3)
            elif p.ndim == 1 and name.endswith("weight"):   # LayerNorm gains
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:                    # biases
                p.copy_(0.05 * torch.randn_like(p))
    ours = imagebind_model.build(arch, device="meta")
    ours.load_state_dict(ref.state_dict(), assign=True, strict=True)
    return ref, ours.eval()


def text_ids(lengths, seed=0):
    """CLIP-layout ids: start, random word ids, end (the row's highest id), zero padding;
    a row of 77 is cut like the tokenizer cuts it (end in the last slot)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), 77, dtype=torch.long)
    for i, n in enumerate(lengths):
        n = min(n, 76)
        ids[i, 0] = 49406
        ids[i, 1:n] = torch.randint(1, 49400, (n - 1,), generator=g)
        ids[i, n] = 49407
    return ids


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {
        "image": ("vision", r(3, 3, 224, 224)),
        "video": ("vision", r(2, 3, 3, 2, 224, 224)),          # 2 items × 3 clips of 2 frames
        "text": ("text", text_ids([4, 17, 76, 1], seed)),
        "audio": ("audio", r(2, 3, 1, 128, 204)),               # 2 items × 3 clips
        "depth": ("depth", r(3, 1, 224, 224)),
        "thermal": ("thermal", r(2, 1, 224, 224)),
        "imu": ("imu", r(3, 6, 2000)),
    }


def assert_same_embeddings(a, b, tol=1e-4):
    assert a.shape == b.shape
    assert (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).abs().max() < tol
    assert ((a.norm(dim=-1) - b.norm(dim=-1)).abs() / b.norm(dim=-1)).max() < tol


def test_full_size_state_dict_has_every_key_and_shape_of_the_release():
    ref = reference_on_meta(imagebind_model.HUGE).state_dict()
    ours = imagebind_model.build(device="meta").state_dict()
    assert set(ours) == set(ref) and len(ref) == 1311
    assert {k: tuple(v.shape) for k, v in ours.items()} == \
        {k: tuple(v.shape) for k, v in ref.items()}
    # the same tensors are parameters on both sides (the rest are buffers)
    ref_params = {k for k, _ in reference_on_meta(imagebind_model.HUGE).named_parameters()}
    assert {k for k, _ in imagebind_model.build(device="meta").named_parameters()} == ref_params
    assert sum(v.numel() for v in ref.values()) > 1_200_000_000
    assert imagebind.HUGE == imagebind_model.HUGE     # the adapter's copy (no torch import)
    # the tiny architectures of the tests, too
    for arch in (SMALL, TINY_IB):
        a = reference_on_meta(arch).state_dict()
        b = imagebind_model.build(arch, device="meta").state_dict()
        assert {k: tuple(v.shape) for k, v in a.items()} == \
            {k: tuple(v.shape) for k, v in b.items()}


@pytest.fixture(scope="module")
def small():
    return twin(SMALL)


@pytest.mark.parametrize("modality", ["image", "video", "text", "audio", "depth", "thermal",
                                      "imu"])
def test_every_modality_equals_the_reference(small, modality):
    ref, ours = small
    tower, x = inputs()[modality]
    with torch.no_grad():
        expected = ref({tower: x})[tower]
        got = ours({tower: x})[tower]
    assert got.shape == (x.shape[0], SMALL["out_embed_dim"])
    assert_same_embeddings(got, expected)
    # rows differ, so the comparison is not between constants
    assert (F.normalize(got, dim=-1) @ F.normalize(got, dim=-1).T
            - torch.eye(len(got))).abs().max() < 0.9999


def test_text_rows_do_not_depend_on_their_batch(small):
    _, ours = small
    ids = text_ids([3, 60, 9], seed=4)
    with torch.no_grad():
        together = ours({"text": ids})["text"]
        alone = torch.cat([ours({"text": ids[i:i + 1]})["text"] for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_an_image_equals_its_two_frame_still_clip(small):
    _, ours = small
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        image = ours({"vision": x})["vision"]
        clip = ours({"vision": x[:, None, :, None].expand(-1, 1, -1, 2, -1, -1)})["vision"]
    assert torch.allclose(image, clip, atol=1e-5)


def test_logit_scales_and_normalisation(small):
    ref, ours = small
    with torch.no_grad():
        for modality, (tower, x) in inputs(1).items():
            if x.ndim >= 5:
                continue
            norms = ours({tower: x})[tower].norm(dim=-1)
            post = ours.modality_postprocessors[tower]
            scale = 1.0 if tower == "vision" else float(post[1].log_logit_scale.exp().clamp(
                max=100))
            assert torch.allclose(norms, torch.full_like(norms, scale), rtol=1e-5)
    fixed = {k: float(ours.modality_postprocessors[k][1].log_logit_scale.exp())
             for k in imagebind_model.LOGIT_SCALES}
    built = imagebind_model.ImageBind(**SMALL)
    assert {k: round(float(built.modality_postprocessors[k][1].log_logit_scale.exp()), 4)
            for k in fixed} == imagebind_model.LOGIT_SCALES
    assert built.modality_postprocessors["text"][1].log_logit_scale.requires_grad
    assert abs(float(built.modality_postprocessors["text"][1].log_logit_scale.detach().exp())
               - 1 / 0.07) < 1e-4


def test_bf16_stays_close_to_fp32(small):
    _, ours = small
    low = imagebind_model.build(SMALL, device="meta")
    low.load_state_dict(ours.state_dict(), assign=True)
    low = low.to(torch.bfloat16).eval()
    with torch.no_grad():
        for modality, (tower, x) in inputs(2).items():
            xl = x.to(torch.bfloat16) if x.is_floating_point() else x
            a = F.normalize(ours({tower: x})[tower], dim=-1)
            b = F.normalize(low({tower: xl})[tower].float(), dim=-1)
            assert F.cosine_similarity(a, b).min() > 0.98, modality


def test_wrong_input_shapes_are_clear_errors(small):
    _, ours = small
    with pytest.raises(ValueError, match="gives 64 patches; the model was built for 256"):
        ours({"vision": torch.randn(1, 3, 112, 112)})
    with pytest.raises(ValueError, match=r"text ids must be \[N, 77\]"):
        ours({"text": torch.zeros(1, 10, dtype=torch.long)})
    with pytest.raises(ValueError, match="IMU input"):
        ours({"imu": torch.randn(1, 6, 1000)})
    with pytest.raises(KeyError, match="unknown tower"):
        ours.embed("point", torch.zeros(1))


def test_tokenizer_equals_the_reference():
    texts = ["a dog barks", "", "Rain on a TIN roof!!", "café naïve 日本語 😀 emoji",
             "&amp;lt;b&amp;gt; it's 1234 o'clock  \n\t x", "word " * 100, "x",
             "don't we'll they've I'm", "ﬁve ﬂowers — “quoted” …", "mixed42numbers and CAPS"]
    ref = reference_tokenizer()(texts)
    vocab = next(p for p in clip_bpe.library_copies() if p.exists())
    ours = clip_bpe.ClipTokenizer(vocab)(texts)
    assert torch.equal(ours, ref)
    assert ours[1, :2].tolist() == [49406, 49407] and int(ours[5, 76]) == 49407


def test_vocabulary_is_resolved_checked_and_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    home = imagebind.vocab_file().home_path
    assert home == tmp_path / "home" / "weights" / "imagebind" / clip_bpe.VOCAB_FILE
    found = imagebind.vocab_file().find_local()
    assert found is not None and found.name == clip_bpe.VOCAB_FILE   # a library's copy
    home.parent.mkdir(parents=True)
    home.write_bytes(b"\x1f\x8b not a vocabulary")
    assert imagebind.vocab_file().find_local() == home                # FREEBIND_HOME first
    with pytest.raises(SpaceError, match="cannot read the BPE vocabulary") as err:
        clip_bpe.ClipTokenizer(home)
    assert str(home) in str(err.value) and "\n" not in str(err.value)
    home.unlink()
    monkeypatch.setattr(clip_bpe, "library_copies", lambda: [])
    with pytest.raises(SpaceError) as err:
        from freebind.spaces import weights

        weights.resolve(imagebind.vocab_file())
    msg = str(err.value)
    assert clip_bpe.VOCAB_FILE in msg and "github.com/openai/CLIP" in msg and "\n" not in msg


def test_the_adapter_never_imports_the_reference_package(tmp_path):
    """A tiny checkpoint written by freebind's own model, loaded and encoded (text, image,
    audio, IMU) in a fresh interpreter where importing imagebind, timm, einops, iopath,
    torchaudio, pytorchvideo or decord fails."""
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCK = {{"imagebind", "timm", "einops", "iopath", "torchaudio", "pytorchvideo",
                  "decord", "fvcore"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCK:
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        import numpy as np, torch
        from freebind.spaces import imagebind, imagebind_model
        sys.path.insert(0, r"{Path(__file__).resolve().parents[1] / 'support'}")
        from real_helpers import TINY_IB, write_png, write_wav
        torch.manual_seed(0)
        torch.save(imagebind_model.build(TINY_IB).state_dict(), r"{tmp_path}/ib.pth")
        space = imagebind.load(None, checkpoint=r"{tmp_path}/ib.pth", arch=TINY_IB)
        np.save(r"{tmp_path}/m.npy", np.random.default_rng(0).standard_normal((6, 2000)))
        out = [space.encode("text", ["a dog", "rain"]),
               space.encode("image", [write_png(r"{tmp_path}/a.png")]),
               space.encode("audio", [write_wav(r"{tmp_path}/a.wav", 3.0, 16000)]),
               space.encode("imu", [r"{tmp_path}/m.npy"])]
        assert all(o.shape[1] == 16 and torch.isfinite(o).all() for o in out)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
        print("OK", bad)
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("OK []"), res.stdout


@pytest.mark.slow
def test_full_size_every_modality_equals_the_reference():
    """ImageBind-huge with random weights (one copy of the weights: freebind's model holds
    the reference's tensors)."""
    ref, ours = twin(imagebind_model.HUGE, seed=3)
    with torch.no_grad():
        for modality, (tower, value) in inputs(5).items():
            value = value[:1, :2] if modality == "video" else value[:2]
            expected = ref({tower: value})[tower]
            got = ours({tower: value})[tower]
            assert got.shape == (value.shape[0], 1024)
            assert_same_embeddings(got, expected)


def test_inference_shortcuts_leave_inputs_and_results_alone(small):
    """The trunk adds residuals in place only without autograd, never into the caller's
    tensor; with autograd on (the plain path) the result is the same."""
    _, ours = small
    x = inputs(3)["depth"][1]
    tokens = ours.modality_preprocessors["depth"](x).detach()
    kept = tokens.clone()
    index = torch.zeros(len(x), dtype=torch.long)
    trunk = ours.modality_trunks["depth"]
    with torch.no_grad():
        fast = trunk(tokens, index)
    assert torch.equal(tokens, kept)
    plain = trunk(tokens, index)
    assert plain.requires_grad and torch.allclose(fast, plain.detach(), atol=1e-6)
