"""LAION-CLAP (``CLAP_g``, ``CLAP_m``, ``clap:<checkpoint>``): audio-text experts, 512-d.

Package: ``transformers`` (``pip install 'freebind[clap]'``). The model is transformers'
``ClapModel`` (HTSAT audio tower, RoBERTa text tower); LAION-CLAP's own checkpoints are
converted to it when loaded (:func:`convert_state_dict`, the renaming documented by both
libraries), so the ``laion_clap`` package is never needed at run time. Its forward is the
reference the tests compare against.

* ``CLAP_g`` — ``630k-audioset-fusion-best.pt``: HTSAT-tiny audio tower with feature fusion
  (``aff_2d``), RoBERTa text tower.
* ``CLAP_m`` — ``music_speech_audioset_epoch_15_esc_89.98.pt``: HTSAT-base, no fusion.
* ``clap:PATH`` — any LAION-CLAP HTSAT checkpoint (``.pt``; the tower size and fusion are
  read from the checkpoint's tensors), or a transformers ``save_pretrained`` folder / a
  Hugging Face repo id of a converted one (``clap:laion/clap-htsat-fused``), loaded as is.

Audio: decoded to mono and resampled to 48 kHz as ``librosa.load`` does (soxr, high quality;
:func:`~freebind.spaces.audio_features.soxr_resample`), int16-quantised, 10 s window:
repeat-padded when shorter; longer clips are centre-cropped (non-fusion) or fused from
deterministic chunks (see :mod:`freebind.spaces.audio_features`). Non-fusion models take the
log mel spectrogram LAION-CLAP computes inside its model (torchlibrosa: centred STFT, Slaney
mel, dB), computed here on the batch before the tower. Text: RoBERTa's byte-level BPE,
padded/truncated to 77 tokens. The tokenizer files (``vocab.json``, ``merges.txt`` of
``roberta-base``, or those of a ``save_pretrained`` folder) are resolved like weights; a
tokenizer whose vocabulary does not match the text tower (laion_clap offline silently gets a
5-token one) makes text encoding fail instead of returning garbage.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces import compat, weights
from freebind.spaces.adapter import reject_unknown
from freebind.spaces.adapter import EncoderAdapter

HF_REPO = "lukewys/laion_clap"
ORIGIN = "the LAION-CLAP release (huggingface.co/lukewys/laion_clap)"
TOKENIZER_REPOS = ("FacebookAI/roberta-base", "roberta-base")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
#: Known checkpoints: audio tower, fusion.
KNOWN = {
    "630k-audioset-fusion-best.pt": ("HTSAT-tiny", True),
    "630k-fusion-best.pt": ("HTSAT-tiny", True),
    "630k-audioset-best.pt": ("HTSAT-tiny", False),
    "630k-best.pt": ("HTSAT-tiny", False),
    "music_speech_audioset_epoch_15_esc_89.98.pt": ("HTSAT-base", False),
    "music_audioset_epoch_15_esc_90.14.pt": ("HTSAT-base", False),
    "music_speech_epoch_15_esc_89.25.pt": ("HTSAT-base", False),
}
#: roberta-base's configuration (the CLAP text tower); its weights come from the checkpoint.
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                    max_position_embeddings=514, type_vocab_size=1, initializer_range=0.02,
                    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
#: LAION-CLAP's HTSAT sizes: patch width, depths, heads (its model configs).
HTSAT = {"HTSAT-tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[4, 8, 16, 32]),
         "HTSAT-base": dict(embed_dim=128, depths=[2, 2, 12, 2], num_heads=[4, 8, 16, 32]),
         "HTSAT-large": dict(embed_dim=256, depths=[2, 2, 12, 2], num_heads=[4, 8, 16, 32])}
HTSAT_WIDTH = {96: "HTSAT-tiny", 128: "HTSAT-base", 256: "HTSAT-large"}
CONTEXT_LENGTH = 77
PREPROCESS_VERSION = "clap-pre-2"   # 2: soxr resampling, as librosa.load
CLASSES = 527  # the AudioSet head LAION-CLAP keeps in its audio tower (unused for embeddings)


def weight_file(checkpoint: str) -> weights.WeightFile:
    name = Path(checkpoint).name

    def library_paths():
        paths = [*weights.hf_cached([HF_REPO], name)]
        import importlib.util

        spec = importlib.util.find_spec("laion_clap")
        if spec is not None and spec.origin:
            paths.append(Path(spec.origin).parent / name)  # laion_clap's own download place
        return paths

    return weights.WeightFile(filename=name, family="clap", origin=ORIGIN,
                              library_paths=library_paths,
                              fetch=weights.hf_fetch(HF_REPO, name))


def tokenizer_files() -> list[weights.WeightFile]:
    out = []
    for fname in TOKENIZER_FILES:
        out.append(weights.WeightFile(
            filename=fname, family="clap/roberta-base", what="tokenizer file",
            origin="the roberta-base tokenizer (huggingface.co/FacebookAI/roberta-base)",
            library_paths=lambda f=fname: weights.hf_cached(TOKENIZER_REPOS, f),
            fetch=weights.hf_fetch(TOKENIZER_REPOS[0], fname)))
    return out


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_repo_id(spec: str) -> bool:
    """``owner/name`` of a Hugging Face repository (not an existing path, not a ``.pt``)."""
    return (bool(_REPO_ID.match(spec)) and not Path(spec).expanduser().exists()
            and not spec.endswith((".pt", ".pth", ".ckpt", ".safetensors")))


def _repo_home(repo: str) -> Path:
    return weights.weights_dir("clap") / repo.replace("/", "--")


def _find_pretrained(spec: str) -> Path | None:
    """A local ``save_pretrained`` folder for ``spec`` (a folder, or a repo id found in
    ``$FREEBIND_HOME`` or the Hugging Face cache), else None."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if not is_repo_id(spec):
        return None
    home = _repo_home(spec)
    if (home / "config.json").exists():
        return home
    cached = weights.hf_cached([spec], "config.json")
    return cached[0].parent if cached else None


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available("transformers")
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[clap]'"
    ckpt = dict(getattr(info, "options", ()) or ()).get("checkpoint",
                                                        "630k-audioset-fusion-best.pt")
    folder = _find_pretrained(ckpt)
    if folder is not None:
        return True, str(folder)
    if is_repo_id(ckpt):
        return False, f"weights missing: {_repo_home(ckpt)} (or the Hugging Face cache)"
    path = Path(ckpt)
    found = path if path.exists() else weight_file(ckpt).find_local()
    if found is None:
        return False, f"weights missing: {weight_file(ckpt).home_path}"
    if any(w.find_local() is None for w in tokenizer_files()):
        return True, f"{found} (text tokenizer missing: audio only)"
    return True, str(found)


