"""LAION-CLAP adapter end to end on random-weight models (HTSAT-tiny audio tower, a small
RoBERTa text tower and a toy byte-level BPE tokenizer) through the real loading code.

The checkpoints are built and run by laion_clap's own code (the reference, tests only);
freebind loads them into transformers' ClapModel and must give the same embeddings."""

from __future__ import annotations

import pytest

from hub_cache import put_bytes
from real_helpers import require_packages, write_bpe_tokenizer, write_wav

require_packages("torch", "laion_clap", "torchlibrosa", "librosa", "transformers", "h5py")
import numpy as np  # noqa: E402
import torch  # noqa: E402

import clap_reference as ref  # noqa: E402

from freebind.util.errors import SpaceError  # noqa: E402
from freebind.spaces import clap  # noqa: E402

#: A small HTSAT (laion_clap's Swin audio tower with fewer, narrower layers).
SMALL = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])


def _save(model, path, wrap=True):
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 7, "name": "test"} if wrap else state, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("clap")
    vocab = write_bpe_tokenizer(root / "tok")
    text = dict(vocab_size=vocab, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=80)
    torch.manual_seed(0)
    fusion_model, _ = ref.build_model("HTSAT-tiny", True, text_config=text, htsat=SMALL)
    plain_model, _ = ref.build_model("HTSAT-tiny", False, text_config=text, htsat=SMALL)
    ckpts = {"fusion": _save(fusion_model.eval(), root / "fusion.pt"),
             "plain": _save(plain_model.eval(), root / "plain.pt", wrap=False)}
    audio = [write_wav(root / "short.wav", 2.5, 48000, 0),
             write_wav(root / "long.wav", 14.0, 22050, 1, channels=2),
             write_wav(root / "exact.wav", 10.0, 48000, 2)]
    spaces = {k: clap.load(None, checkpoint=str(v), tokenizer=str(root / "tok"),
                           text_config=text, htsat=SMALL, batch_size=2)
              for k, v in ckpts.items()}
    return dict(root=root, text=text, models={"fusion": fusion_model.eval(),
                                              "plain": plain_model.eval()},
                ckpts=ckpts, audio=audio, spaces=spaces)


@pytest.mark.parametrize("kind", ["fusion", "plain"])
def test_audio_embeddings_match_laion_clap_forward(world, kind):
    space, model = world["spaces"][kind], world["models"][kind]
    assert space.fusion == (kind == "fusion") and space.amodel == "HTSAT-tiny"
    out = space.encode("audio", world["audio"])
    assert out.shape == (3, 512) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    inputs = space.audio_inputs(world["audio"])
    with torch.no_grad():
        ref = model.get_audio_embedding([{k: v[i] for k, v in inputs.items()}
                                         for i in range(3)])
    assert torch.allclose(out, ref, atol=1e-5)
    # reproducible and independent of the batch it is in
    assert torch.allclose(space.encode("audio", world["audio"][1:2]), out[1:2], atol=1e-5)


def test_long_clip_uses_fusion_only_in_fusion_models(world):
    fused = world["spaces"]["fusion"].audio_inputs(world["audio"])
    plain = world["spaces"]["plain"].audio_inputs(world["audio"])
    assert fused["longer"].flatten().tolist() == [False, True, False]
    assert fused["mel_fusion"].shape == (3, 4, 1001, 64)
    assert "mel_fusion" not in plain and plain["waveform"].shape == (3, 480000)


def test_text_embeddings_match_and_tokens_are_roberta_layout(world):
    space, model = world["spaces"]["fusion"], world["models"]["fusion"]
    texts = ["a dog barks", "a car in the rain", ""]
    out = space.encode("text", texts)
    tokens = space.tokenize(texts)
    assert tokens["input_ids"].shape == (3, 77)
    assert tokens["input_ids"][0, 0] == 0 and tokens["input_ids"][0, -1] == 1  # <s> … <pad>
    with torch.no_grad():
        ref = model.get_text_embedding({k: v.clone() for k, v in tokens.items()})
    assert torch.allclose(out, ref, atol=1e-5)


