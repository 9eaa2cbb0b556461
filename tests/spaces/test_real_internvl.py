"""InternVL-C: permission for remote code and offline behaviour (no weights on this machine)."""

from __future__ import annotations

import pytest

import freebind.spaces as spaces
from real_helpers import require_packages, write_png
from freebind.util.errors import SpaceError
from freebind.spaces import internvl


def test_remote_code_needs_explicit_permission(monkeypatch):
    monkeypatch.delenv("FREEBIND_TRUST_REMOTE_CODE", raising=False)
    with pytest.raises(SpaceError, match="trust_remote_code=True"):
        spaces.info("InternVL").load()
    with pytest.raises(SpaceError, match="trust_remote_code"):
        internvl.load(None, trust_remote_code="false")


def test_missing_model_folder_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("FREEBIND_TRUST_REMOTE_CODE", "1")
    with pytest.raises(SpaceError) as err:
        internvl.load(None)
    msg = str(err.value)
    assert "OpenGVLab/InternVL-14B-224px" in msg
    assert str(tmp_path / "weights" / "internvl") in msg and "\n" not in msg
    assert not (tmp_path / "weights").exists()


def test_explicit_folder_must_be_a_model_folder(tmp_path):
    with pytest.raises(SpaceError, match="no config.json"):
        internvl.load(None, checkpoint=str(tmp_path), trust_remote_code=True)


