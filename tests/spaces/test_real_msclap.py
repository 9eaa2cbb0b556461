"""MS-CLAP (``msclap:2023``, ``msclap:2022``) end to end against msclap's own code.

msclap's model (``msclap/models``, imported past the package's torchaudio-importing
``__init__``) is built as ``CLAPWrapper.load_clap`` builds it, from the release's YAML: the
audio towers at their released sizes (HTSAT-tiny, CNN14), the text towers small (one layer,
the released width 768, which msclap's projection assumes; a random GPT-2 / BERT saved in
a folder, with a toy tokenizer in the same folder), random weights and BatchNorm statistics.
Its state dict, saved as the release wraps it (``{'model': ...}``), is loaded by freebind.
The reference embeddings are CLAPWrapper's own ``get_audio_embeddings(files, resample=True)``
and ``get_text_embeddings`` (compiled from its source; audio read and resampled by
torchaudio's own Python code): file → waveform → mel → tower → projection on both sides."""

from __future__ import annotations

import json

import pytest

from hub_cache import put_bytes
from real_helpers import bytes_to_unicode, require_packages, write_wav

require_packages("torch", "msclap", "torchlibrosa", "transformers", "yaml", "soundfile")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import msclap_reference as ref  # noqa: E402

from freebind.spaces import compat  # noqa: E402

compat.torchvision_if_present()  # transformers imports torchvision when it is installed

from freebind.util.errors import SpaceError  # noqa: E402
from freebind.spaces.families import msclap  # noqa: E402

WORDS = ["a", "dog", "is", "barking", "while", "rain", "falls", "on", "metal", "roof", "the",
         "car", "passes", "by", "loud", "music"]
MERGES = ["d o", "do g", "Ġ do", "Ġdo g", "b a", "r k", "ba rk", "Ġ ba", "Ġba rk", "r a",
          "ra i", "rai n", "Ġ rai", "Ġrai n", "Ġ r", "o o", "Ġr oo", "Ġroo f"]
TEXTS = ["a dog is barking", "rain falls on a metal roof while the car passes by!",
         "loud music", "a " * 100]


def gpt2_folder(root):
    """A small random GPT-2 and a byte-level BPE tokenizer ('!' is id 0, as in GPT-2)."""
    from transformers import GPT2Config, GPT2Model

    folder = root / "gpt2"
    folder.mkdir()
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode())}
    for m in MERGES:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    cfg = dict(vocab_size=len(vocab), n_positions=128, n_embd=768, n_layer=1, n_head=12,
               bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)
    torch.manual_seed(1)
    GPT2Model(GPT2Config(**cfg)).save_pretrained(folder)
    return folder, cfg


def bert_folder(root):
    from transformers import BertConfig, BertModel

    folder = root / "bert"
    folder.mkdir()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "!", "."] + WORDS + ["##s", "##ing"]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    cfg = dict(vocab_size=len(tokens), hidden_size=768, num_hidden_layers=1,
               num_attention_heads=12, intermediate_size=256, max_position_embeddings=128)
    torch.manual_seed(2)
    BertModel(BertConfig(**cfg)).save_pretrained(folder)
    return folder, cfg


def _reference(version, folder, root):
    from transformers import AutoTokenizer

    torch.manual_seed(3)
    model = ref.build_clap(version, folder)
    with torch.no_grad():  # non-trivial BatchNorm statistics (eval mode uses them)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.5)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if "gpt" in ref.config(version).text_model:
        tokenizer.add_special_tokens({"pad_token": "!"})
    path = root / msclap.VERSIONS[version]["file"]
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 41}, path)
    return ref.Wrapper(version, model, tokenizer), path


@pytest.fixture(scope="module", params=["2023", "2022"])
def world(request, tmp_path_factory):
    version = request.param
    root = tmp_path_factory.mktemp(f"msclap{version}")
    folder, text_cfg = (gpt2_folder if version == "2023" else bert_folder)(root)
    wrapper, ckpt = _reference(version, folder, root)
    audio = [write_wav(root / "short.wav", 2.3, 44100, 0),
             write_wav(root / "resampled.wav", 3.0, 22050, 1),
             write_wav(root / "exact.wav", msclap.VERSIONS[version]["duration"], 44100, 2)]
    space = msclap.load(None, version=version, checkpoint=str(ckpt), tokenizer=str(folder),
                        text_config=text_cfg, batch_size=2)
    return dict(version=version, wrapper=wrapper, ckpt=ckpt, audio=audio, space=space,
                folder=folder, text_cfg=text_cfg, root=root)


