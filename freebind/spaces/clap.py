"""LAION-CLAP (``CLAP_g``, ``CLAP_m``, ``clap:<checkpoint>``): audio-text experts, 512-d.

Package: ``laion-clap`` (``pip install 'freebind[clap]'``); only its model code
(``laion_clap.clap_module``) is used, never its ``hook`` (which reads audio with a random
crop and writes checkpoints into site-packages).

* ``CLAP_g`` — ``630k-audioset-fusion-best.pt``: HTSAT-tiny audio tower with feature fusion
  (``aff_2d``), RoBERTa text tower.
* ``CLAP_m`` — ``music_speech_audioset_epoch_15_esc_89.98.pt``: HTSAT-base, no fusion.
* ``clap:PATH`` — any LAION-CLAP HTSAT checkpoint; the tower size and fusion are read from
  the checkpoint's tensors.

Audio: decoded to 48 kHz mono, int16-quantised, 10 s window: repeat-padded when shorter;
longer clips are centre-cropped (non-fusion) or fused from deterministic chunks (see
:mod:`freebind.spaces.audio_features`). Text: RoBERTa's byte-level BPE, padded/truncated to 77
tokens. The tokenizer files (``vocab.json``, ``merges.txt`` of ``roberta-base``) are resolved
like weights; a tokenizer whose vocabulary does not match the text tower (laion_clap offline
silently gets a 5-token one) makes text encoding fail instead of returning garbage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

from freebind.errors import SpaceError
from freebind.spaces import compat, weights
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
HTSAT_WIDTH = {96: "HTSAT-tiny", 128: "HTSAT-base", 256: "HTSAT-large"}
CONTEXT_LENGTH = 77
PREPROCESS_VERSION = "clap-pre-1"


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


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available("laion_clap", "torchlibrosa", "librosa",
                                            "transformers", "h5py")
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[clap]'"
    ckpt = dict(getattr(info, "options", ()) or ()).get("checkpoint",
                                                        "630k-audioset-fusion-best.pt")
    path = Path(ckpt)
    found = path if path.exists() else weight_file(ckpt).find_local()
    if found is None:
        return False, f"weights missing: {weight_file(ckpt).home_path}"
    if any(w.find_local() is None for w in tokenizer_files()):
        return True, f"{found} (text tokenizer missing: audio only)"
    return True, str(found)


def resolve_family(spec: str, ref: str):
    """``clap:<checkpoint name or path>`` → SpaceInfo (512-d, audio+text)."""
    from freebind.spaces.base import SpaceInfo

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
    """Build LAION-CLAP and load ``checkpoint`` (name or path; see module doc).

    ``text_config`` overrides the RoBERTa configuration (tests build a small text tower)."""
    compat.reject_unknown(unused, "CLAP")
    name = getattr(info, "name", "CLAP")
    path = weights.resolve(weight_file(checkpoint), checkpoint, download=download)
    tok_dir = _resolve_tokenizer(tokenizer, download)
    return ClapSpace(path, name=name, device=device, precision=precision,
                     batch_size=batch_size, tokenizer_dir=tok_dir, amodel=amodel, fusion=fusion,
                     fusion_type=fusion_type, text_config=text_config, htsat=htsat,
                     workers=workers)


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
    if paths[0].parent == paths[1].parent:
        return paths[0].parent
    import tempfile

    # Hugging Face's cache keeps each file in its own snapshot folder only by symlink; gather
    folder = Path(tempfile.mkdtemp(prefix="freebind-roberta-"))
    for p in paths:
        (folder / p.name).symlink_to(p.resolve())
    return folder


def infer_architecture(state: dict, custom: bool = False) -> tuple[str, bool]:
    """(audio tower, fusion) from a checkpoint's tensors (``custom``: any HTSAT width)."""
    key = "audio_branch.patch_embed.proj.weight"
    if key not in state:
        raise SpaceError("checkpoint is not a LAION-CLAP HTSAT model (no " + key + ")")
    width = int(state[key].shape[0])
    if width not in HTSAT_WIDTH and not custom:
        raise SpaceError(f"unknown HTSAT width {width} in checkpoint")
    fusion = any(".fusion_model." in k or "mel_conv2d" in k for k in state)
    return HTSAT_WIDTH.get(width, "HTSAT-tiny"), fusion


@contextlib.contextmanager
def _offline_roberta(model_module, config: dict):
    """Make ``RobertaModel.from_pretrained('roberta-base')`` inside laion_clap build the
    architecture from ``config`` (the checkpoint supplies every weight)."""
    from transformers import RobertaConfig, RobertaModel

    class _Builder:
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            return RobertaModel(RobertaConfig(**config))

    original = model_module.RobertaModel
    model_module.RobertaModel = _Builder
    try:
        yield
    finally:
        model_module.RobertaModel = original