def resolve_family(spec: str, ref: str):
    """``clap:<checkpoint name, path, folder or repo id>`` → SpaceInfo (512-d, audio+text)."""
    from freebind.spaces.protocol import SpaceInfo

    if not spec:
        raise SpaceError(f"{ref}: give a checkpoint, e.g. clap:630k-audioset-best.pt")
    return SpaceInfo(name=ref, family="clap", modalities=("audio", "text"), dim=512,
                     description=f"LAION-CLAP checkpoint {spec}",
                     options=(("checkpoint", spec),),
                     loader="freebind.spaces.clap:load", checker="freebind.spaces.clap:check")


def load(info=None, checkpoint: str = "630k-audioset-fusion-best.pt", device: str | None = None,
         precision: str | None = None, batch_size: int = 16, tokenizer: str | None = None,
         amodel: str | None = None, fusion: bool | None = None, fusion_type: str = "aff_2d",
         text_config: dict | None = None, htsat: dict | None = None, download: bool = True,
         workers: int | None = None, **unused) -> "ClapSpace":
    """Build CLAP and load ``checkpoint`` (name, path, folder or repo id; see module doc).

    ``text_config`` overrides the RoBERTa configuration and ``htsat`` the audio tower's size
    (``embed_dim``, ``depths``, ``num_heads``): tests build small CLAPs with them."""
    reject_unknown(unused, "CLAP")
    name = getattr(info, "name", "CLAP")
    folder = _find_pretrained(str(checkpoint))
    if folder is None and is_repo_id(str(checkpoint)):
        folder = _download_pretrained(str(checkpoint), download)
    if folder is not None:
        path = folder
        tok_dir = (_resolve_tokenizer(tokenizer, download) if tokenizer
                   or not all((folder / f).exists() for f in TOKENIZER_FILES) else folder)
    else:
        path = weights.resolve(weight_file(checkpoint), checkpoint, download=download)
        tok_dir = _resolve_tokenizer(tokenizer, download)
    return ClapSpace(path, name=name, device=device, precision=precision,
                     batch_size=batch_size, tokenizer_dir=tok_dir, amodel=amodel, fusion=fusion,
                     fusion_type=fusion_type, text_config=text_config, htsat=htsat,
                     workers=workers)