def test_check_reports_without_importing_torch(tmp_path, monkeypatch):
    import subprocess
    import sys

    code = ("import sys, freebind.spaces as s; s.info('InternVL').check(); "
            "s.info('IB').check(); s.info('CLAP_g').check(); s.info('CLIP-B32').check(); "
            "s.info('minilm').check(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__('os').environ, "FREEBIND_HOME": str(tmp_path)})
    assert out.stdout.strip() == "False", out.stderr


# --- a tiny remote-code model with what matters of InternVL-14B-224px's published code -------
# Like the published modeling_internvl.py / modeling_qllama.py: the modeling file imports peft,
# timm and einops at module level; ``__init__`` leaves ``self.post_init()`` out; the text tower
# has rotary position tables built in ``__init__`` as *non-persistent* buffers (not in the
# checkpoint, so transformers 5's meta-device construction leaves them uninitialised); and
# ``encode_text`` pools the hidden state at ``attention_mask.sum(1) - 1`` through a causal,
# padding-masked attention. The tokenizer is transformers' own LlamaTokenizer over a
# sentencepiece model trained here.
FAKE_REPO = {
    "configuration_fakevl.py": """\
from transformers import PretrainedConfig


class FakeVLConfig(PretrainedConfig):
    model_type = "fakevl"

    def __init__(self, dim=768, vocab=64, width=16, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.vocab = vocab
        self.width = width
""",
    "modeling_fakevl.py": """\
import torch
from einops import rearrange
from peft import LoraConfig  # noqa: F401  (imported unconditionally, like the real code)
from timm.models.layers import DropPath  # noqa: F401
from torch import nn
from transformers import PreTrainedModel

from .configuration_fakevl import FakeVLConfig


class FakeRotary(nn.Module):
    # QLLaMA's FixedLlamaRotaryEmbedding: inv_freq a plain attribute, tables non-persistent
    def __init__(self, dim, max_position_embeddings=128, base=10000):
        super().__init__()
        self.dim = dim
        self.base = base
        self.inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.max_seq_len_cached = max_position_embeddings
        t = torch.arange(max_position_embeddings, dtype=torch.float32)
        emb = torch.cat([torch.outer(t, self.inv_freq)] * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos()[None, None, :, :], persistent=False)
        self.register_buffer("sin_cached", emb.sin()[None, None, :, :], persistent=False)

    def forward(self, x):
        n, half = x.shape[1], x.shape[-1] // 2
        cos = self.cos_cached[0, 0, :n].to(x.dtype)
        sin = self.sin_cached[0, 0, :n].to(x.dtype)
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class FakeVLModel(PreTrainedModel):
    config_class = FakeVLConfig

    def __init__(self, config):
        super().__init__(config)
        width = config.width
        self.vision = nn.Linear(3 * 8 * 8, config.dim)
        self.embed = nn.Embedding(config.vocab, width)
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width, bias=False)
        self.rotary = FakeRotary(width)
        self.text_projection = nn.Parameter(torch.empty(width, config.dim))
        # Initialize weights and apply final processing
        # self.post_init()

    def _init_weights(self, module):
        pass

    def encode_image(self, image, mode):
        assert mode == "InternVL-C"
        x = nn.functional.adaptive_avg_pool2d(image, 8)
        return self.vision(rearrange(x, "b c h w -> b (c h w)"))

    def encode_text(self, text):
        attention_mask = text > 0
        h = self.embed(text)
        q, k, v = self.rotary(self.q(h)), self.rotary(self.k(h)), self.v(h)
        n = text.shape[1]
        allowed = torch.ones(n, n, dtype=torch.bool, device=text.device).tril()[None]
        allowed = allowed & attention_mask[:, None, :]
        scores = (q @ k.transpose(1, 2)) / q.shape[-1] ** 0.5
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        h = h + scores.softmax(-1) @ v
        h = h[torch.arange(h.shape[0]), attention_mask.sum(1) - 1]
        return h @ self.text_projection
""",
    "config.json": """\
{
  "architectures": [
    "FakeVLModel"
  ],
  "auto_map": {
    "AutoConfig": "configuration_fakevl.FakeVLConfig",
    "AutoModel": "modeling_fakevl.FakeVLModel"
  },
  "dim": 768,
  "dtype": "float32",
  "model_type": "fakevl",
  "transformers_version": "5.24.0",
  "vocab": 64,
  "width": 16
}
""",
    # the keys of InternVL-14B-224px's tokenizer_config.json
    "tokenizer_config.json": """\
{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>",
 "unk_token": "<unk>", "pad_token": null, "sp_model_kwargs": {},
 "tokenizer_class": "LlamaTokenizer", "clean_up_tokenization_spaces": false}
""",
    "special_tokens_map.json": """\
{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
""",
    "preprocessor_config.json": """\
{"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 32, "width": 32},
 "size": {"shortest_edge": 32}, "do_center_crop": true, "do_normalize": true, "do_resize": true,
 "do_rescale": true, "rescale_factor": 0.00392156862745098, "resample": 3,
 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": true}
""",
}
CORPUS = ["a dog runs in the park", "a cat sleeps on the sofa", "rain falls on the city",
          "a red car drives down the road", "children play football on the grass",
          "the quick brown fox jumps over the lazy dog", "summarize: music at the concert"]
CAPTIONS = ["a dog", "the quick brown fox jumps over the lazy dog in the park", "rain",
            "children play football on the grass near a red car"]


def _train_sentencepiece(path) -> None:
    """A LLaMA-style sentencepiece model (BPE; unk 0, BOS 1, EOS 2, no pad) of 64 pieces."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10), model_writer=buf, vocab_size=64, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2)
    path.write_bytes(buf.getvalue())


def _fake_class(folder):
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True)
    return cfg, get_class_from_dynamic_module("modeling_fakevl.FakeVLModel", str(folder),
                                              local_files_only=True)


@pytest.fixture(scope="module")
def fake_internvl(tmp_path_factory):
    """A model folder whose classes are remote code (auto_map), with encode_image(mode=...) /
    encode_text like InternVL-14B-224px, a LLaMA tokenizer and a CLIPImageProcessor; seeded
    random weights saved with save_pretrained."""
    require_packages(*internvl.REQUIRED_MODULES)
    import torch

    from freebind.spaces import compat

    compat.torchvision_if_present()
    folder = tmp_path_factory.mktemp("fakevl")
    for name, text in FAKE_REPO.items():
        (folder / name).write_text(text)
    _train_sentencepiece(folder / "tokenizer.model")
    cfg, cls = _fake_class(folder)
    model = cls(cfg)  # built on the CPU, as transformers 4 did: every buffer computed
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    model.post_init()  # save_pretrained needs what post_init records
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def reference(fake_internvl):
    """The fake built directly on the CPU with the saved weights: the remote code as it runs
    where it was written (every buffer computed by ``__init__``)."""
    from safetensors.torch import load_file

    cfg, cls = _fake_class(fake_internvl)
    model = cls(cfg).eval()
    model.load_state_dict(load_file(str(fake_internvl / "model.safetensors")), strict=True)
    return model


@pytest.fixture(scope="module")
def fake_space(fake_internvl):
    return internvl.load(None, checkpoint=str(fake_internvl), trust_remote_code=True,
                         device="cpu", precision="fp32")


def test_internvl_c_recipe_through_remote_code(fake_internvl, fake_space, reference, tmp_path):
    import sentencepiece as spm
    import torch

    space = fake_space
    ids = space.prepare("text", ["a dog"])
    assert ids.shape == (1, 80)
    # BOS + sentencepiece("summarize:a dog") + EOS, then pad id 0 on the right
    pieces = spm.SentencePieceProcessor(model_file=str(fake_internvl / "tokenizer.model"))
    want = [1, *pieces.encode("summarize:a dog"), 2]
    assert ids[0, :len(want)].tolist() == want
    assert int(ids[0, len(want):].max()) == 0
    texts = space.encode("text", ["a dog", "rain"])
    assert texts.shape == (2, 768)
    assert torch.allclose(texts.norm(dim=1), torch.ones(2), atol=1e-5)
    image = write_png(tmp_path / "x.png")
    out = space.encode("image", [image, image], batch_size=1)
    with torch.no_grad():
        pix = space.processor(images=[__import__("PIL.Image", fromlist=["open"]).open(image)
                                      .convert("RGB")], return_tensors="pt").pixel_values
        ref = torch.nn.functional.normalize(reference.encode_image(pix, mode="InternVL-C"),
                                            dim=-1)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, ref.expand(2, -1), atol=1e-5)


def test_text_is_the_unpadded_reference_in_any_batch(fake_space, reference):
    """Finite, normalised, equal to the reference run on each caption's unpadded ids, and the
    same in a batch of mixed lengths as one at a time."""
    import torch

    space = fake_space
    assert space.tokenizer.padding_side == "right"
    batch = space.encode("text", CAPTIONS)
    assert torch.isfinite(batch).all()
    assert torch.allclose(batch.norm(dim=1), torch.ones(len(CAPTIONS)), atol=1e-5)
    single = torch.cat([space.encode("text", [c]) for c in CAPTIONS])
    assert (batch - single).abs().max() < 1e-5
    with torch.no_grad():
        refs = torch.cat([reference.encode_text(space.tokenizer(
            [internvl.TEXT_PREFIX + c], return_tensors="pt").input_ids) for c in CAPTIONS])
    refs = torch.nn.functional.normalize(refs, dim=-1)
    assert (batch - refs).abs().max() < 1e-5


def test_rotary_tables_are_recomputed_after_loading(fake_space, reference):
    import torch

    loaded, built = fake_space.model.rotary, reference.rotary
    assert torch.equal(loaded.cos_cached, built.cos_cached)
    assert torch.equal(loaded.sin_cached, built.sin_cached)
    assert torch.equal(loaded.inv_freq, built.inv_freq)
    assert hasattr(fake_space.model, "all_tied_weights_keys")


def test_bf16_text_is_finite(fake_internvl):
    import torch

    space = internvl.InternVLSpace(fake_internvl, device="cpu", precision="bf16")
    out = space.encode("text", CAPTIONS)
    assert torch.isfinite(out).all() and out.shape == (len(CAPTIONS), 768)


def _hide(monkeypatch, module: str) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] == module else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("module", ["peft", "google", "timm", "einops", "sentencepiece"])
def test_every_module_the_code_imports_is_required(module, fake_internvl, monkeypatch):
    _hide(monkeypatch, module)
    ok, detail = internvl.check()
    assert not ok and module in detail and "freebind[internvl]" in detail
    with pytest.raises(SpaceError, match=rf"not installed \({module}") as err:
        internvl.load(None, checkpoint=str(fake_internvl), trust_remote_code=True,
                      device="cpu", precision="fp32")
    assert "\n" not in str(err.value)


def test_the_internvl_extra_installs_every_required_module():
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extra = project["project"]["optional-dependencies"]["internvl"]
    declared = {re.split(r"[<>=!\[ ]", d)[0].lower() for d in
                [*extra, *project["project"]["dependencies"]]}
    dist = {"google.protobuf": "protobuf"}
    for module in internvl.REQUIRED_MODULES:
        assert dist.get(module, module) in declared, module


@pytest.mark.parametrize("modality", ["image", "text"])
def test_non_finite_output_is_never_returned(fake_space, modality, monkeypatch, tmp_path):
    from nan_guard import assert_guarded

    items = [write_png(tmp_path / f"{i}.png", i) for i in range(3)] if modality == "image" \
        else CAPTIONS[:3]
    assert_guarded(monkeypatch, fake_space, modality, items, 1, tmp_path)
