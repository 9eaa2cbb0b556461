"""Microsoft's CLAP (MS-CLAP) as a space: ``msclap:2023``, ``msclap:2022`` or ``msclap:PATH``.

Package: ``transformers`` (``pip install 'freebind[msclap]'``); the ``msclap`` package is
never imported (it is the tests' reference). The released checkpoints
(``CLAP_weights_2023.pth``, ``CLAP_weights_2022.pth`` in ``microsoft/msclap``, whose card
declares the Microsoft Public License, MS-PL; the msclap package's code is MIT) are read
with ``weights_only=True`` and loaded key for key, strictly, into freebind's model:

* ``2023`` — HTSAT-tiny audio tower (transformers' ``ClapAudioModel``, the same Swin
  transformer; keys renamed as for LAION-CLAP, :func:`freebind.spaces.clap.convert_state_dict`),
  GPT-2 text tower (transformers' ``GPT2Model``, pooled at the last token that is not id 0),
  both through MS-CLAP's projection (Linear–GELU–Linear, residual, LayerNorm) to 1024-d.
* ``2022`` — CNN14 audio tower (freebind's own), BERT-base-uncased text
  tower (``[CLS]``), same projections, 1024-d (CNN14 and the projection:
  :mod:`freebind.spaces.families.msclap_model`).

Preprocessing, as MS-CLAP's own recipe (its ``configs/config_20xx.yml`` and model code):
audio decoded to mono and resampled to 44.1 kHz with torchaudio's sinc resampler
(:func:`~freebind.spaces.audio_features.sinc_resample`), 7 s (2023) / 5 s (2022): a shorter
clip is repeated and cut; a longer one is centre-cropped (upstream crops at random).
Log mel inside the model as torchlibrosa computes it (centred reflect-padded STFT, periodic
Hann, power, Slaney mel, ``10·log10(max(x, 1e-10))``): 2023's HTSAT uses its own settings
(filters for 32 kHz, 1024-point window, hop 320, 64 mels, 50–14000 Hz: the HTSAT config the
model code reads, not the YAML's), 2022's CNN14 the YAML's (44.1 kHz, 1024, 320, 64,
50–14000 Hz). Text: GPT-2's BPE on ``text + ' <|endoftext|>'``, pad id 0 (``!``), 77 tokens;
BERT's uncased WordPiece, 100 tokens. Longer texts are cut to the length (upstream's batching
fails on them), GPT-2 keeping its end token.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces import weights
from freebind.spaces.adapter import EncoderAdapter, reject_unknown

PREFIX = "msclap"
HF_REPO = "microsoft/msclap"
ORIGIN = "Microsoft's CLAP release (huggingface.co/microsoft/msclap)"
#: the weights' licence as their Hub repository's card declares it (``license: ms-pl``); the
#: msclap package's code is MIT, the weights freebind downloads are the Hub's files
LICENCE = "MS-PL"
DIM = 1024
PREPROCESS_VERSION = "msclap-pre-1"
#: torchlibrosa's log mel as HTSAT's model code configures it (msclap.models.config)
HTSAT_MEL = dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50,
                 fmax=14000)
#: each release: checkpoint, towers, audio recipe, text recipe (configs/config_20xx.yml)
VERSIONS = {
    "2023": dict(file="CLAP_weights_2023.pth", audio="HTSAT", text="gpt2",
                 tokenizer_repo="openai-community/gpt2", tokenizer_files=("vocab.json",
                                                                          "merges.txt"),
                 text_len=77, rate=44100, duration=7, out_emb=768, mel=HTSAT_MEL),
    "2022": dict(file="CLAP_weights_2022.pth", audio="Cnn14", text="bert-base-uncased",
                 tokenizer_repo="google-bert/bert-base-uncased", tokenizer_files=("vocab.txt",),
                 text_len=100, rate=44100, duration=5, out_emb=2048,
                 mel=dict(sample_rate=44100, window_size=1024, hop_size=320, mel_bins=64,
                          fmin=50, fmax=14000)),
}
#: the Hub names of the tokenizer repositories, old and new
TOKENIZER_ALIASES = {"openai-community/gpt2": ("openai-community/gpt2", "gpt2"),
                     "google-bert/bert-base-uncased": ("google-bert/bert-base-uncased",
                                                       "bert-base-uncased")}
#: HTSAT-tiny (the sizes HTSAT_Swin_Transformer is built with by MS-CLAP)
HTSAT_TINY = dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[4, 8, 16, 32])
#: checkpoint tensors freebind's model does not hold: the in-model spectrogram (computed by
#: freebind), the AudioSet heads, the temperature, buffers some library versions save
_DROPPED = (r"^audio_encoder\.base\.(htsat\.)?(spectrogram_extractor|logmel_extractor|"
            r"tscam_conv|head|fc_audioset)\.", r"^logit_scale$", r"\.attn_mask$",
            r"\.attn\.(bias|masked_bias)$", r"embeddings\.position_ids$")


def version_of(spec: str) -> str | None:
    """The release a spec names (``2023``, ``2022``, or a path whose name says it)."""
    if spec in VERSIONS:
        return spec
    name = Path(spec).name
    for version, cfg in VERSIONS.items():
        if name == cfg["file"]:
            return version
    return None


def weight_file(version: str) -> weights.WeightFile:
    name = VERSIONS[version]["file"]
    return weights.WeightFile(filename=name, family="msclap", origin=ORIGIN,
                              library_paths=lambda: weights.hf_cached([HF_REPO], name),
                              fetch=weights.hf_fetch(HF_REPO, name))


def tokenizer_files(version: str) -> list[weights.WeightFile]:
    cfg = VERSIONS[version]
    repo = cfg["tokenizer_repo"]
    return [weights.WeightFile(
        filename=f, family=f"msclap/{cfg['text']}", what="tokenizer file",
        origin=f"the {cfg['text']} tokenizer (huggingface.co/{repo})",
        library_paths=lambda f=f: weights.hf_cached(TOKENIZER_ALIASES[repo], f),
        fetch=weights.hf_fetch(repo, f)) for f in cfg["tokenizer_files"]]


def resolve_family(spec: str, ref: str):
    """``msclap:2023|2022|PATH[@2023|@2022]`` → SpaceInfo (1024-d audio+text, no weights)."""
    from freebind.spaces.protocol import SpaceInfo

    path, version = spec, version_of(spec)
    head, sep, tail = spec.rpartition("@")
    if sep and tail in VERSIONS:
        path, version = head, tail
    if not spec or version not in VERSIONS:
        raise SpaceError(f"{ref}: give an MS-CLAP release (msclap:2023, msclap:2022) or a "
                         f"checkpoint path with its release (msclap:/path/to/file.pth@2023)")
    options = [("version", version)]
    if path not in VERSIONS:
        options.append(("checkpoint", path))
    audio, text = VERSIONS[version]["audio"], VERSIONS[version]["text"]
    return SpaceInfo(name=ref, family="msclap", modalities=("audio", "text"), dim=DIM,
                     description=f"MS-CLAP {version} ({audio} audio, {text} text)",
                     options=tuple(options), licence=LICENCE,
                     loader=f"{__name__}:load", checker=f"{__name__}:check",
                     fetcher=f"{__name__}:fetch")


def _opts(info) -> tuple[str, str | None]:
    opts = dict(getattr(info, "options", ()) or ())
    return opts.get("version", "2023"), opts.get("checkpoint")


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available("transformers")
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[msclap]'"
    version, ckpt = _opts(info)
    found = Path(ckpt) if ckpt and Path(ckpt).exists() else weight_file(version).find_local()
    if found is None:
        return False, f"weights missing: {weight_file(version).home_path}"
    if any(w.find_local() is None for w in tokenizer_files(version)):
        return True, f"{found} (text tokenizer missing: audio only)"
    return True, str(found)


def fetch(info) -> list[Path]:
    """``freebind download``: the checkpoint and the text tower's tokenizer files."""
    version, ckpt = _opts(info)
    return [weights.resolve(weight_file(version), ckpt),
            *(weights.resolve(w) for w in tokenizer_files(version))]


