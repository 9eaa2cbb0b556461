"""Tiny random-weight transformers embedding models saved with their own processors, built
offline: every tokenizer is made here from a small vocabulary (byte-level BPE, WordPiece,
Unigram, or a SentencePiece model trained on a few sentences), never downloaded.

``save(kind, folder)`` writes ``config.json``, the weights and the processor files and
returns ``(model, processor)``: the library's own objects, the tests' reference."""

from __future__ import annotations

from pathlib import Path

from real_helpers import bytes_to_unicode

WORDS = ("a dog is barking while rain falls on a metal roof the cat sleeps near car "
         "engine music plays loud birds sing in morning quiet street people talk").split()
CORPUS = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
TINY_TEXT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                 num_attention_heads=2)
TINY_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                   num_attention_heads=2, image_size=32, patch_size=8)
KINDS = ("clip", "siglip", "siglip2", "metaclip_2", "altclip", "chinese_clip", "align",
         "clap", "xclip")


def _t():
    from freebind.spaces import compat

    return compat.require("transformers", "transformers")


# --- tokenizers ------------------------------------------------------------------------------
def clip_bpe():
    """A CLIP-style byte-level BPE (``</w>`` word ends) over the corpus' words."""
    chars = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = []
    for w in sorted(set(WORDS)):
        cur = w[0]
        for j, ch in enumerate(w[1:], 1):
            nxt = ch + ("</w>" if j == len(w) - 1 else "")
            merges.append((cur, nxt))
            cur = cur + nxt
            vocab.setdefault(cur, len(vocab))
    merges = list(dict.fromkeys(merges))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return _t().CLIPTokenizer(vocab=vocab, merges=merges)


def _word_merges(vocab: dict, prefix: str) -> list:
    """The BPE merges spelling each corpus word (``prefix`` + word) left to right, every
    partial word added to ``vocab``."""
    merges = []
    for w in sorted(set(WORDS)):
        w = prefix + w
        cur = w[0]
        for ch in w[1:]:
            merges.append((cur, ch))
            cur += ch
            vocab.setdefault(cur, len(vocab))
    return list(dict.fromkeys(merges))


def roberta_bpe():
    chars = bytes_to_unicode()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    merges = _word_merges(vocab, "Ġ")
    vocab["<mask>"] = len(vocab)
    return _t().RobertaTokenizer(vocab=vocab, merges=merges)


def wordpiece():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                         *sorted(set(WORDS)), *"abcdefghijklmnopqrstuvwxyz",
                                         *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]])}
    return _t().BertTokenizer(vocab=vocab)


def unigram():
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in sorted(set(WORDS))]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz▁"]
    pieces.append(("<mask>", 0.0))
    return _t().XLMRobertaTokenizer(vocab=pieces)


def gemma_bpe():
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    for c in "abcdefghijklmnopqrstuvwxyz▁":
        vocab.setdefault(c, len(vocab))
    return _t().Siglip2Tokenizer(vocab=vocab, merges=_word_merges(vocab, "▁"))


def sentencepiece(folder: Path):
    """A SentencePiece model trained on the corpus (SigLIP's tokenizer reads one)."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(CORPUS * 4), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "spm"),
                                   vocab_size=80, model_type="unigram", pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, minloglevel=2,
                                   hard_vocab_limit=False)
    text.unlink()
    return _t().SiglipTokenizer(vocab_file=str(folder / "spm.model"))


# --- models ----------------------------------------------------------------------------------
def _clip_image():
    return _t().CLIPImageProcessor(size={"shortest_edge": 32},
                                   crop_size={"height": 32, "width": 32})


def build(kind: str, scratch: Path):
    """``(model, processor)`` of a tiny random-weight ``kind``, seeded."""
    import torch

    t = _t()
    torch.manual_seed(0)
    if kind in ("clip", "xclip"):
        tok = clip_bpe()
    elif kind == "siglip":
        tok = sentencepiece(scratch / "spm")
    elif kind == "siglip2":
        tok = gemma_bpe()
    elif kind in ("metaclip_2", "altclip"):
        tok = unigram()
    elif kind in ("chinese_clip", "align"):
        tok = wordpiece()
    else:
        tok = roberta_bpe()
    text = dict(TINY_TEXT, vocab_size=len(tok), max_position_embeddings=80)
    return BUILDERS[kind](t, tok, text)


def _ids(tok) -> dict:
    return {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("bos", "eos", "pad")}


def _clip(t, tok, text, arch: str = "CLIP"):
    """A CLIP-layout model (``arch``: the transformers class prefix) with CLIP's processor."""
    cfg = getattr(t, f"{arch}Config")(text_config=dict(text, **_ids(tok)),
                                      vision_config=TINY_VISION, projection_dim=16)
    return getattr(t, f"{arch}Model")(cfg).eval(), t.CLIPProcessor(
        image_processor=_clip_image(), tokenizer=tok)


def _siglip(t, tok, text):
    cfg = t.SiglipConfig(text_config=dict(text, max_position_embeddings=64, **_ids(tok)),
                         vision_config=TINY_VISION)
    proc = t.SiglipProcessor(image_processor=t.SiglipImageProcessor(
        size={"height": 32, "width": 32}), tokenizer=tok)
    return t.SiglipModel(cfg).eval(), proc


def _siglip2(t, tok, text):
    # Siglip2Processor's own defaults (16-pixel patches, at most 256) apply to images
    vision = dict(TINY_VISION, num_patches=256, patch_size=16)
    vision.pop("image_size")
    cfg = t.Siglip2Config(text_config=dict(text, max_position_embeddings=64, **_ids(tok)),
                          vision_config=vision)
    proc = t.Siglip2Processor(image_processor=t.Siglip2ImageProcessor(
        patch_size=16, max_num_patches=256), tokenizer=tok)
    return t.Siglip2Model(cfg).eval(), proc


