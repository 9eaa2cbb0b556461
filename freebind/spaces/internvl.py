"""InternVL-C (``InternVL``): the image-text expert of the paper, 768-d.

InternVL-14B-224px is published as a Hugging Face repository whose model class is *remote
code* (``modeling_internvl.py`` inside the repository). freebind runs it only when the user
allows that explicitly: ``trust_remote_code=True`` (CLI: ``--space-option trust_remote_code=true``)
or ``FREEBIND_TRUST_REMOTE_CODE=1``. Package: ``transformers`` (``pip install
'freebind[internvl]'``); a GPU with bf16 is expected (the model has 14 B parameters).

Pipeline (the model card's InternVL-C recipe): images through the repository's
``CLIPImageProcessor`` (224 px); texts prefixed with ``summarize:``, tokenized by the
repository's LLaMA tokenizer (EOS appended, pad id 0 on the right, 80 tokens);
``encode_image(pixel_values, mode="InternVL-C")`` and ``encode_text(input_ids)``; rows
L2-normalised.

The published remote code predates transformers 5; three load-time fixes keep its numbers
(each applied only when needed, see docs/real-spaces.md):

* ``InternVLModel.__init__`` has ``self.post_init()`` commented out, and transformers 5
  reads attributes that ``post_init`` sets (``all_tied_weights_keys``): the model class is
  loaded through a subclass whose ``__init__`` calls ``post_init`` when the original did
  not (weights are not initialised there: transformers builds the model on the meta device).
* transformers 5 builds the model on the meta device and refills *non-persistent* buffers
  with uninitialised memory; the QLLaMA rotary tables (``inv_freq``, ``cos_cached``,
  ``sin_cached``) are not in the checkpoint, so they are recomputed after loading, with the
  remote code's own formula (base 10000, float32).
* ``encode_text`` pools the token at ``attention_mask.sum(1) - 1``, which is the last real
  token only with padding on the right; transformers 5 ignores ``use_fast=False`` and its
  LLaMA tokenizer pads on the left, so the padding side is set to ``right`` explicitly.

The remote code imports ``peft``, ``timm`` and ``einops``, and the tokenizer reads the
sentencepiece model through ``sentencepiece`` and ``protobuf``: :data:`REQUIRED_MODULES`
lists them, ``check()`` reports the space as not installed without any of them and loading
names the missing ones before any work.

Weights: explicit ``checkpoint=DIR`` → ``$FREEBIND_HOME/weights/internvl/InternVL-14B-224px/``
→ the Hugging Face cache → ``snapshot_download`` into freebind's folder when online. Checked
with the published remote code at a tiny configuration, not with the 14 B weights (no GPU,
no network on the build machines).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces import compat, weights
from freebind.spaces.adapter import reject_unknown
from freebind.spaces.adapter import EncoderAdapter

REPO = "OpenGVLab/InternVL-14B-224px"
TEXT_PREFIX = "summarize:"
MAX_TEXT_TOKENS = 80
PREPROCESS_VERSION = "internvl-c-1"
#: Every module InternVL-C's code needs (freebind's adapter, the remote code, the tokenizer).
REQUIRED_MODULES = ("torch", "transformers", "sentencepiece", "google.protobuf", "peft", "timm",
                    "einops")


def home_dir() -> Path:
    return weights.weights_dir("internvl") / REPO.split("/")[-1]


def _cached_snapshot() -> Path | None:
    for hit in weights.hf_cached([REPO], "config.json"):
        return hit.parent
    return None


def local_dir() -> Path | None:
    if (home_dir() / "config.json").exists():
        return home_dir()
    return _cached_snapshot()


def remote_code_allowed(option) -> bool:
    if option is not None:
        return _truthy(option)
    return _truthy(os.environ.get("FREEBIND_TRUST_REMOTE_CODE", ""))


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available(*REQUIRED_MODULES)
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[internvl]'"
    found = local_dir()
    if found is None:
        return False, f"weights missing: {home_dir()} (repository {REPO})"
    note = "" if remote_code_allowed(None) else " (needs trust_remote_code=True)"
    return True, f"{found}{note}"


def load(info=None, checkpoint: str | None = None, trust_remote_code=None,
         device: str | None = None, precision: str | None = None, batch_size: int = 16,
         download: bool = True, workers: int | None = None, **unused) -> "InternVLSpace":
    reject_unknown(unused, "InternVL")
    if not remote_code_allowed(trust_remote_code):
        raise SpaceError(f"InternVL-C runs model code from the repository {REPO}; allow it "
                         "explicitly with trust_remote_code=True (CLI: --space-option "
                         "trust_remote_code=true) or FREEBIND_TRUST_REMOTE_CODE=1")
    folder = _resolve_folder(checkpoint, download)
    return InternVLSpace(folder, name=getattr(info, "name", "InternVL"), device=device,
                         precision=precision, batch_size=batch_size, workers=workers)


def _resolve_folder(checkpoint: str | None, download: bool) -> Path:
    if checkpoint:
        folder = Path(checkpoint).expanduser()
        if not (folder / "config.json").exists():
            raise SpaceError(f"{folder}: not an InternVL model folder (no config.json)")
        return folder
    found = local_dir()
    if found is not None:
        return found
    wf = weights.WeightFile(filename=REPO.split("/")[-1], family="internvl",
                            origin=f"huggingface.co/{REPO}", what="model folder")
    if not download:
        raise SpaceError(wf.missing_message("downloads disabled"))
    if weights.offline():
        raise SpaceError(wf.missing_message("offline"))
    if not weights.reachable("huggingface.co"):
        raise SpaceError(wf.missing_message("offline: cannot reach huggingface.co"))
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=REPO, local_dir=str(home_dir())))
    except Exception as exc:
        raise SpaceError(wf.missing_message(f"download failed: {str(exc)[:160]}")) from None


class InternVLSpace(EncoderAdapter):
    family = "internvl"

    def __init__(self, folder, name: str = "InternVL", device: str | None = None,
                 precision: str | None = None, batch_size: int = 16, workers: int | None = None):
        ok, missing = weights.package_available(*REQUIRED_MODULES)
        if not ok:
            raise SpaceError(f"InternVL-C needs packages that are not installed ({missing}); "
                             "install them with `pip install 'freebind[internvl]'`")
        compat.torchvision_if_present()
        try:
            from transformers import AutoTokenizer, CLIPImageProcessor
        except ImportError:
            raise SpaceError("InternVL needs transformers: pip install 'freebind[internvl]'") \
                from None
        self.folder = Path(folder)
        self.name = name
        self.modalities = ("image", "text")
        self._init_runtime(device, precision, batch_size, workers, "bf16")
        try:
            import transformers

            # transformers 5 renamed torch_dtype to dtype
            dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 \
                else "torch_dtype"
            # the remote code print()s notes (flash-attention, apex): keep stdout for --json
            with contextlib.redirect_stdout(sys.stderr):
                model_class = _remote_model_class(self.folder)
                self.model = model_class.from_pretrained(
                    str(self.folder), low_cpu_mem_usage=True, local_files_only=True,
                    **{dtype_kw: self.dtype}).eval().to(self.device)
            recompute_rotary_tables(self.model)
            self.processor = CLIPImageProcessor.from_pretrained(str(self.folder),
                                                                local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(self.folder), use_fast=False, add_eos_token=True, trust_remote_code=True,
                local_files_only=True)
        except SpaceError:
            raise
        except Exception as exc:
            reason = str(exc).strip().splitlines()
            raise SpaceError(f"{self.folder}: cannot load InternVL-C "
                             f"({(reason[0] if reason else type(exc).__name__)[:200]})") from None
        self.tokenizer.pad_token_id = 0
        self.tokenizer.padding_side = "right"  # encode_text pools at attention_mask.sum(1) - 1
        self.dim = 768
        cfg = self.folder / "config.json"
        digest = hashlib.sha256(cfg.read_bytes()).hexdigest()[:16]
        shards = sorted(self.folder.glob("*.safetensors")) or sorted(self.folder.glob("*.bin"))
        if shards:
            digest += weights.file_digest(shards[0])
        self.fingerprint = hashlib.sha256(json.dumps(
            ["internvl-c", digest, PREPROCESS_VERSION, self.precision]).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    def prepare(self, modality: str, items: Sequence):
        from freebind.data import media

        if modality == "image":
            images = [media.load_image(p) for p in items]
            return self.processor(images=images, return_tensors="pt").pixel_values
        texts = [TEXT_PREFIX + str(t) for t in items]
        return self.tokenizer(texts, return_tensors="pt", max_length=MAX_TEXT_TOKENS,
                              truncation=True, padding="max_length").input_ids

    def forward(self, modality: str, inputs):
        inputs = inputs.to(self.device)
        if modality == "image":
            return self.model.encode_image(inputs.to(self.dtype), mode="InternVL-C").float()
        return self.model.encode_text(inputs).float()

    def _per_item(self, modality: str):  # the encode hook of EncoderAdapter
        if modality == "text":
            return None
        from freebind.data import media

        return lambda p: self.processor(images=[media.load_image(p)],
                                        return_tensors="pt").pixel_values[0]


def _remote_model_class(folder: Path):
    """The repository's ``AutoModel`` class (remote code), through a subclass that runs
    ``post_init`` when the original ``__init__`` left it out (transformers 5 needs it)."""
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=True,
                                        local_files_only=True)
    ref = (getattr(config, "auto_map", None) or {}).get("AutoModel")
    if not ref:
        raise SpaceError(f"{folder}: config.json names no AutoModel class (auto_map)")
    base = get_class_from_dynamic_module(ref, str(folder), local_files_only=True)
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        return base  # the code was written for transformers 4: nothing to add

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        if not hasattr(self, "all_tied_weights_keys"):  # post_init() was left out
            self.post_init()

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})


def recompute_rotary_tables(model) -> int:
    """Recompute the rotary tables of every rotary-embedding module in ``model`` (its
    ``inv_freq`` and non-persistent ``cos_cached``/``sin_cached``) with the remote code's
    formula: ``inv_freq = 1 / base^(2i/dim)``, ``cos/sin(outer(arange(n), inv_freq))`` repeated
    twice, float32, on the module's device. Returns how many modules were recomputed."""
    import torch

    count = 0
    for module in model.modules():
        cos = getattr(module, "cos_cached", None)
        if not isinstance(cos, torch.Tensor) or "cos_cached" not in module._buffers:
            continue
        dim, n = int(cos.shape[-1]), int(cos.shape[-2])
        dim = int(getattr(module, "dim", dim))
        n = int(getattr(module, "max_seq_len_cached", n))
        base = float(getattr(module, "base", 10000))
        device = cos.device
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32,
                                                device=device) / dim))
        if "inv_freq" in module._buffers:
            module._buffers["inv_freq"] = inv_freq
        else:
            module.inv_freq = inv_freq
        freqs = torch.outer(torch.arange(n, dtype=torch.float32, device=device), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        module.register_buffer("cos_cached", emb.cos()[None, None, :, :], persistent=False)
        module.register_buffer("sin_cached", emb.sin()[None, None, :, :], persistent=False)
        count += 1
    return count