def test_audio_embeddings_equal_msclap_wrapper(world):
    out = world["space"].encode("audio", world["audio"])
    with torch.no_grad():
        expected = world["wrapper"].get_audio_embeddings([str(p) for p in world["audio"]],
                                                         resample=True)
    expected = torch.nn.functional.normalize(expected.float(), dim=-1)
    assert out.shape == (3, msclap.DIM)
    assert (out - expected).abs().max().item() <= 1e-5


def test_waveform_and_mel_equal_msclap(world):
    """Same waveform as the wrapper's ``preprocess_audio`` (repeat-pad, resampling) and the
    same log mel as the tower's own torchlibrosa extractors."""
    space, wrapper = world["space"], world["wrapper"]
    waves = torch.stack([space.audio_item(p) for p in world["audio"]])
    expected = wrapper.preprocess_audio([str(p) for p in world["audio"]], True)[:, 0]
    assert waves.shape == expected.shape
    assert (waves - expected).abs().max().item() <= 1e-6
    base = wrapper.clap.audio_encoder.base
    tower = base.htsat if world["version"] == "2023" else base
    with torch.no_grad():
        mel_ref = tower.logmel_extractor(tower.spectrogram_extractor(expected))
    mel = space.log_mel(expected)
    assert mel.shape == mel_ref.shape
    # torchlibrosa's STFT is a float32 convolution, freebind's torch.stft: they differ by
    # float32 rounding, amplified by the log in the quietest bins (measured max 1.9e-3 dB)
    diff = (mel - mel_ref).abs()
    assert diff.max().item() <= 5e-3 and diff.mean().item() <= 1e-4


def test_text_embeddings_equal_msclap_wrapper(world):
    short = TEXTS[:3]
    out = world["space"].encode("text", short)
    with torch.no_grad():
        expected = world["wrapper"].get_text_embeddings(short)
    expected = torch.nn.functional.normalize(expected.float(), dim=-1)
    assert (out - expected).abs().max().item() <= 1e-5
    ids = world["space"].tokenize(short)["input_ids"]
    assert torch.equal(ids, world["wrapper"].preprocess_text(short)["input_ids"])


def test_long_text_is_cut_to_the_release_length(world):
    space = world["space"]
    length = msclap.VERSIONS[world["version"]]["text_len"]
    ids = space.tokenize([TEXTS[3]])["input_ids"]
    assert ids.shape == (1, length)
    tok = space.tokenizer()
    assert int(ids[0, -1]) == (tok.convert_tokens_to_ids("<|endoftext|>")
                               if world["version"] == "2023" else tok.sep_token_id)


def test_long_clip_equals_msclap_cropping_at_the_centre(world):
    """A clip longer than the release's duration (11.3 s at 22.05 kHz, mono: for stereo,
    freebind averages the channels where msclap concatenates them): msclap's own path with
    its random crop start fixed at the centre equals freebind's."""
    long = write_wav(world["root"] / "long.wav", 11.3, 22050, 3)
    wrapper = ref.Wrapper(world["version"], world["wrapper"].clap, rng=ref.CentreCrop)
    with torch.no_grad():
        expected = wrapper.get_audio_embeddings([str(long)], resample=True)
    out = world["space"].encode("audio", [long])
    expected = torch.nn.functional.normalize(expected.float(), dim=-1)
    assert (out - expected).abs().max().item() <= 1e-5