@contextlib.contextmanager
def _small_htsat(model_module, htsat: dict | None):
    """Build the audio tower with HTSAT_Swin_Transformer arguments ``htsat`` (embed_dim,
    depths, num_heads) instead of one of laion_clap's three fixed sizes; None: unchanged."""
    if htsat is None:
        yield
        return
    htsat_module = sys.modules["laion_clap.clap_module.htsat"]

    def create(audio_cfg, enable_fusion=False, fusion_type="None"):
        return htsat_module.HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=audio_cfg.class_num,
            window_size=8, config=audio_cfg, enable_fusion=enable_fusion,
            fusion_type=fusion_type, **htsat)

    original = model_module.create_htsat_model
    model_module.create_htsat_model = create
    try:
        yield
    finally:
        model_module.create_htsat_model = original


def build_model(amodel: str, fusion: bool, fusion_type: str = "aff_2d",
                text_config: dict | None = None, htsat: dict | None = None):
    """An untrained LAION-CLAP model of the given architecture (RoBERTa text tower).

    ``text_config`` overrides roberta-base's configuration and ``htsat`` the audio tower's
    size (``embed_dim``, ``depths``, ``num_heads``): tests build small CLAPs with them."""
    import copy

    cm = compat.import_bare("laion_clap", "laion_clap.clap_module", "clap", "laion-clap")
    model_module = sys.modules["laion_clap.clap_module.model"]
    factory = sys.modules["laion_clap.clap_module.factory"]
    if amodel not in factory._MODEL_CONFIGS:
        raise SpaceError(f"unknown LAION-CLAP audio model {amodel!r}; known: "
                         f"{', '.join(sorted(factory._MODEL_CONFIGS))}")
    cfg = copy.deepcopy(factory._MODEL_CONFIGS[amodel])
    cfg["text_cfg"]["model_type"] = "roberta"
    cfg["enable_fusion"] = bool(fusion)
    cfg["fusion_type"] = fusion_type if fusion else "None"
    if htsat is not None:
        cfg["embed_dim"] = int(htsat["embed_dim"]) * 8  # the tower's output width
    with _offline_roberta(model_module, {**ROBERTA_BASE, **(text_config or {})}), \
            _small_htsat(model_module, htsat):
        model = cm.CLAP(**cfg)
    return model, cfg


class ClapSpace(EncoderAdapter):
    """A loaded LAION-CLAP model implementing the Space protocol."""

    family = "clap"

    def __init__(self, checkpoint, name: str = "CLAP", device: str | None = None,
                 precision: str | None = None, batch_size: int = 16, tokenizer_dir=None,
                 amodel: str | None = None, fusion: bool | None = None,
                 fusion_type: str = "aff_2d", text_config: dict | None = None,
                 htsat: dict | None = None, workers: int | None = None):
        self.name = name
        self.modalities = ("audio", "text")
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        self.checkpoint = Path(checkpoint)
        state = weights.strip_prefix(weights.load_state_dict(self.checkpoint,
                                                             "LAION-CLAP weights"))
        inferred_amodel, inferred_fusion = infer_architecture(state, custom=htsat is not None)
        known = KNOWN.get(self.checkpoint.name)
        if known is not None and known != (inferred_amodel, inferred_fusion):
            raise SpaceError(f"{self.checkpoint}: tensors say {inferred_amodel}"
                             f"{' fusion' if inferred_fusion else ''}, but this release is "
                             f"{known[0]}{' fusion' if known[1] else ''}; the file is not the "
                             f"published checkpoint")
        self.amodel = amodel or inferred_amodel
        self.fusion = inferred_fusion if fusion is None else bool(fusion)
        self.model, cfg = build_model(self.amodel, self.fusion, fusion_type, text_config, htsat)
        self.audio_cfg = {k: cfg["audio_cfg"][k] for k in
                          ("sample_rate", "window_size", "hop_size", "mel_bins", "fmin", "fmax")}
        self.max_len = int(cfg["audio_cfg"].get("clip_samples", 480000))
        weights.load_into(self.model, state, self.checkpoint,
                          ignore=("text_branch.embeddings.position_ids",))
        self.model.eval().to(device=self.device, dtype=self.dtype)
        self.dim = int(self.model.joint_embed_shape)
        self._tokenizer = None
        self._tokenizer_source = tokenizer_dir
        self.text_vocab = int(self.model.text_branch.embeddings.word_embeddings.weight.shape[0])
        digest = weights.file_digest(self.checkpoint)
        self.fingerprint = hashlib.sha256(json.dumps(
            ["clap", self.amodel, self.fusion, fusion_type, htsat, digest, PREPROCESS_VERSION,
             self.precision],
            sort_keys=True).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

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
        """One file's inputs (decoded at 48 kHz, quantised, 10 s policy, fusion mels)."""
        from freebind import media
        from freebind.spaces import audio_features as af

        return af.clap_inputs(media.load_audio(path, self.audio_cfg["sample_rate"]),
                              self.fusion, self.audio_cfg, self.max_len)

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

    def forward(self, modality: str, inputs: dict):
        if modality == "text":
            out = self.model.encode_text({k: v.to(self.device) for k, v in inputs.items()},
                                         device=self.device)
            return out.float()
        batch = {}
        for k, v in inputs.items():
            v = v.to(self.device)
            batch[k] = v.to(self.dtype) if v.is_floating_point() else v
        emb = self.model.encode_audio(batch, device=self.device)["embedding"]
        return self.model.audio_projection(emb).float()

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
