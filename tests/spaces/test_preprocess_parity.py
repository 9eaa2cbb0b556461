"""Preprocessing parity: freebind's model inputs equal the reference libraries' own
preprocessing of the same files, family by family, without weights.

Files are written here at several rates, lengths and sizes (short clips, odd sizes, stereo,
portrait and landscape, greyscale). The references are the libraries' own functions, made
importable by :mod:`preprocess_reference`: ImageBind's ``imagebind.data``, LAION-CLAP's
hook and ``get_audio_features``, open_clip's ``create_model_and_transforms`` and tokenizer,
and InternVL-C's model-card recipe on transformers' ``CLIPImageProcessor`` and LLaMA
tokenizer. The tolerances asserted here are the ones docs/real-spaces.md states.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from real_helpers import require_packages, write_png, write_wav

require_packages("torch", "soundfile", "PIL")
import torch  # noqa: E402

from freebind.data import media  # noqa: E402

#: |freebind − reference| on ImageBind's normalised fbank clips (units of its std 9.138):
#: measured ≤ 1.3e-5 at 8–48 kHz, mono and stereo (float32 rounding of the same arithmetic)
IB_AUDIO_ATOL = 5e-5
#: images: the same PIL/torchvision arithmetic, bit for bit
IMAGE_ATOL = 0.0


def _max_diff(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _images(root):
    """PNG/JPEG files of assorted sizes: landscape, portrait, odd, tiny, square, greyscale and
    RGBA (decoded to RGB by both sides)."""
    from PIL import Image

    paths = [write_png(root / "land.png", 0, (200, 300)),
             write_png(root / "port.png", 1, (513, 257)),
             write_png(root / "odd.png", 2, (223, 225)),
             write_png(root / "tiny.png", 3, (17, 31)),
             write_png(root / "square.png", 4, (224, 224))]
    rng = np.random.default_rng(5)
    grey = root / "grey.png"
    Image.fromarray((rng.random((301, 199)) * 255).astype(np.uint8), "L").save(grey)
    rgba = root / "rgba.png"
    Image.fromarray((rng.random((150, 260, 4)) * 255).astype(np.uint8), "RGBA").save(rgba)
    jpeg = root / "photo.jpg"
    Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(jpeg, quality=90)
    return paths + [grey, rgba, jpeg]


def _pil(path):
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


TEXTS = ["a dog barking", "", "Ünïcödé café — naïve façade 東京", "rain  on\ta   roof\n",
         "a very long caption " * 30, "A Car's ENGINE, starting!!! (loudly) #42"]


# --- ImageBind ---------------------------------------------------------------------------------
IB_AUDIO = [  # seconds, rate, channels: short (< one 2 s clip), exact, between, long, stereo
    (0.5, 16000, 1), (2.0, 16000, 1), (3.7, 16000, 1), (11.0, 16000, 1), (2.05, 16000, 1),
    (5.0, 44100, 1), (3.0, 8000, 1), (2.5, 48000, 2), (1.3, 22050, 1), (4.0, 16000, 2),
    (0.7, 44100, 2), (6.1, 11025, 1)]


@pytest.fixture(scope="module")
def ib(tmp_path_factory):
    require_packages("imagebind", "timm", "einops", "ftfy", "regex", "iopath")
    from preprocess_reference import imagebind_data
    from real_helpers import TINY_IB, save_tiny_imagebind

    from freebind.spaces import imagebind

    root = tmp_path_factory.mktemp("ib_parity")
    data = imagebind_data()
    _, ckpt = save_tiny_imagebind(root)
    return data, imagebind.load(None, checkpoint=str(ckpt), arch=TINY_IB), root


def test_preprocess_parity_imagebind(ib):
    """Audio (fbank clips), vision and text tokens against ``imagebind.data``."""
    data, space, root = ib
    logging.disable(logging.WARNING)   # the reference warns about padded short clips
    try:
        for i, (seconds, rate, channels) in enumerate(IB_AUDIO):
            path = write_wav(root / f"a{i}.wav", seconds, rate, i, channels=channels)
            ref = data.load_and_transform_audio_data([str(path)], "cpu")
            mine = space.prepare("audio", [path])
            assert ref.shape == mine.shape == (1, 3, 1, 128, 204)
            assert _max_diff(mine, ref) <= IB_AUDIO_ATOL, (seconds, rate, channels)
    finally:
        logging.disable(logging.NOTSET)
    images = _images(root)
    ref = data.load_and_transform_vision_data([str(p) for p in images], "cpu")
    mine = space.prepare("image", images)
    assert mine.shape == ref.shape == (len(images), 3, 224, 224)
    assert _max_diff(mine, ref) <= IMAGE_ATOL
    ref = data.load_and_transform_text(TEXTS, "cpu")
    mine = space.prepare("text", TEXTS)
    assert mine.shape == ref.shape == (len(TEXTS), 77)
    assert torch.equal(mine, ref)


# --- LAION-CLAP --------------------------------------------------------------------------------
#: mel dB of the fusion input (freebind's STFT against torchaudio's MelSpectrogram): measured
#: ≤ 1.2e-4 dB; the waveforms are equal bit for bit (same decoder, resampler, int16 round trip)
CLAP_MEL_ATOL = 5e-4
CLAP_AUDIO = [  # seconds, rate, channels: short, exactly 10 s, 10 s + 1 hop, long, resampled
    (0.4, 48000, 1), (2.5, 48000, 1), (10.0, 48000, 1), (10.004, 48000, 1), (13.0, 48000, 1),
    (25.0, 48000, 1), (5.0, 44100, 1), (3.0, 16000, 1), (2.0, 48000, 2), (14.0, 22050, 2)]


def test_preprocess_parity_clap(tmp_path):
    """Waveform, ``longer`` and fusion mels against LAION-CLAP's hook (librosa decoding and
    resampling, int16 round trip, ``get_audio_features``), fusion and non-fusion; tokens
    against the hook's tokenizer call."""
    require_packages("laion_clap", "librosa", "soxr", "transformers", "torchvision")
    from types import SimpleNamespace

    from preprocess_reference import clap_hook_audio, laion_clap_data
    from real_helpers import write_bpe_tokenizer

    from freebind.spaces import audio_features as af
    from freebind.spaces import clap

    data = laion_clap_data()
    cfg = dict(af.CLAP_AUDIO_CFG)
    for i, (seconds, rate, channels) in enumerate(CLAP_AUDIO):
        path = write_wav(tmp_path / f"a{i}.wav", seconds, rate, i, channels=channels)
        for fusion in (True, False):
            space = SimpleNamespace(audio_cfg=cfg, fusion=fusion, max_len=af.CLAP_MAX_SAMPLES)
            mine = clap.ClapSpace.audio_item(space, path)
            ref, wave = clap_hook_audio(path, fusion, cfg, seed=i)
            case = (seconds, rate, channels, fusion)
            if wave.shape[0] <= af.CLAP_MAX_SAMPLES:
                assert torch.equal(mine["waveform"], ref["waveform"]), case
            else:   # the reference crops at random; freebind at the centre of the same signal
                start = (wave.shape[0] - af.CLAP_MAX_SAMPLES) // 2
                assert torch.equal(mine["waveform"],
                                   wave[start:start + af.CLAP_MAX_SAMPLES]), case
            if not fusion:
                # a non-fusion model never reads `longer` (the reference sets it for a
                # randomly cropped long clip, freebind does not) nor mels
                assert "mel_fusion" not in mine
                continue
            assert bool(mine["longer"]) == bool(ref["longer"]), case
            got, want = mine["mel_fusion"], ref["mel_fusion"]
            assert got.shape == want.shape == (4, 1001, 64), case
            if not bool(ref["longer"]):
                assert _max_diff(got, want) <= CLAP_MEL_ATOL, case
                continue
            # long fusion clips: the whole clip squeezed (slot 0) equals the reference; the three
            # chunks are the reference's own mel at the middle of each of its random ranges
            assert _max_diff(got[0], want[0]) <= CLAP_MEL_ATOL, case
            full = data.get_mel(wave, cfg)
            chunk = af.CLAP_MAX_SAMPLES // cfg["hop_size"] + 1
            ranges = np.array_split(np.arange(0, full.shape[0] - chunk + 1), 3)
            for k, r in enumerate(ranges, start=1):
                s = int(r[(len(r) - 1) // 2])
                assert _max_diff(got[k], full[s:s + chunk]) <= CLAP_MEL_ATOL, (case, k)
    # tokens: the hook's `tokenizer` method against freebind's loading and call
    from transformers import RobertaTokenizer

    from preprocess_reference import laion_clap_hook

    folder = tmp_path / "tok"
    vocab = write_bpe_tokenizer(folder)
    hook = SimpleNamespace(tokenize=RobertaTokenizer.from_pretrained(str(folder)))
    ref = laion_clap_hook().CLAP_Module.tokenizer(hook, TEXTS)
    space = SimpleNamespace(_tokenizer=None, _tokenizer_source=str(folder), text_vocab=vocab,
                            name="CLAP")
    space.tokenizer = lambda: clap.ClapSpace.tokenizer(space)
    mine = clap.ClapSpace.tokenize(space, TEXTS)
    for key in ("input_ids", "attention_mask"):
        assert mine[key].shape == (len(TEXTS), 77)
        assert torch.equal(mine[key], ref[key]), key


# --- OpenCLIP ----------------------------------------------------------------------------------
#: tags whose evaluation transforms differ: CLIP mean/std and shortest-side resize at 224 and
#: at 256, SigLIP's 0.5 mean/std with a squash resize
OPENCLIP_TAGS = [("ViT-B-32", "laion2b_s34b_b79k", True), ("ViT-B-32-256", "datacomp_s34b_b86k",
                                                            True),
                 ("ViT-B-16-SigLIP", "webli", False)]


@pytest.mark.parametrize("arch, tag, text", OPENCLIP_TAGS)
def test_preprocess_parity_open_clip(tmp_path, monkeypatch, arch, tag, text):
    """Images against ``open_clip.create_model_and_transforms(arch, pretrained=tag)``'s own
    evaluation transform, tokens against ``open_clip.get_tokenizer(arch)``; the weights are
    never read (open_clip's download and checkpoint loading are stubbed on both sides, the
    architecture is built as usual)."""
    require_packages("open_clip", "timm", "ftfy", "regex")
    from freebind.spaces import compat, openclip

    oc = compat.require("open_clip", "open_clip")
    factory = __import__("open_clip.factory", fromlist=["load_checkpoint"])
    monkeypatch.setattr(factory, "download_pretrained", lambda *a, **k: "weights-not-read")
    monkeypatch.setattr(factory, "load_checkpoint", lambda *a, **k: None)
    monkeypatch.setattr(oc, "load_checkpoint", lambda *a, **k: None)
    logging.disable(logging.WARNING)
    try:
        _, _, preprocess = oc.create_model_and_transforms(arch, pretrained=tag)
        dummy = tmp_path / "weights.bin"
        dummy.write_bytes(b"not read")
        space = openclip.OpenClipSpace(dummy, arch=arch, tag=tag,
                                       pretrained_cfg=oc.get_pretrained_cfg(arch, tag))
    finally:
        logging.disable(logging.NOTSET)
    images = _images(tmp_path)
    ref = torch.stack([preprocess(_pil(p)) for p in images])
    mine = space.prepare("image", images)
    size = space.preprocess_cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    assert size == ((256, 256) if arch.endswith("256") else (224, 224))
    assert mine.shape == ref.shape == (len(images), 3, *size)
    assert _max_diff(mine, ref) <= IMAGE_ATOL
    if text:   # SigLIP's tokenizer is a Hugging Face download (not available offline)
        assert torch.equal(space.prepare("text", TEXTS), oc.get_tokenizer(arch)(TEXTS))


# --- InternVL-C --------------------------------------------------------------------------------
#: InternVL-14B-224px's preprocessor_config.json (CLIPImageProcessor, 224 px, bicubic,
#: ImageNet mean/std)
INTERNVL_PREPROCESSOR = """\
{"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
 "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
 "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 224}
"""


def test_preprocess_parity_internvl(tmp_path_factory):
    """Pixels and token ids against the model card's InternVL-C recipe (its
    ``CLIPImageProcessor`` and ``AutoTokenizer(use_fast=False, add_eos_token=True)``,
    ``pad_token_id = 0``, ``'summarize:'`` prefix, 80 tokens, padding on the right as under
    transformers 4, where the card was written), on a model folder laid out like
    InternVL-14B-224px (remote code, LLaMA sentencepiece tokenizer, the published processor
    configuration) with a tiny random model."""
    from freebind.spaces import internvl

    require_packages(*internvl.REQUIRED_MODULES)
    from tests.spaces import test_real_internvl as tiv

    folder = tiv.fake_internvl.__wrapped__(tmp_path_factory)
    (folder / "preprocessor_config.json").write_text(INTERNVL_PREPROCESSOR)
    space = internvl.load(None, checkpoint=str(folder), trust_remote_code=True, device="cpu",
                          precision="fp32")
    from transformers import AutoTokenizer, CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(folder))
    images = _images(tmp_path_factory.mktemp("internvl_images"))
    ref = processor(images=[_pil(p) for p in images], return_tensors="pt").pixel_values
    mine = space.prepare("image", images)
    assert mine.shape == ref.shape == (len(images), 3, 224, 224)
    assert _max_diff(mine, ref) <= IMAGE_ATOL
    tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=False, add_eos_token=True,
                                              trust_remote_code=True)
    tokenizer.pad_token_id = 0
    tokenizer.padding_side = "right"
    ref = tokenizer(["summarize:" + t for t in TEXTS], return_tensors="pt", max_length=80,
                    truncation=True, padding="max_length").input_ids
    mine = space.prepare("text", TEXTS)
    assert mine.shape == ref.shape == (len(TEXTS), 80)
    assert torch.equal(mine, ref)
    # and the layout the recipe implies, independently of transformers: BOS, the pieces of
    # the prefixed text, EOS, then zeros
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    want = [1, *pieces.encode("summarize:" + TEXTS[0]), 2]
    assert mine[0].tolist() == want + [0] * (80 - len(want))