def load(info=None, version: str | None = None, checkpoint: str | None = None,
         device: str | None = None, precision: str | None = None, batch_size: int = 16,
         tokenizer: str | None = None, text_config: dict | None = None,
         download: bool = True, workers: int | None = None, **unused) -> "MsClapSpace":
    """Load an MS-CLAP release. ``text_config`` overrides the text tower's configuration
    (tests build small GPT-2 / BERT towers); ``tokenizer`` is a folder of tokenizer files."""
    reject_unknown(unused, "MS-CLAP")
    opt_version, opt_ckpt = _opts(info)
    version = str(version or opt_version)
    if version not in VERSIONS:
        raise SpaceError(f"unknown MS-CLAP release {version!r}; known: {', '.join(VERSIONS)}")
    path = weights.resolve(weight_file(version), checkpoint or opt_ckpt, download=download)
    tok_dir = _tokenizer_dir(version, tokenizer, download)
    return MsClapSpace(path, version, name=getattr(info, "name", f"msclap:{version}"),
                       device=device, precision=precision, batch_size=batch_size,
                       tokenizer_dir=tok_dir, text_config=text_config, workers=workers)


def _tokenizer_dir(version: str, explicit: str | None, download: bool):
    """The folder of the tokenizer files, or the reason it could not be found (text only
    fails then; audio works)."""
    names = VERSIONS[version]["tokenizer_files"]
    if explicit:
        folder = Path(explicit).expanduser()
        missing = [f for f in names if not (folder / f).exists()]
        if missing:
            raise SpaceError(f"tokenizer folder {folder} lacks {', '.join(missing)}")
        return folder
    try:
        paths = [weights.resolve(w, None, download=download) for w in tokenizer_files(version)]
    except SpaceError as exc:
        return str(exc)
    return weights.one_folder(paths, "freebind-msclap-tok-")


