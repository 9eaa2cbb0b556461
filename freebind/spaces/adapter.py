"""The base class of the real spaces' adapters (:class:`EncoderAdapter`) and the runtime
they share: device and precision choice, decoding threads, batching.

An adapter wraps one encoder library (ImageBind, LAION-CLAP, OpenCLIP, InternVL, MiniLM)
as a :class:`freebind.spaces.protocol.Space`. It defines how a batch is prepared and run;
:class:`EncoderAdapter` turns that into ``encode`` (decoding ahead of the encoder in
background threads) and into its two halves, ``decode_item`` and ``encode_decoded``, for
engines that decode in one stage and encode in another (docs/architecture.md).
"""

from __future__ import annotations

from freebind.util.errors import SpaceError
from freebind.spaces import guard

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


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


class EncoderAdapter:
    """The base class of the real spaces' adapters: the Space protocol's ``encode`` over an
    encoder library, through hooks.

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

    # --- the two halves of encode, for engines that decode and encode in separate stages
    def decode_item(self, modality: str, item):
        """One item's encoder input, decoded in the caller's thread (no encoder run);
        items prepared by whole batches (text) are passed on unchanged."""
        check_modality(self, modality)
        per_item = self._per_item(modality)
        return per_item(item) if per_item is not None else item

    def encode_decoded(self, modality: str, inputs: list):
        """Rows (float32, unit norm) of inputs made by :meth:`decode_item`."""
        import torch
        from torch.nn import functional as F

        check_modality(self, modality)
        inputs = list(inputs)
        if not inputs:
            return torch.zeros(0, self.dim)
        self._before_encode(modality)
        per_item = self._per_item(modality)
        outs = []
        for chunk in batches(inputs, self.batch_size):
            x = self._collate(chunk) if per_item is not None else self.prepare(modality, chunk)
            with torch.inference_mode():
                out = self.forward(modality, x)
            outs.append(F.normalize(out.detach().float().cpu(), dim=-1))
        out = torch.cat(outs, dim=0).contiguous()
        return guard.check_finite(out, self.name, modality,  # NaN/inf never returned
                                  [f"item {i}" for i in range(len(inputs))])

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
