"""Small shared pieces of the real adapters: precision/device handling, batching, and
imports that need care.

* ``import_torchvision()``: PyPI's torchvision wheel is a CUDA build; beside a CPU-only torch
  its native library fails to load and ``import torchvision`` then dies registering fake
  kernels for operators that were never defined. Only its pure-Python transforms are used
  here, so the two operator schemas are declared (no kernels) before importing it again.
* ``import_bare()``: a package whose ``__init__`` imports things freebind never uses
  (laion_clap's training hook) has its model module imported without running that
  ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from freebind.errors import SpaceError
from freebind.spaces import guard

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_TV_OPS = ("nms", "qnms")


def import_torchvision():
    """``import torchvision``, working around a torchvision whose native ops cannot load."""
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "transforms"):
        return sys.modules["torchvision"]
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    import torch

    for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in _TV_OPS:
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            continue  # already defined by an earlier import
    _KEEP.append(lib)
    return importlib.import_module("torchvision")


_KEEP: list = []  # the Library object must outlive the import


def torchvision_if_present() -> None:
    """Import torchvision through :func:`import_torchvision` when it is installed, so that
    libraries importing it later (transformers, timm, open_clip) find it working."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()


def require(module: str, extra: str, pip_name: str | None = None):
    """Import ``module`` or raise a SpaceError telling which extra installs it."""
    try:
        if importlib.util.find_spec("torchvision") is not None:
            import_torchvision()  # open_clip, timm and laion_clap import it
        return importlib.import_module(module)
    except ImportError as exc:
        raise SpaceError(f"{module} is not installed ({exc.name or module} missing); install it "
                         f"with `pip install 'freebind[{extra}]'`"
                         + (f" (package {pip_name})" if pip_name else "")) from None


def import_bare(package: str, module: str, extra: str, pip_name: str):
    """Import ``module`` (inside ``package``) without executing ``package/__init__.py``.

    ``imagebind/__init__`` imports its data module (pkg_resources, torchaudio, pytorchvideo,
    decord) and ``laion_clap/__init__`` its hook (librosa loading, wandb, webdataset, ...);
    freebind uses neither, only the model code below them."""
    if module in sys.modules:
        return sys.modules[module]
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SpaceError(f"{package} is not installed; install it with "
                             f"`pip install 'freebind[{extra}]'` (package {pip_name})")
        pkg = types.ModuleType(package)
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        pkg.__spec__ = spec
        sys.modules[package] = pkg
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()  # timm and laion_clap import it
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SpaceError(f"{module} cannot be imported ({exc.name} missing); install it with "
                         f"`pip install 'freebind[{extra}]'`") from None


def torch_dtype(precision: str):
    import torch

    if precision not in PRECISIONS:
        raise SpaceError(f"unknown precision {precision!r}; use one of "
                         f"{', '.join(PRECISIONS)}")
    return getattr(torch, PRECISIONS[precision])


def default_workers(workers: int | None) -> int:
    """Decoding threads: ``workers``, else ``$FREEBIND_WORKERS``, else min(8, CPUs), ≥ 2."""
    import os

    if workers:
        return int(workers)
    env = os.environ.get("FREEBIND_WORKERS")
    if env:
        return max(1, int(env))
    return max(2, min(8, os.cpu_count() or 2))


def default_precision(precision: str | None, family_default: str) -> str:
    """``precision``, else ``$FREEBIND_PRECISION``, else the family's default."""
    import os

    return precision or os.environ.get("FREEBIND_PRECISION") or family_default


def torch_device(device: str | None):
    """``device``, else ``$FREEBIND_DEVICE``, else CUDA when available, else CPU."""
    import os

    import torch

    device = device or os.environ.get("FREEBIND_DEVICE")
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SpaceError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpaceError(f"device {device!r} requested but CUDA is not available here")
    return dev


def check_precision(precision: str, device) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise SpaceError("precision fp16 is not supported on CPU; use fp32 or bf16")


def batches(items, size: int):
    if size < 1:
        raise SpaceError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def check_modality(space, modality: str) -> None:
    if modality not in space.modalities:
        raise SpaceError(f"space {space.name} does not encode {modality!r}; it encodes "
                         f"{', '.join(space.modalities)}")