def test_degenerate_tokenizer_is_refused(world, tmp_path):
    write_bpe_tokenizer(tmp_path / "bad", degenerate=True)  # 5 tokens, like laion_clap offline
    space = clap.load(None, checkpoint=str(world["ckpts"]["fusion"]),
                      tokenizer=str(tmp_path / "bad"), text_config=world["text"], htsat=SMALL)
    with pytest.raises(SpaceError, match="refusing to encode text.*5 tokens"):
        space.encode("text", ["a dog"])
    assert space.encode("audio", world["audio"][:1]).shape == (1, 512)  # audio still works


def test_missing_tokenizer_offline_refuses_text_only(world, tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    space = clap.load(None, checkpoint=str(world["ckpts"]["plain"]), text_config=world["text"],
                      htsat=SMALL)
    with pytest.raises(SpaceError, match="cannot encode text: tokenizer file vocab.json"):
        space.encode("text", ["a dog"])


def test_missing_checkpoint_offline_names_file_origin_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SpaceError) as err:
        clap.load(None, checkpoint="music_speech_audioset_epoch_15_esc_89.98.pt")
    msg = str(err.value)
    assert "music_speech_audioset_epoch_15_esc_89.98.pt" in msg
    assert "lukewys/laion_clap" in msg and str(tmp_path / "weights" / "clap") in msg


def test_published_name_with_wrong_architecture_is_refused(world, tmp_path):
    fake = tmp_path / "630k-audioset-fusion-best.pt"
    fake.write_bytes(world["ckpts"]["plain"].read_bytes())
    with pytest.raises(SpaceError, match="not the published checkpoint"):
        clap.load(None, checkpoint=str(fake), text_config=world["text"], htsat=SMALL)


def test_family_reference_resolves_and_loads(world):
    import freebind.spaces as spaces

    info = spaces.info(f"clap:{world['ckpts']['plain']}")
    assert info.dim == 512 and info.modalities == ("audio", "text")
    space = spaces.get(f"clap:{world['ckpts']['plain']}", text_config=world["text"],
                       htsat=SMALL, tokenizer=str(world["root"] / "tok"))
    assert space.fingerprint == world["spaces"]["plain"].fingerprint


@pytest.mark.slow
def test_full_size_clap_m_architecture_round_trip(tmp_path):
    model, _ = ref.build_model("HTSAT-base", False)
    ckpt = tmp_path / "music_speech_audioset_epoch_15_esc_89.98.pt"
    _save(model.eval(), ckpt)
    space = clap.load(None, checkpoint=str(ckpt), tokenizer=None)
    assert space.amodel == "HTSAT-base" and not space.fusion
    assert sum(p.numel() for p in space.model.parameters()) > 150_000_000
    clip = [write_wav(tmp_path / "clip.wav", 3.0, 48000, 3)]
    out = space.encode("audio", clip)
    inputs = space.audio_inputs(clip)
    with torch.no_grad():
        expected = model.get_audio_embedding([{k: v[0] for k, v in inputs.items()}])
    assert torch.allclose(out, expected, atol=1e-4)


@pytest.mark.slow
def test_full_size_clap_g_fusion_equals_laion_clap(tmp_path):
    model, _ = ref.build_model("HTSAT-tiny", True)
    ckpt = tmp_path / "630k-audioset-fusion-best.pt"
    _save(model.eval(), ckpt)
    space = clap.load(None, checkpoint=str(ckpt), tokenizer=None)
    assert space.amodel == "HTSAT-tiny" and space.fusion
    clips = [write_wav(tmp_path / "long.wav", 14.0, 48000, 4),
             write_wav(tmp_path / "short.wav", 4.0, 48000, 5)]
    out = space.encode("audio", clips)
    inputs = space.audio_inputs(clips)
    with torch.no_grad():
        expected = model.get_audio_embedding([{k: v[i] for k, v in inputs.items()}
                                              for i in range(2)])
    assert torch.allclose(out, expected, atol=1e-4)