def _metaclip2(t, tok, text):
    return _clip(t, tok, text, "MetaClip2")


def _altclip(t, tok, text):
    tcfg = dict(text, project_dim=16, pad_token_id=tok.pad_token_id,
                max_position_embeddings=90)
    cfg = t.AltCLIPConfig(text_config=tcfg, vision_config=TINY_VISION, projection_dim=16)
    return t.AltCLIPModel(cfg).eval(), t.AltCLIPProcessor(image_processor=_clip_image(),
                                                           tokenizer=tok)


def _chinese_clip(t, tok, text):
    cfg = t.ChineseCLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16)
    proc = t.ChineseCLIPProcessor(image_processor=t.ChineseCLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok)
    return t.ChineseCLIPModel(cfg).eval(), proc


def _align(t, tok, text):
    vision = dict(image_size=32, hidden_dim=64, num_channels=3, width_coefficient=1.0,
                  depth_coefficient=0.1, depthwise_padding=[], kernel_sizes=[3, 3],
                  in_channels=[32, 16], out_channels=[16, 64], num_block_repeats=[1, 1],
                  strides=[1, 2], expand_ratios=[1, 6])
    cfg = t.AlignConfig(text_config=dict(text, hidden_size=32), vision_config=vision,
                        projection_dim=64)
    proc = t.AlignProcessor(image_processor=t.EfficientNetImageProcessor(
        size={"height": 32, "width": 32}), tokenizer=tok)
    return t.AlignModel(cfg).eval(), proc


def _clap(t, tok, text):
    audio = dict(depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=16,
                 enable_fusion=True,
                 hidden_size=32, window_size=4, spec_size=128, num_mel_bins=64,
                 patch_stride=[4, 4], patch_size=4)
    cfg = t.ClapConfig(text_config=text, audio_config=audio, projection_dim=16)
    fe = t.ClapFeatureExtractor(feature_size=64, sampling_rate=16000, hop_length=160,
                                max_length_s=1, fft_window_size=400)
    return t.ClapModel(cfg).eval(), t.ClapProcessor(feature_extractor=fe, tokenizer=tok)


def _xclip(t, tok, text):
    vision = dict(TINY_VISION, num_frames=4, mit_hidden_size=32, mit_intermediate_size=37,
                  mit_num_hidden_layers=1, mit_num_attention_heads=2)
    cfg = t.XCLIPConfig(text_config=text, vision_config=vision, projection_dim=32,
                        prompt_layers=1, prompt_num_attention_heads=2)
    proc = t.XCLIPProcessor(image_processor=t.VideoMAEImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tok)
    return t.XCLIPModel(cfg).eval(), proc


BUILDERS = {"clip": _clip, "siglip": _siglip, "siglip2": _siglip2, "metaclip_2": _metaclip2,
            "altclip": _altclip, "chinese_clip": _chinese_clip, "align": _align,
            "clap": _clap, "xclip": _xclip}


def save(kind: str, folder) -> tuple:
    """Build ``kind``, save model and processor to ``folder``; ``(model, processor)``."""
    folder = Path(folder)
    model, proc = build(kind, folder.parent / f"{folder.name}-scratch")
    model.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    return model, proc


# --- Perception Encoder (audio, video, audio-video) ------------------------------------------
PE_KINDS = ("pe_audio", "pe_video", "pe_audio_video")
_PE_ENC = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
               head_dim=16)
_PE_AUDIO = dict(_PE_ENC, dac_config=dict(downsampling_ratios=[2, 4], encoder_hidden_size=8,
                                          codebook_dim=16, hidden_size=16,
                                          decoder_hidden_size=16, upsampling_ratios=[4, 2]))
_PE_VIDEO = dict(_PE_ENC, vision_config=dict(
    architecture="vit_pe_core_tiny_patch16_384", num_classes=24,
    model_args=dict(img_size=32, depth=1, embed_dim=32, num_heads=2)))


def build_pe(kind: str):
    """``(model, processor)`` of a tiny random-weight Perception Encoder ``kind``."""
    import torch

    t = _t()
    tok = wordpiece()
    text = dict(TINY_TEXT, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id)
    fe = t.PeAudioFeatureExtractor(sampling_rate=16000, hop_length=8)
    vp = t.PeVideoVideoProcessor(size={"height": 32, "width": 32}, do_resize=True,
                                 do_rescale=True, do_normalize=True, image_mean=[0.5] * 3,
                                 image_std=[0.5] * 3, num_frames=4)
    torch.manual_seed(0)
    if kind == "pe_audio":
        model = t.PeAudioModel(t.PeAudioConfig(text_config=text, audio_config=_PE_AUDIO))
        proc = t.PeAudioProcessor(feature_extractor=fe, tokenizer=tok)
    elif kind == "pe_video":
        model = t.PeVideoModel(t.PeVideoConfig(text_config=text, video_config=_PE_VIDEO))
        proc = t.PeVideoProcessor(video_processor=vp, tokenizer=tok)
    else:
        cfg = t.PeAudioVideoConfig(text_config=text, audio_video_config=dict(
            _PE_ENC, audio_config=_PE_AUDIO, video_config=_PE_VIDEO))
        model = t.PeAudioVideoModel(cfg)
        proc = t.PeAudioVideoProcessor(feature_extractor=fe, video_processor=vp, tokenizer=tok)
    return model.eval(), proc


def save_pe(kind: str, folder) -> tuple:
    model, proc = build_pe(kind)
    model.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    return model, proc
