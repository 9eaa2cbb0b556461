"""InternVL-C: permission for remote code and offline behaviour (no weights on this machine)."""

from __future__ import annotations

import pytest

import freebind.spaces as spaces
from tests.test_real_helpers import require_packages, write_png
from freebind.errors import SpaceError
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


# --- a tiny remote-code model in InternVL-C's interface ---------------------------------------
FAKE_REPO = {
    "configuration_fakevl.py": """\
from transformers import PretrainedConfig


class FakeVLConfig(PretrainedConfig):
    model_type = "fakevl"

    def __init__(self, dim=768, vocab=64, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.vocab = vocab
""",
    "modeling_fakevl.py": """\
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_fakevl import FakeVLConfig


class FakeVLModel(PreTrainedModel):
    config_class = FakeVLConfig

    def __init__(self, config):
        super().__init__(config)
        self.vision = nn.Linear(3 * 8 * 8, config.dim)
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.post_init()

    def _init_weights(self, module):
        pass

    def encode_image(self, image, mode):
        assert mode == "InternVL-C"
        x = nn.functional.adaptive_avg_pool2d(image, 8).flatten(1)
        return self.vision(x)

    def encode_text(self, text):
        mask = (text > 0).unsqueeze(-1).to(self.embed.weight.dtype)
        return (self.embed(text) * mask).sum(1) / mask.sum(1).clamp(min=1)
""",
    "tokenization_fakevl.py": """\
from transformers import PreTrainedTokenizer


class FakeVLTokenizer(PreTrainedTokenizer):
    vocab_files_names = {}

    def __init__(self, add_eos_token=False, **kwargs):
        self._vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2}
        for c in "abcdefghijklmnopqrstuvwxyz:":
            self._vocab[c] = len(self._vocab)
        self.add_eos_token = add_eos_token
        super().__init__(pad_token="<pad>", unk_token="<unk>", eos_token="</s>", **kwargs)

    @property
    def vocab_size(self):
        return len(self._vocab)

    def get_vocab(self):
        return dict(self._vocab)

    def _tokenize(self, text):
        return [c for c in text.lower() if c in self._vocab]

    def _convert_token_to_id(self, token):
        return self._vocab.get(token, 1)

    def _convert_id_to_token(self, index):
        return {v: k for k, v in self._vocab.items()}.get(index, "<unk>")

    def build_inputs_with_special_tokens(self, ids, ids2=None):
        return ids + ([2] if self.add_eos_token else [])

    def save_vocabulary(self, save_directory, filename_prefix=None):
        return ()
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
  "vocab": 64
}
""",
    "tokenizer_config.json": """\
{"tokenizer_class": "FakeVLTokenizer",
 "auto_map": {"AutoTokenizer": ["tokenization_fakevl.FakeVLTokenizer", null]}}
""",
    "preprocessor_config.json": """\
{"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 32, "width": 32},
 "size": {"shortest_edge": 32}, "do_center_crop": true, "do_normalize": true, "do_resize": true,
 "do_rescale": true, "rescale_factor": 0.00392156862745098, "resample": 3,
 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_convert_rgb": true}
""",
}


@pytest.fixture(scope="module")
def fake_internvl(tmp_path_factory):
    """A model folder whose classes are remote code (auto_map), with encode_image(mode=...) /
    encode_text like InternVL-14B-224px, a slow tokenizer and a CLIPImageProcessor."""
    require_packages("torch", "transformers")
    from freebind.spaces import compat

    compat.torchvision_if_present()
    from transformers import AutoConfig, AutoModel

    folder = tmp_path_factory.mktemp("fakevl")
    for name, text in FAKE_REPO.items():
        (folder / name).write_text(text)
    cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True)
    AutoModel.from_config(cfg, trust_remote_code=True).save_pretrained(str(folder))
    return folder


def test_internvl_c_recipe_through_remote_code(fake_internvl, tmp_path):
    import torch

    space = internvl.load(None, checkpoint=str(fake_internvl), trust_remote_code=True,
                          device="cpu", precision="fp32")
    ids = space.prepare("text", ["a dog"])
    assert ids.shape == (1, 80)
    # "summarize:" + "adog" + EOS, then pad id 0 (the toy tokenizer is per character)
    tok = space.tokenizer
    assert tok.convert_ids_to_tokens(ids[0, :15].tolist()) == list("summarize:adog") + ["</s>"]
    assert int(ids[0, 15:].max()) == 0
    texts = space.encode("text", ["a dog", "rain"])
    assert texts.shape == (2, 768)
    assert torch.allclose(texts.norm(dim=1), torch.ones(2), atol=1e-5)
    image = write_png(tmp_path / "x.png")
    out = space.encode("image", [image, image], batch_size=1)
    with torch.no_grad():
        pix = space.processor(images=[__import__("PIL.Image", fromlist=["open"]).open(image)
                                      .convert("RGB")], return_tensors="pt").pixel_values
        ref = torch.nn.functional.normalize(space.model.encode_image(pix, mode="InternVL-C"),
                                            dim=-1)
    assert torch.allclose(out, ref.expand(2, -1), atol=1e-5)