def test_weights_come_from_the_hf_cache_after_freebind_home(world, tmp_path, monkeypatch):
    """Resolution order: FREEBIND_HOME first, then the library's cache (read, not written)."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = put_bytes(cache, "lukewys/laion_clap", "630k-best.pt",
                       world["ckpts"]["plain"].read_bytes())
    root = world["root"] / "tok"
    for name in ("vocab.json", "merges.txt"):
        put_bytes(cache, "FacebookAI/roberta-base", name, (root / name).read_bytes())
    space = clap.load(None, checkpoint="630k-best.pt", text_config=world["text"], htsat=SMALL)
    assert space.checkpoint == cached
    assert space.encode("text", ["a dog"]).shape == (1, 512)  # tokenizer from the HF cache
    # a file in FREEBIND_HOME wins over the library cache
    home = tmp_path / "home" / "weights" / "clap" / "630k-best.pt"
    home.parent.mkdir(parents=True)
    home.write_bytes(world["ckpts"]["plain"].read_bytes())
    again = clap.load(None, checkpoint="630k-best.pt", text_config=world["text"], htsat=SMALL)
    assert again.checkpoint == home


@pytest.mark.parametrize("kind", ["fusion", "plain"])
def test_conversion_maps_every_tensor_of_the_transformers_model(world, kind):
    """Every ClapModel tensor gets a LAION-CLAP tensor of the same shape, none is left over."""
    import transformers

    state = world["models"][kind].state_dict()
    converted = clap.convert_state_dict(state)
    target = transformers.ClapModel(clap.hf_config(state, "HTSAT-tiny", kind == "fusion",
                                                   world["text"], SMALL)).state_dict()
    buffers = {"text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids"}
    assert set(converted) == set(target) - buffers
    assert all(tuple(converted[k].shape) == tuple(target[k].shape) for k in converted)
    # the fused attention projection is split in order: query, key, value
    qkv = state["audio_branch.layers.0.blocks.0.attn.qkv.weight"]
    base = "audio_model.audio_encoder.layers.0.blocks.0.attention.self."
    assert torch.equal(torch.cat([converted[base + p + ".weight"]
                                  for p in ("query", "key", "value")]), qkv)


def test_non_fusion_mel_equals_laion_clap_in_model_spectrogram(world):
    """freebind computes the mel that laion_clap's non-fusion HTSAT computes inside (its
    torchlibrosa STFT and librosa Slaney filters, stored in the checkpoint)."""
    from freebind.spaces import audio_features as af

    branch = world["models"]["plain"].audio_branch
    banks = af.slaney_mel_banks(513, 50, 14000, 64, 48000)
    assert np.abs(banks - branch.logmel_extractor.melW.detach().numpy()).max() < 1e-7
    wave = world["spaces"]["plain"].audio_inputs(world["audio"])["waveform"]
    with torch.no_grad():
        expected = branch.logmel_extractor(branch.spectrogram_extractor(wave))
    ours = clap.slaney_mel_db(wave, af.CLAP_AUDIO_CFG)
    assert ours.shape == expected.shape == (3, 1, 1001, 64)
    # dB; float32 conv STFT against FFT. Bins within 80 dB of the loudest agree to 1e-3 dB
    # (measured 2.4e-4); the ones near float32's floor (the 22.05 kHz file resampled to 48 kHz
    # has nothing above 11 kHz: about -94 dB) only to 0.05 dB (measured 0.027)
    diff = (ours - expected).abs()
    assert diff[expected > expected.max() - 80].max() < 1e-3
    assert diff.max() < 0.05


def test_fusion_batch_of_short_clips_matches_laion_clap_eval_path(world):
    space, model = world["spaces"]["fusion"], world["models"]["fusion"]
    files = [world["audio"][0], world["audio"][2]]  # 2.5 s and exactly 10 s: nothing fused
    out = space.encode("audio", files)
    inputs = space.audio_inputs(files)
    assert not inputs["longer"].any()
    with torch.no_grad():
        ref_out = model.get_audio_embedding([{k: v[i] for k, v in inputs.items()}
                                             for i in range(2)])
    assert torch.allclose(out, ref_out, atol=1e-5)


def test_save_pretrained_folder_and_repo_id_load_directly(world, tmp_path, monkeypatch):
    """A transformers save_pretrained folder (what the hub's laion/* CLAP repositories hold)
    loads as is, its tokenizer files beside it; a repo id resolves from FREEBIND_HOME."""
    import shutil

    space = world["spaces"]["fusion"]
    folder = tmp_path / "home" / "weights" / "clap" / "laion--clap-tiny-test"
    space.model.save_pretrained(str(folder))
    for name in clap.TOKENIZER_FILES:
        shutil.copy(world["root"] / "tok" / name, folder / name)
    loaded = clap.load(None, checkpoint=str(folder))
    assert loaded.fusion and loaded.checkpoint == folder
    texts = ["a dog barks", "rain on a car"]
    assert torch.allclose(loaded.encode("audio", world["audio"]),
                          space.encode("audio", world["audio"]), atol=1e-6)
    assert torch.allclose(loaded.encode("text", texts), space.encode("text", texts), atol=1e-6)
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_id = clap.load(None, checkpoint="laion/clap-tiny-test")
    assert by_id.checkpoint == folder
    assert clap.check(spaces_info("clap:laion/clap-tiny-test"))[0]
    from freebind.spaces import prefetch

    assert prefetch("clap:laion/clap-tiny-test") == [folder]
    with pytest.raises(SpaceError, match="laion/clap-missing not found.*offline"):
        clap.load(None, checkpoint="laion/clap-missing")


def spaces_info(ref_name):
    import freebind.spaces as spaces

    return spaces.info(ref_name)


def test_runs_without_laion_clap_installed(world, tmp_path):
    """Loading and encoding never import laion_clap (blocked here in a fresh interpreter)."""
    import subprocess
    import sys

    expected = world["spaces"]["plain"].encode("audio", world["audio"][:2])
    texts = world["spaces"]["plain"].encode("text", ["a dog barks"])
    np.save(tmp_path / "audio.npy", expected.numpy())
    np.save(tmp_path / "text.npy", texts.numpy())
    script = f"""
import sys
sys.modules["laion_clap"] = None  # any import of it fails
import numpy as np, torch
from freebind.spaces import clap
space = clap.load(None, checkpoint={str(world["ckpts"]["plain"])!r},
                  tokenizer={str(world["root"] / "tok")!r}, text_config={world["text"]!r},
                  htsat={SMALL!r})
a = space.encode("audio", {[str(p) for p in world["audio"][:2]]!r})
t = space.encode("text", ["a dog barks"])
assert np.abs(a.numpy() - np.load({str(tmp_path / "audio.npy")!r})).max() < 1e-6
assert np.abs(t.numpy() - np.load({str(tmp_path / "text.npy")!r})).max() < 1e-6
assert not any(m.startswith("laion_clap") for m in sys.modules if sys.modules[m] is not None)
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_non_finite_output_is_never_returned(world, modality, monkeypatch, tmp_path):
    from nan_guard import assert_guarded

    items = world["audio"] if modality == "audio" else ["a dog barks", "rain", "a car"]
    assert_guarded(monkeypatch, world["spaces"]["plain"], modality, items, 2, tmp_path,
                   value=float("inf"))


def test_non_fusion_reads_only_the_centre_and_embeds_as_the_whole_file(world, tmp_path,
                                                                        monkeypatch):
    """A non-fusion model reads a long file's centre 10 s (seeking at 48 kHz, streamed
    through soxr at 22.05 kHz); a fusion model decodes it whole. Embeddings as the whole
    file decoded, bit for bit."""
    from freebind.spaces import audio_features as af

    files = [write_wav(tmp_path / "l48.wav", 23.0, 48000, 3), world["audio"][1],
             world["audio"][0]]
    seen = {}      # decoding threads: by file
    centre = af.clap_centre
    monkeypatch.setattr(af, "clap_centre",
                        lambda f, *a: seen.setdefault(str(f.where), centre(f, *a)))
    plain, fused = world["spaces"]["plain"], world["spaces"]["fusion"]
    seeking = plain.encode("audio", files)
    assert [seen[str(p)] is not None for p in files] == [True, True, False]   # 2.5 s: whole
    seen.clear()
    fused.encode("audio", files[:1])
    assert seen == {}                                               # fusion: never windowed
    monkeypatch.setattr(af, "clap_centre", lambda f, *a: None)
    assert torch.equal(plain.encode("audio", files), seeking)
