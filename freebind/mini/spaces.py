"""The mini spaces as :class:`freebind.spaces.protocol.Space` objects, loaded from the weights
that ship in ``freebind/mini/weights/<which>.safetensors``.

Registered in :mod:`freebind.spaces.catalog` as ``mini:bind``, ``mini:vl``, ``mini:clap``
and ``mini:clap2`` with loader ``freebind.mini.spaces:load`` (option ``which``) and checker
``freebind.mini.spaces:check``. ``weights=PATH`` loads another file of the same format (for
instance one written by ``scripts/train_mini.py --out``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from freebind.util.errors import SpaceError, UsageError
from freebind.spaces.guard import check_finite

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WHICH = ("bind", "vl", "clap", "clap2", "3d")


def weights_path(which: str) -> Path:
    if which not in WHICH:
        raise SpaceError(f"unknown mini space {which!r} (known: {', '.join(WHICH)})")
    return WEIGHTS_DIR / f"{which}.safetensors"


def check(info) -> tuple[bool, str]:
    """Whether the shipped weights of this mini space are present (no heavy imports)."""
    which = dict(info.options).get("which", info.name.partition(":")[2])
    try:
        path = weights_path(which)
    except SpaceError as exc:
        return False, str(exc)
    if not path.is_file():
        return False, f"weights missing: {path} (run scripts/train_mini.py to rebuild them)"
    return True, f"shipped weights {path.name} ({path.stat().st_size / 1024:.0f} KB)"


def fingerprint_of(data: bytes) -> str:
    """sha256 of the weights file bytes and the preprocessing version."""
    from freebind.mini.features import PREPROCESS_VERSION

    h = hashlib.sha256(data)
    h.update(b"\0" + PREPROCESS_VERSION.encode())
    return "sha256:" + h.hexdigest()


class MiniSpace:
    """A trained mini space: one tower per modality, L2-normalised float32 outputs."""

    family = "mini"

    def __init__(self, name: str, towers, tokenizer, modalities: tuple[str, ...], dim: int,
                 fingerprint: str, metadata: dict):
        self.name = name
        self.towers = towers
        self.tokenizer = tokenizer
        self.modalities = modalities
        self.dim = dim
        self.fingerprint = fingerprint
        self.metadata = metadata

    def __repr__(self) -> str:
        return (f"MiniSpace({self.name!r}, modalities={self.modalities}, dim={self.dim}, "
                f"fingerprint={self.fingerprint[:19]}…)")

    # -- arrays (what training and the role check use) ------------------------------------
    def embed_waves(self, waves, batch_size: int = 256):
        """Float32 mono 16 kHz clips [N, 16000] -> [N, dim]."""
        from freebind.mini.features import log_mel

        return self._run("audio", waves, log_mel, batch_size)

    def embed_pixels(self, pixels, batch_size: int = 256):
        """uint8 images [N, 40, 40, 3] -> [N, dim]."""
        from freebind.mini.features import image_tensor

        return self._run("image", pixels, image_tensor, batch_size)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256):
        return self._run("text", list(texts), self.tokenizer, batch_size)

    def embed_points(self, clouds, batch_size: int = 256):
        """Float32 clouds [N, 128, 6] (freebind.mini.shapes.tower_input) -> [N, dim]."""
        return self._run("point", clouds, _cloud_tensor, batch_size)

    def _run(self, modality, items, prepare, batch_size):
        import torch
        import torch.nn.functional as F

        self._require(modality)
        if len(items) == 0:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(items), batch_size):
                x = prepare(items[i:i + batch_size])
                outs.append(F.normalize(self.towers[modality](x).float(), dim=-1))
        return torch.cat(outs)

    def _require(self, modality):
        if modality not in self.modalities:
            raise UsageError(f"{self.name} has no {modality!r} encoder "
                             f"(modalities: {', '.join(self.modalities)})")

    # -- the two halves of encode (decode in one stage, encode in another) ----------------
    def decode_item(self, modality: str, item):
        """One file decoded to the tower's input (a 16 kHz clip, a uint8 image) or a text
        checked to be a string; raises MediaError for a file that cannot be decoded."""
        from freebind.mini.features import load_pixels, load_waves

        self._require(modality)
        if modality == "text":
            if not isinstance(item, str):
                raise UsageError(f"{self.name}: a text item must be a string")
            return item
        if modality == "point":
            return _load_clouds([item])[0]
        return (load_waves if modality == "audio" else load_pixels)([item])[0]

    def encode_decoded(self, modality: str, inputs, batch_size: int = 256):
        """Rows of inputs made by :meth:`decode_item`."""
        with one_thread():
            return self._encode_decoded(modality, inputs, batch_size)

    def _encode_decoded(self, modality: str, inputs, batch_size: int = 256):
        import numpy as np
        import torch

        self._require(modality)
        inputs = list(inputs)
        if not inputs:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        labels = [f"item {i}" for i in range(len(inputs))]
        if modality == "text":
            return check_finite(self.embed_texts(inputs, batch_size), self.name, modality,
                                inputs)
        stacked = np.stack(inputs)
        embed = {"audio": self.embed_waves, "point": self.embed_points}.get(modality,
                                                                          self.embed_pixels)
        out = embed(stacked, batch_size)
        return check_finite(out, self.name, modality, labels)  # NaN/inf never returned

    # -- the Space protocol --------------------------------------------------------------
    def encode(self, modality: str, items: Sequence[Any], batch_size: int = 32):
        """Audio/image file paths or text strings -> float32 tensor [N, dim], unit rows.
        Computed on one thread (:func:`one_thread`)."""
        with one_thread():
            return self._encode(modality, items, batch_size)

    def _encode(self, modality: str, items: Sequence[Any], batch_size: int = 32):
        from freebind.mini.features import load_pixels, load_waves

        self._require(modality)
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        items = list(items)
        if modality == "text":
            bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
            if bad:
                raise UsageError(f"{self.name}: text item {bad[0]} is not a string")
            return check_finite(self.embed_texts(items, batch_size), self.name, modality, items)
        import torch

        outs = []
        for i in range(0, len(items), max(batch_size, 1)):
            chunk = items[i:i + batch_size]
            if modality == "audio":
                outs.append(self.embed_waves(load_waves(chunk), batch_size))
            elif modality == "point":
                outs.append(self.embed_points(_load_clouds(chunk), batch_size))
            else:
                outs.append(self.embed_pixels(load_pixels(chunk), batch_size))
        out = torch.cat(outs) if outs else torch.zeros((0, self.dim), dtype=torch.float32)
        return check_finite(out, self.name, modality, items)  # NaN/inf never returned


def _cloud_tensor(clouds):
    import numpy as np
    import torch

    return torch.as_tensor(np.asarray(clouds, dtype=np.float32))


def _load_clouds(paths):
    """Point-cloud files as the mini point tower's input [N, 128, 6] (MediaError naming a
    file that cannot be read)."""
    import numpy as np

    from freebind.data.points import load_points
    from freebind.mini.shapes import TOWER_POINTS

    return np.stack([load_points(p, TOWER_POINTS) for p in paths])


def load_file(path, name: str | None = None) -> MiniSpace:
    """Load a mini space from a weights file written by ``scripts/train_mini.py``."""
    from safetensors import safe_open
    from safetensors.torch import load as load_bytes

    from freebind.mini.encoders import build_towers
    from freebind.mini.features import PREPROCESS_VERSION, Tokenizer

    path = Path(path)
    try:
        data = path.read_bytes()
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_bytes(data)
    except FileNotFoundError:
        raise SpaceError(f"{path}: mini weights not found (run scripts/train_mini.py)") from None
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise SpaceError(f"{path}: not a readable mini weights file ({exc})") from None
    if meta.get("format") != "freebind-mini-1":
        raise SpaceError(f"{path}: not a freebind mini weights file (format "
                         f"{meta.get('format')!r})")
    if meta.get("preprocess") != PREPROCESS_VERSION:
        raise SpaceError(f"{path}: trained with preprocessing {meta.get('preprocess')!r}, "
                         f"this freebind uses {PREPROCESS_VERSION!r}; retrain with "
                         f"scripts/train_mini.py")
    config = json.loads(meta["config"])
    towers = build_towers(config)
    try:
        towers.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SpaceError(f"{path}: weights do not match the mini encoders "
                         f"({str(exc).splitlines()[0]})") from None
    towers.eval()
    modalities = tuple(json.loads(meta["modalities"]))
    tokenizer = Tokenizer(json.loads(meta["vocab"]))
    return MiniSpace(name or f"mini:{meta['which']}", towers, tokenizer, modalities,
                     int(meta["dim"]), fingerprint_of(data), meta)


#: loader options the real spaces take that a mini space accepts and ignores: the mini
#: encoders are tiny, always run on the CPU in float32 (so every embedding of a file is the
#: same, whatever the command line says), and decode in the calling thread
IGNORED_OPTIONS = ("device", "precision", "workers")
_PRECISIONS = ("fp32", "fp16", "bf16")


def load(info=None, which: str = "bind", weights: str | None = None, **options) -> MiniSpace:
    """Registry loader: ``freebind.spaces.get("mini:bind")`` ends here.

    ``device``, ``precision`` and ``workers`` are accepted (so ``--device cuda`` or
    ``--precision bf16`` never breaks a command that also uses mini spaces) and ignored;
    a precision that no space knows is still an error."""
    precision = options.get("precision")
    if precision is not None and str(precision).lower() not in _PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(_PRECISIONS)}")
    unknown = sorted(k for k in options if k not in IGNORED_OPTIONS)
    if unknown:
        raise UsageError(f"unknown option(s) for mini spaces: {', '.join(unknown)} "
                         f"(known: which, weights, and {', '.join(IGNORED_OPTIONS)}, ignored)")
    path = Path(weights) if weights else weights_path(which)
    space = load_file(path, name=getattr(info, "name", None) or f"mini:{which}")
    if info is not None and (space.dim != info.dim
                             or tuple(space.modalities) != tuple(info.modalities)):
        raise SpaceError(f"{path}: holds a {space.dim}-d space over "
                         f"{', '.join(space.modalities)}, but {info.name} is registered as "
                         f"{info.dim}-d over {', '.join(info.modalities)}")
    return space


_THREADS_LOCK = __import__("threading").Lock()
_THREADS_DEPTH = [0, 0]   # [active encodes, torch's thread count before the first]


class one_thread:
    """Mini encoders run on one torch thread: small models are fastest there, and the
    numbers do not depend on the machine's core count, so every engine (the local process,
    Ray workers started with one thread) writes the same bits. Re-entrant and safe across
    threads: the count in force before the first active encode is restored after the last."""

    def __enter__(self):
        import torch

        with _THREADS_LOCK:
            if _THREADS_DEPTH[0] == 0:
                _THREADS_DEPTH[1] = torch.get_num_threads()
                torch.set_num_threads(1)
            _THREADS_DEPTH[0] += 1
        return self

    def __exit__(self, *exc):
        import torch

        with _THREADS_LOCK:
            _THREADS_DEPTH[0] -= 1
            if _THREADS_DEPTH[0] == 0:
                torch.set_num_threads(_THREADS_DEPTH[1])
        return False