def test_long_clip_is_centre_cropped():
    wave = np.arange(10, dtype=np.float32)
    assert msclap.fit_duration(wave, 4).tolist() == [3, 4, 5, 6]
    assert msclap.fit_duration(wave[:3], 7).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_reference_resolves_without_weights_and_loads(world):
    import freebind.spaces as spaces

    info = spaces.info(f"msclap:{world['version']}")
    assert (info.dim, info.modalities, info.family) == (1024, ("audio", "text"), "msclap")
    assert info.licence == "MS-PL"  # microsoft/msclap's model card (the package's code: MIT)
    path_ref = spaces.info(f"msclap:{world['ckpt']}")
    assert dict(path_ref.options)["version"] == world["version"]
    space = msclap.load(path_ref, tokenizer=str(world["folder"]), text_config=world["text_cfg"])
    assert torch.allclose(space.encode("audio", world["audio"][:1]),
                          world["space"].encode("audio", world["audio"][:1]), atol=1e-6)


def test_wrong_release_and_foreign_file_are_refused(world, tmp_path):
    other = "2022" if world["version"] == "2023" else "2023"
    with pytest.raises(SpaceError, match="not the .* release"):
        msclap.load(None, version=other, checkpoint=str(world["ckpt"]))
    bad = tmp_path / "x.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, bad)
    with pytest.raises(SpaceError, match="not an MS-CLAP checkpoint"):
        msclap.load(None, version=world["version"], checkpoint=str(bad))


def test_missing_weights_offline_names_the_release_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SpaceError, match="CLAP_weights_2023.pth.*microsoft/msclap"):
        msclap.load(None, version="2023")


def test_release_and_tokenizer_found_in_hf_cache_then_freebind_home(world, tmp_path,
                                                                     monkeypatch):
    """``msclap:2023`` with no path: the release file and the tokenizer files come from the
    Hugging Face cache (where msclap's own download puts them), FREEBIND_HOME winning;
    pre-flight and ``freebind download`` (offline) find the same files."""
    import huggingface_hub.constants as hf_constants

    import freebind.spaces as spaces

    version, cfg = world["version"], msclap.VERSIONS[world["version"]]
    cache = tmp_path / "hub"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = put_bytes(cache, "microsoft/msclap", cfg["file"], world["ckpt"].read_bytes())
    for name in cfg["tokenizer_files"]:
        put_bytes(cache, msclap.TOKENIZER_ALIASES[cfg["tokenizer_repo"]][1], name,
                  (world["folder"] / name).read_bytes())
    info = spaces.info(f"msclap:{version}")
    ok, detail = msclap.check(info)
    assert ok and detail == str(cached)
    assert msclap.fetch(info)[0] == cached
    space = msclap.load(info, text_config=world["text_cfg"])
    assert space.checkpoint == cached
    assert torch.allclose(space.encode("text", TEXTS[:2]), world["space"].encode("text", TEXTS[:2]),
                          atol=1e-6)
    home = tmp_path / "home" / "weights" / "msclap" / cfg["file"]
    home.parent.mkdir(parents=True)
    home.write_bytes(world["ckpt"].read_bytes())
    assert msclap.load(info, text_config=world["text_cfg"]).checkpoint == home


def test_pooled_token_of_a_text_holding_an_exclamation_mark(world):
    """2023: '!' is GPT-2's id 0, MS-CLAP's pad, so the pooling index (ids != 0) - 1 falls
    one token before the end token for such a text (as upstream; the equality test above
    covers it). 2022: BERT pools ``[CLS]``, first, with token types all 0."""
    enc = world["space"].tokenize(TEXTS[1:2])
    real = int(enc["attention_mask"].sum())
    if world["version"] == "2023":
        assert int(torch.ne(enc["input_ids"], 0).sum()) - 1 == real - 2
    else:
        assert int(enc["input_ids"][0, 0]) == world["space"].tokenizer().cls_token_id
        assert not enc["token_type_ids"].any()


def test_runs_without_msclap_importable(world):
    """Loading and encoding never import msclap (blocked here in a fresh interpreter)."""
    import subprocess
    import sys

    code = f"""
import sys
sys.modules["msclap"] = None
from freebind.spaces.families import msclap
s = msclap.load(None, version={world['version']!r}, checkpoint={str(world['ckpt'])!r},
                tokenizer={str(world['folder'])!r}, text_config={world['text_cfg']!r})
a = s.encode("audio", [{str(world['audio'][0])!r}])
print(tuple(s.encode("text", ["a dog"]).shape), tuple(a.shape))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(1, 1024) (1, 1024)")
