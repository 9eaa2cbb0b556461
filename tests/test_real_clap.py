"""LAION-CLAP adapter end to end on random-weight models (HTSAT-tiny audio tower, a small
RoBERTa text tower and a toy byte-level BPE tokenizer) through the real loading code.

The checkpoints are built and run by laion_clap's own code (the reference, tests only);
freebind loads them into transformers' ClapModel and must give the same embeddings."""

from __future__ import annotations

import pytest

from tests.test_real_helpers import require_packages, write_bpe_tokenizer, write_wav

require_packages("torch", "laion_clap", "torchlibrosa", "librosa", "transformers", "h5py")
import torch  # noqa: E402

from tests import clap_reference as ref  # noqa: E402

from freebind.errors import SpaceError  # noqa: E402
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


def _hf_cache_file(cache, repo, filename, data: bytes, rev="0" * 40):
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(rev)
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).write_bytes(data)
    return snap / filename


def test_weights_come_from_the_hf_cache_after_freebind_home(world, tmp_path, monkeypatch):
    """Resolution order: FREEBIND_HOME first, then the library's cache (read, not written)."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = _hf_cache_file(cache, "lukewys/laion_clap", "630k-best.pt",
                            world["ckpts"]["plain"].read_bytes())
    root = world["root"] / "tok"
    for name in ("vocab.json", "merges.txt"):
        _hf_cache_file(cache, "FacebookAI/roberta-base", name, (root / name).read_bytes())
    space = clap.load(None, checkpoint="630k-best.pt", text_config=world["text"], htsat=SMALL)
    assert space.checkpoint == cached
    assert space.encode("text", ["a dog"]).shape == (1, 512)  # tokenizer from the HF cache
    # a file in FREEBIND_HOME wins over the library cache
    home = tmp_path / "home" / "weights" / "clap" / "630k-best.pt"
    home.parent.mkdir(parents=True)
    home.write_bytes(world["ckpts"]["plain"].read_bytes())
    again = clap.load(None, checkpoint="630k-best.pt", text_config=world["text"], htsat=SMALL)
    assert again.checkpoint == home