# --- the model ------------------------------------------------------------------------------
def _torch():
    from freebind.spaces import compat

    compat.torchvision_if_present()  # transformers imports torchvision when it is installed
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise SpaceError(f"MS-CLAP needs torch and transformers ({exc.name or exc} missing): "
                         f"pip install 'freebind[msclap]'") from None
    return torch


def build_model(version: str, text_config: dict | None = None):
    """freebind's MS-CLAP of a release (random weights): ``audio_base``, ``audio_projection``,
    ``text_base``, ``text_projection``."""
    _torch()
    from torch import nn

    from freebind.spaces.families.msclap_model import Cnn14, Projection

    cfg = VERSIONS[version]
    model = nn.Module()
    if cfg["audio"] == "HTSAT":
        from transformers import ClapAudioConfig, ClapAudioModel, GPT2Config, GPT2Model

        from freebind.spaces.clap import htsat_audio_config

        model.audio_base = ClapAudioModel(ClapAudioConfig(**htsat_audio_config(HTSAT_TINY)))
        model.text_base = GPT2Model(GPT2Config(**(text_config or {})))
        width = model.text_base.config.n_embd
    else:
        from transformers import BertConfig, BertModel

        model.audio_base = Cnn14(cfg["out_emb"])
        model.text_base = BertModel(BertConfig(**(text_config or {})), add_pooling_layer=True)
        width = model.text_base.config.hidden_size
    model.audio_projection = Projection(cfg["out_emb"], DIM)
    model.text_projection = Projection(width, DIM)
    return model