def run_batched(items, prepare, forward, batch_size: int, workers: int = 2, timings=None,
                per_item=None, collate=None, lookahead: int = 2):
    """Encode ``items`` in batches, decoding ahead of the encoder in background threads.

    Either ``prepare(batch_items) -> inputs`` (one call per batch: tokenisation), or
    ``per_item(item) -> input`` with ``collate(list_of_inputs) -> inputs`` (files: each item
    decoded by a pool of ``workers`` threads, ``lookahead`` batches ahead of the encoder, so
    even the first batch is decoded in parallel). ``forward(inputs) -> Tensor[n, dim]`` runs
    in the calling thread. Returns the rows in item order, float32 and L2-normalised.
    ``timings`` (a dict) receives ``prepare_s`` (decoding time summed over threads),
    ``forward_s``, ``wait_s`` (time the encoder waited for data) and ``first_wait_s`` (the
    part of it spent on the first batch, which nothing can overlap)."""
    import time
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torch.nn import functional as F

    items = list(items)
    chunks = list(batches(items, batch_size))
    t = timings if timings is not None else {}
    for key in ("prepare_s", "forward_s", "wait_s"):
        t.setdefault(key, 0.0)
    lock = __import__("threading").Lock()

    def timed(fn, arg):
        start = time.perf_counter()
        out = fn(arg)
        with lock:
            t["prepare_s"] += time.perf_counter() - start
        return out

    if not chunks:
        return None
    outs = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(chunk):
            if per_item is not None:
                return [pool.submit(timed, per_item, x) for x in chunk]
            return [pool.submit(timed, prepare, chunk)]

        pending = deque(submit(c) for c in chunks[:lookahead])
        for i in range(len(chunks)):
            start = time.perf_counter()
            futures = pending.popleft()
            results = [f.result() for f in futures]
            waited = time.perf_counter() - start
            t["wait_s"] += waited
            if i == 0:
                t["first_wait_s"] = waited
            if i + lookahead < len(chunks):
                pending.append(submit(chunks[i + lookahead]))
            inputs = collate(results) if per_item is not None else results[0]
            start = time.perf_counter()
            with torch.inference_mode():
                out = forward(inputs)
            t["forward_s"] += time.perf_counter() - start
            outs.append(F.normalize(out.detach().float().cpu(), dim=-1))
    return torch.cat(outs, dim=0).contiguous()


def prefetch_map(fn, items, workers: int):
    """``map(fn, items)`` in item order, overlapping decoding with the caller's compute."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def reject_unknown(unused: dict, family: str) -> None:
    """Refuse loader options that the family's ``load`` does not take."""
    if unused:
        raise SpaceError(f"unknown option(s) for {family}: {', '.join(sorted(unused))}")


class BatchedSpace:
    """The Space protocol's ``encode`` shared by the real adapters, through hooks.

    An adapter calls :meth:`_init_runtime` in its constructor (device, precision, dtype,
    batch size, decoding workers) and sets ``name``, ``modalities`` and ``dim``; it defines
    ``prepare(modality, items)`` (a batch's inputs) and ``forward(modality, inputs)``, and
    may override :meth:`_per_item` (decode files one by one in the worker threads, joined
    by :meth:`_collate`) and :meth:`_before_encode` (fail before any work)."""

    last_timings: dict

    def _init_runtime(self, device, precision, batch_size: int, workers,
                      family_precision: str) -> None:
        self.device = torch_device(device)
        self.precision = precision = default_precision(precision, family_precision)
        self.dtype = torch_dtype(precision)
        check_precision(precision, self.device)
        self.batch_size = batch_size
        self.workers = default_workers(workers)

    def _per_item(self, modality: str):
        """``item -> input`` for one file of ``modality``, or None to prepare whole batches."""
        return None

    def _collate(self, inputs: list):
        import torch

        return torch.stack(inputs)

    def _before_encode(self, modality: str) -> None:
        """Checks run once per ``encode`` call on non-empty input, before any work."""

    def encode(self, modality: str, items, batch_size: int | None = None):
        import torch

        check_modality(self, modality)
        items = list(items)
        if not items:
            return torch.zeros(0, self.dim)
        self._before_encode(modality)
        timings: dict = {}
        out = run_batched(items, lambda chunk: self.prepare(modality, chunk),
                          lambda x: self.forward(modality, x),
                          batch_size or self.batch_size, self.workers, timings,
                          per_item=self._per_item(modality), collate=self._collate)
        self.last_timings = timings
        return guard.check_finite(out, self.name, modality, items)  # NaN/inf never returned