def prefetch(checkpoint: str) -> list[Path]:
    """Make the files of ``checkpoint`` local (a save_pretrained folder or repo id: the
    folder; a LAION-CLAP checkpoint: it and RoBERTa's tokenizer files)."""
    folder = _find_pretrained(checkpoint)
    if folder is None and is_repo_id(checkpoint):
        folder = _download_pretrained(checkpoint, True)
    if folder is not None:
        return [folder]
    return [weights.resolve(weight_file(checkpoint), checkpoint),
            *(weights.resolve(w) for w in tokenizer_files())]


def _download_pretrained(repo: str, download: bool) -> Path:
    home = _repo_home(repo)
    why = (f"CLAP model {repo} not found; put its save_pretrained folder at {home} (or in "
           f"the Hugging Face cache), or run `freebind download` on a machine that is online")
    if not download:
        raise SpaceError(why + " (downloads disabled)")
    if weights.offline():
        raise SpaceError(why + " (offline)")
    if not weights.reachable("huggingface.co"):
        raise SpaceError(why + " (offline: cannot reach huggingface.co)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo, local_dir=str(home)))
    except Exception as exc:
        raise SpaceError(f"{why} (download failed: {str(exc)[:160]})") from None


def _resolve_tokenizer(explicit: str | None, download: bool) -> Path | str | None:
    """The folder holding vocab.json and merges.txt, or the reason it could not be found."""
    if explicit:
        folder = Path(explicit).expanduser()
        missing = [f for f in TOKENIZER_FILES if not (folder / f).exists()]
        if missing:
            raise SpaceError(f"tokenizer folder {folder} lacks {', '.join(missing)}")
        return folder
    paths = []
    try:
        for wf in tokenizer_files():
            paths.append(weights.resolve(wf, None, download=download))
    except SpaceError as exc:
        return str(exc)
    return weights.one_folder(paths, "freebind-roberta-")


def infer_architecture(state: dict, custom: bool = False) -> tuple[str, bool]:
    """(audio tower, fusion) from a LAION-CLAP checkpoint's tensors (``custom``: any HTSAT
    width)."""
    key = "audio_branch.patch_embed.proj.weight"
    if key not in state:
        raise SpaceError("checkpoint is not a LAION-CLAP HTSAT model (no " + key + ")")
    width = int(state[key].shape[0])
    if width not in HTSAT_WIDTH and not custom:
        raise SpaceError(f"unknown HTSAT width {width} in checkpoint")
    fusion = any(".fusion_model." in k or "mel_conv2d" in k for k in state)
    return HTSAT_WIDTH.get(width, "HTSAT-tiny"), fusion


# --- LAION-CLAP → transformers ----------------------------------------------------------------
#: Renamings, applied in order to every key (the layout of transformers' ClapModel).
_RENAMES = (
    (r"^text_branch\.", "text_model."),
    (r"^audio_branch\.", "audio_model.audio_encoder."),
    (r"\.attn\.proj\.", ".attention.output.dense."),
    (r"\.attn\.", ".attention.self."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.bn0\.", ".batch_norm."),
    (r"^(text|audio)_projection\.0\.", r"\1_projection.linear1."),
    (r"^(text|audio)_projection\.2\.", r"\1_projection.linear2."),
)
#: LAION-CLAP tensors transformers' model does not have: the in-model spectrogram (computed
#: by freebind's front end instead), the AudioSet classifier head, the unused contrastive
#: "transform" MLPs, and Swin attention masks (recomputed on the fly).
_DROPPED = (r"^audio_branch\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\.",
            r"^(audio|text)_transform\.", r"\.attn_mask$",
            r"^text_branch\.embeddings\.position_ids$")


def convert_state_dict(state: dict) -> dict:
    """A LAION-CLAP state dict (``module.`` prefix already stripped) in the key layout of
    transformers' ``ClapModel``: renamed keys, fused ``qkv`` split into query/key/value."""
    out = {}
    for key, value in state.items():
        if any(re.search(p, key) for p in _DROPPED):
            continue
        new = key
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        if new.endswith((".attention.self.qkv.weight", ".attention.self.qkv.bias")):
            q, k, v = value.chunk(3, dim=0)
            for part, tensor in (("query", q), ("key", k), ("value", v)):
                out[new.replace(".qkv.", f".{part}.")] = tensor
        else:
            out[new] = value
    return out


def hf_config(state: dict, amodel: str, fusion: bool, text_config: dict | None = None,
              htsat: dict | None = None):
    """transformers' ``ClapConfig`` of a LAION-CLAP checkpoint (sizes read from its tensors
    where they tell, LAION-CLAP's model config otherwise)."""
    from transformers import ClapConfig

    size = dict(htsat) if htsat is not None else dict(HTSAT[amodel])
    proj = state.get("audio_projection.0.weight")
    text = {**ROBERTA_BASE, **(text_config or {})}
    text.pop("initializer_range", None)
    audio = dict(htsat_audio_config(size, fusion), aff_block_r=4,
                 projection_hidden_act="relu",
                 projection_dim=int(proj.shape[0]) if proj is not None else 512)
    return ClapConfig(text_config=text, audio_config=audio,
                      projection_dim=audio["projection_dim"])


def htsat_audio_config(size: dict, fusion: bool = False) -> dict:
    """transformers' ``ClapAudioConfig`` fields of an HTSAT tower of ``size`` (``embed_dim``,
    ``depths``, ``num_heads``) on LAION-CLAP's front end (64 mels, 256-frame spectrogram)."""
    width, depths = int(size["embed_dim"]), list(size["depths"])
    return dict(window_size=8, num_mel_bins=64, spec_size=256, patch_size=4,
                patch_stride=[4, 4], num_classes=CLASSES, depths=depths,
                num_attention_heads=list(size["num_heads"]), patch_embeds_hidden_size=width,
                hidden_size=width * 2 ** (len(depths) - 1), enable_fusion=bool(fusion),
                fusion_type="aff_2d" if fusion else None, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, drop_path_rate=0.0, qkv_bias=True,
                mlp_ratio=4.0, layer_norm_eps=1e-5)


def _import_clap():
    compat.torchvision_if_present()  # transformers imports torchvision when it is installed
    try:
        import transformers
        from transformers import ClapModel  # noqa: F401
    except ImportError as exc:
        raise SpaceError(f"CLAP needs transformers ({exc.name or exc} missing): "
                         f"pip install 'freebind[clap]'") from None
    return transformers


def slaney_mel_db(waveform, cfg: dict, banks=None):
    """LAION-CLAP's in-model log mel spectrogram of non-fusion models, ``[B, 1, frames,
    mels]``: torchlibrosa's centred reflect-padded STFT (periodic Hann), power 2, Slaney mel
    filters, 10·log10(max(x, 1e-10))."""
    import torch

    from freebind.spaces import audio_features as af

    n_fft, hop = cfg["window_size"], cfg["hop_size"]
    wave = waveform.to(torch.float32)
    spec = torch.stft(wave, n_fft=n_fft, hop_length=hop, win_length=n_fft,
                      window=torch.hann_window(n_fft, dtype=torch.float32, device=wave.device),
                      center=True, pad_mode="reflect", onesided=True, return_complex=True)
    power = spec.real.pow(2) + spec.imag.pow(2)  # [B, freqs, frames]
    if banks is None:
        banks = torch.from_numpy(af.slaney_mel_banks(n_fft // 2 + 1, cfg["fmin"], cfg["fmax"],
                                                     cfg["mel_bins"], cfg["sample_rate"]))
    mel = power.transpose(1, 2) @ banks.to(wave.device)  # [B, frames, mels]
    return (10.0 * torch.log10(torch.clamp(mel, min=1e-10)))[:, None]


class ClapSpace(EncoderAdapter):
    """A loaded CLAP model (transformers' ``ClapModel``) implementing the Space protocol."""

    family = "clap"

    def __init__(self, checkpoint, name: str = "CLAP", device: str | None = None,
                 precision: str | None = None, batch_size: int = 16, tokenizer_dir=None,
                 amodel: str | None = None, fusion: bool | None = None,
                 fusion_type: str = "aff_2d", text_config: dict | None = None,
                 htsat: dict | None = None, workers: int | None = None):
        from freebind.spaces import audio_features as af

        self.name = name
        self.modalities = ("audio", "text")
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        self.checkpoint = Path(checkpoint)
        transformers = _import_clap()
        if fusion_type != "aff_2d":
            raise SpaceError(f"fusion_type {fusion_type!r}: only LAION-CLAP's published "
                             f"'aff_2d' feature fusion is supported")
        if self.checkpoint.is_dir():
            self.model = self._from_pretrained(transformers)
            cfg = self.model.config.audio_config
            self.fusion = bool(cfg.enable_fusion)
            self.amodel = amodel or HTSAT_WIDTH.get(int(cfg.patch_embeds_hidden_size),
                                                    f"HTSAT-{cfg.patch_embeds_hidden_size}")
            digest = weights.file_digest(self._weights_file())
        else:
            state = weights.strip_prefix(weights.load_state_dict(self.checkpoint,
                                                                 "LAION-CLAP weights"))
            inferred_amodel, inferred_fusion = infer_architecture(state,
                                                                  custom=htsat is not None)
            known = KNOWN.get(self.checkpoint.name)
            if known is not None and known != (inferred_amodel, inferred_fusion):
                raise SpaceError(f"{self.checkpoint}: tensors say {inferred_amodel}"
                                 f"{' fusion' if inferred_fusion else ''}, but this release "
                                 f"is {known[0]}{' fusion' if known[1] else ''}; the file is "
                                 f"not the published checkpoint")
            self.amodel = amodel or inferred_amodel
            if self.amodel not in HTSAT and htsat is None:
                raise SpaceError(f"unknown LAION-CLAP audio model {self.amodel!r}; known: "
                                 f"{', '.join(HTSAT)}")
            if fusion is not None and bool(fusion) != inferred_fusion:
                raise SpaceError(f"{self.checkpoint}: fusion={bool(fusion)} given, but the "
                                 f"checkpoint's tensors say fusion={inferred_fusion}")
            self.fusion = inferred_fusion
            config = hf_config(state, self.amodel, self.fusion, text_config, htsat)
            self.model = transformers.ClapModel(config)
            weights.load_into(self.model, convert_state_dict(state), self.checkpoint,
                              ignore=("text_model.embeddings.position_ids",
                                      "text_model.embeddings.token_type_ids"))
            digest = weights.file_digest(self.checkpoint)
        self.audio_cfg = dict(af.CLAP_AUDIO_CFG)
        self.max_len = af.CLAP_MAX_SAMPLES
        self.model.eval().to(device=self.device, dtype=self.dtype)
        self.dim = int(self.model.config.projection_dim)
        self._banks = None
        self._tokenizer = None
        self._tokenizer_source = tokenizer_dir
        self.text_vocab = int(self.model.text_model.embeddings.word_embeddings.weight.shape[0])
        self.fingerprint = hashlib.sha256(json.dumps(
            ["clap", self.amodel, self.fusion, fusion_type, htsat, digest, PREPROCESS_VERSION,
             self.precision],
            sort_keys=True).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    def _from_pretrained(self, transformers):
        if not (self.checkpoint / "config.json").exists():
            raise SpaceError(f"{self.checkpoint}: not a CLAP save_pretrained folder (no "
                             f"config.json)")
        try:
            model = transformers.ClapModel.from_pretrained(str(self.checkpoint),
                                                           local_files_only=True)
        except Exception as exc:
            raise SpaceError(f"{self.checkpoint}: cannot load the CLAP model "
                             f"({str(exc).strip().splitlines()[0][:200]})") from None
        return model

    def _weights_file(self) -> Path:
        for name in ("model.safetensors", "pytorch_model.bin", "config.json"):
            if (self.checkpoint / name).exists():
                return self.checkpoint / name
        return self.checkpoint / "config.json"

    # --- text ---------------------------------------------------------------------------------
    def tokenizer(self):
        if self._tokenizer is None:
            source = self._tokenizer_source
            if source is None or isinstance(source, str) and not Path(source).is_dir():
                raise SpaceError(f"{self.name} cannot encode text: "
                                 + (source or "no tokenizer files found"))
            from transformers import RobertaTokenizer

            # from a local folder: no network (transformers 5 renamed the file arguments of
            # the constructor and silently builds a 5-token tokenizer from the old ones)
            tok = RobertaTokenizer.from_pretrained(str(source), local_files_only=True)
            self._tokenizer = check_tokenizer(tok, self.text_vocab, self.name, source)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> dict:
        enc = self.tokenizer()([str(t) for t in texts], padding="max_length", truncation=True,
                               max_length=CONTEXT_LENGTH, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # --- audio --------------------------------------------------------------------------------
    def audio_item(self, path) -> dict:
        """One file's inputs (decoded at 48 kHz, quantised, 10 s policy, fusion mels).

        A non-fusion model uses at most the centre 10 s of a file: only those frames are
        read (:func:`~freebind.spaces.audio_features.clap_centre`). A fusion model's input
        of a long file is made from all of it (the whole clip squeezed to 10 s): the file is
        decoded whole, within the limits (:mod:`freebind.data.audio_limits`)."""
        from freebind.data import media
        from freebind.spaces import audio_features as af

        rate = self.audio_cfg["sample_rate"]
        if not self.fusion:
            with media.open_audio(path) as f:
                wave = af.clap_centre(f, rate, self.max_len)
            if wave is not None:
                return af.clap_inputs(wave, False, self.audio_cfg, self.max_len)
        wave = media.load_audio(path, rate, resampler=af.soxr_resample)
        return af.clap_inputs(wave, self.fusion, self.audio_cfg, self.max_len)

    @staticmethod
    def collate(items: list) -> dict:
        import torch

        return {k: torch.stack([d[k] for d in items], dim=0) for k in items[0]}

    def audio_inputs(self, paths: Sequence) -> dict:
        return self.collate([self.audio_item(p) for p in paths])

    def prepare(self, modality: str, items: Sequence):
        if modality == "text":
            return self.tokenize(items)
        if modality == "audio":
            return self.audio_inputs(items)
        raise SpaceError(f"space {self.name} does not encode {modality!r}")

    def features(self, inputs: dict) -> dict:
        """The audio tower's inputs (``input_features [B, 1 or 4, frames, mels]``,
        ``is_longer``) from :func:`~freebind.spaces.audio_features.clap_inputs` batches."""
        import torch

        from freebind.spaces import audio_features as af

        if self.fusion:
            feats = inputs["mel_fusion"].to(self.device)
        else:
            if self._banks is None:
                cfg = self.audio_cfg
                self._banks = torch.from_numpy(af.slaney_mel_banks(
                    cfg["window_size"] // 2 + 1, cfg["fmin"], cfg["fmax"], cfg["mel_bins"],
                    cfg["sample_rate"])).to(self.device)
            feats = slaney_mel_db(inputs["waveform"].to(self.device), self.audio_cfg,
                                  self._banks)
        return {"input_features": feats.to(self.dtype),
                "is_longer": inputs["longer"].to(self.device).reshape(-1, 1)}

    def forward(self, modality: str, inputs: dict):
        import torch
        from torch.nn import functional as F

        with torch.no_grad():
            if modality == "text":
                out = self.model.text_model(
                    input_ids=inputs["input_ids"].to(self.device),
                    attention_mask=inputs["attention_mask"].to(self.device))
                emb = self.model.text_projection(out.pooler_output)
            else:
                out = self.model.audio_model(**self.features(inputs))
                emb = self.model.audio_projection(out.pooler_output)
        return F.normalize(emb.float(), dim=-1)

    # --- encode hooks (EncoderAdapter) ------------------------------------------------
    def _before_encode(self, modality: str) -> None:
        if modality == "text":
            self.tokenizer()  # fail before any work when the tokenizer is unusable

    def _per_item(self, modality: str):
        return self.audio_item if modality == "audio" else None

    def _collate(self, inputs: list) -> dict:
        return self.collate(inputs)

    def __repr__(self) -> str:
        return (f"ClapSpace(name={self.name!r}, audio={self.amodel}, fusion={self.fusion}, "
                f"device={self.device}, precision={self.precision})")


PROBE = "a dog is barking while rain falls on a metal roof"


def check_tokenizer(tok, model_vocab: int, name: str, source) -> object:
    """Refuse a degenerate tokenizer: its vocabulary must match the text tower's and a plain
    English probe sentence must tokenize into several known (non-special) tokens."""
    size = len(tok)
    if size != model_vocab:
        raise SpaceError(f"{name}: refusing to encode text: the tokenizer from {source} has "
                         f"{size} tokens but the text tower expects {model_vocab} (a degenerate "
                         f"or wrong tokenizer would give meaningless embeddings)")
    ids = tok(PROBE)["input_ids"]
    special = set(getattr(tok, "all_special_ids", []) or [])
    content = [i for i in ids if i not in special]
    if len(content) < 3 or len(set(content)) < 3:
        raise SpaceError(f"{name}: refusing to encode text: the tokenizer from {source} maps "
                         f"a probe sentence to {len(content)} usable tokens")
    return tok