def convert_state_dict(state: dict) -> dict:
    """An MS-CLAP checkpoint's tensors in freebind's layout (see :func:`build_model`)."""
    from freebind.spaces import clap

    out, htsat = {}, {}
    for key, value in state.items():
        if any(re.search(p, key) for p in _DROPPED):
            continue
        if key.startswith("audio_encoder.base.htsat."):
            htsat["audio_branch." + key[len("audio_encoder.base.htsat."):]] = value
        elif key.startswith("audio_encoder.base."):
            out["audio_base." + key[len("audio_encoder.base."):]] = value
        elif key.startswith("audio_encoder.projection."):
            out["audio_projection." + key[len("audio_encoder.projection."):]] = value
        elif key.startswith("caption_encoder.base."):
            out["text_base." + key[len("caption_encoder.base."):]] = value
        elif key.startswith("caption_encoder.projection."):
            out["text_projection." + key[len("caption_encoder.projection."):]] = value
        else:
            out[key] = value  # reported as unexpected by the strict load
    for key, value in clap.convert_state_dict(htsat).items():
        out["audio_base." + key[len("audio_model."):]] = value
    return out


class MsClapSpace(EncoderAdapter):
    """A loaded MS-CLAP release implementing the Space protocol."""

    family = "msclap"

    def __init__(self, checkpoint, version: str, name: str = "msclap:2023",
                 device: str | None = None, precision: str | None = None, batch_size: int = 16,
                 tokenizer_dir=None, text_config: dict | None = None,
                 workers: int | None = None):
        self.name, self.version = name, version
        self.modalities, self.dim = ("audio", "text"), DIM
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        self.cfg = VERSIONS[version]
        self.checkpoint = Path(checkpoint)
        state = weights.strip_prefix(weights.load_state_dict(self.checkpoint,
                                                             "MS-CLAP weights"))
        self._check_release(state)
        self.model = build_model(version, text_config)
        own = self.model.state_dict()
        converted = convert_state_dict(state)
        weights.load_into(self.model, converted, self.checkpoint,
                          ignore=[k for k in own if k.endswith(("position_ids",
                                                                "relative_position_index"))
                                  and k not in converted])
        self.model.eval().to(device=self.device, dtype=self.dtype)
        self.samples = int(self.cfg["rate"] * self.cfg["duration"])
        self._banks = None
        self._tokenizer, self._tokenizer_source = None, tokenizer_dir
        self.fingerprint = hashlib.sha256(json.dumps(
            ["msclap", version, weights.file_digest(self.checkpoint), text_config,
             PREPROCESS_VERSION, self.precision], sort_keys=True).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    def _check_release(self, state: dict) -> None:
        htsat = any(k.startswith("audio_encoder.base.htsat.") for k in state)
        if not any(k.startswith("audio_encoder.") for k in state):
            raise SpaceError(f"{self.checkpoint}: not an MS-CLAP checkpoint (no "
                             f"audio_encoder.* tensors)")
        if htsat != (self.cfg["audio"] == "HTSAT"):
            found = "HTSAT (2023)" if htsat else "CNN14 (2022)"
            raise SpaceError(f"{self.checkpoint}: its tensors are an MS-CLAP {found} model, "
                             f"not the {self.version} release asked for")

    # --- text ---------------------------------------------------------------------------
    def tokenizer(self):
        if self._tokenizer is None:
            source = self._tokenizer_source
            if source is None or isinstance(source, str) and not Path(source).is_dir():
                raise SpaceError(f"{self.name} cannot encode text: "
                                 + (source or "no tokenizer files found"))
            from freebind.spaces.clap import check_tokenizer

            if self.cfg["text"] == "gpt2":
                from transformers import GPT2Tokenizer

                tok = GPT2Tokenizer.from_pretrained(str(source), local_files_only=True)
                tok.add_special_tokens({"pad_token": "!"})
            else:
                from transformers import BertTokenizer

                tok = BertTokenizer.from_pretrained(str(source), local_files_only=True,
                                                    do_lower_case=True)
            vocab = int(self.model.text_base.get_input_embeddings().weight.shape[0])
            self._tokenizer = check_tokenizer(tok, vocab, self.name, source)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> dict:
        """MS-CLAP's ``preprocess_text``: GPT-2 gets ``' <|endoftext|>'`` appended, every
        text is padded to the release's length (longer ones cut, GPT-2's end token kept)."""
        import torch

        tok, length = self.tokenizer(), int(self.cfg["text_len"])
        gpt = self.cfg["text"] == "gpt2"
        rows = []
        for text in texts:
            enc = tok(str(text) + (" <|endoftext|>" if gpt else ""), add_special_tokens=True)
            ids = list(enc["input_ids"])
            if len(ids) > length:
                ids = ids[:length - 1] + ids[-1:]
            pad = length - len(ids)
            rows.append((ids + [tok.pad_token_id] * pad, [1] * len(ids) + [0] * pad))
        out = {"input_ids": torch.tensor([r[0] for r in rows], dtype=torch.long),
               "attention_mask": torch.tensor([r[1] for r in rows], dtype=torch.long)}
        if not gpt:
            out["token_type_ids"] = torch.zeros_like(out["input_ids"])
        return out

    # --- audio --------------------------------------------------------------------------
    def audio_item(self, path):
        """One file's waveform: mono, 44.1 kHz (torchaudio's sinc resampler), repeated to the
        release's duration when shorter, centre-cropped when longer."""
        import torch

        from freebind.data import media
        from freebind.spaces import audio_features as af

        wave = media.load_audio(path, self.cfg["rate"], resampler=af.sinc_resample)
        return torch.from_numpy(fit_duration(wave, self.samples))

    def prepare(self, modality: str, items: Sequence):
        import torch

        if modality == "text":
            return self.tokenize(items)
        if modality == "audio":
            return torch.stack([self.audio_item(p) for p in items])
        raise SpaceError(f"space {self.name} does not encode {modality!r}")

    def log_mel(self, waveform):
        """torchlibrosa's log mel of the release's audio tower, ``[B, 1, frames, mels]``."""
        import torch

        from freebind.spaces import audio_features as af
        from freebind.spaces.clap import slaney_mel_db

        mel = self.cfg["mel"]
        if self._banks is None:
            self._banks = torch.from_numpy(af.slaney_mel_banks(
                mel["window_size"] // 2 + 1, mel["fmin"], mel["fmax"], mel["mel_bins"],
                mel["sample_rate"])).to(self.device)
        return slaney_mel_db(waveform.to(self.device), mel, self._banks)

    def forward(self, modality: str, inputs):
        import torch

        with torch.no_grad():
            if modality == "text":
                return self.model.text_projection(self._text_features(inputs))
            mel = self.log_mel(inputs).to(self.dtype)
            if self.cfg["audio"] == "HTSAT":
                feats = self.model.audio_base(input_features=mel).pooler_output
            else:
                feats = self.model.audio_base(mel)
            return self.model.audio_projection(feats)

    def _text_features(self, inputs: dict):
        import torch

        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        hidden = self.model.text_base(**inputs)[0]
        if self.cfg["text"] != "gpt2":
            return hidden[:, 0]
        # MS-CLAP pools at (number of ids != 0) - 1: the end token unless the text holds "!"
        last = torch.ne(inputs["input_ids"], 0).sum(-1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    # --- encode hooks (EncoderAdapter) --------------------------------------------------
    def _before_encode(self, modality: str) -> None:
        if modality == "text":
            self.tokenizer()

    def _per_item(self, modality: str):
        return self.audio_item if modality == "audio" else None

    def __repr__(self) -> str:
        return (f"MsClapSpace(name={self.name!r}, version={self.version}, "
                f"device={self.device}, precision={self.precision})")


def fit_duration(wave, samples: int):
    """MS-CLAP's duration policy: a clip of at most ``samples`` is repeated
    ``ceil(samples / n)`` times and cut; a longer one is centre-cropped (upstream: a random
    crop)."""
    import numpy as np

    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = wave.shape[0]
    if n == 0:
        raise SpaceError("empty audio clip")
    if n <= samples:
        return np.tile(wave, int(np.ceil(samples / n)))[:samples].copy()
    start = (n - samples) // 2
    return wave[start:start + samples].copy()
