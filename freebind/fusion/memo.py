"""Projector groups whose mixtures are remembered by input content: repeated fusions of the
same rows under other factors (a tuning sweep over a suite, a search query re-ranked with new
factors) re-project nothing. A factor moves how projections combine, never the projections."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Mapping

import torch


class RememberedGroup:
    """A projector group whose ``mixture`` results are kept in ``cache`` (shared by the
    groups of one :func:`remembered` mapping), keyed by the group and the input's dtype,
    shape and bytes, least recently used first out past ``entries``.

    Inputs of more than ``max_rows`` rows, or needing gradients, or (``cpu_only``) not on
    the CPU, are projected without remembering. ``clone`` hands out copies, for callers that
    may write into the result."""

    def __init__(self, group, cache: "OrderedDict", lock: threading.Lock, entries: int,
                 max_rows: int | None = None, cpu_only: bool = False, clone: bool = False):
        self.group, self.cache, self.lock = group, cache, lock
        self.entries, self.max_rows, self.cpu_only, self.clone = entries, max_rows, cpu_only, clone

    def _key(self, x) -> tuple:
        data = x.detach().cpu().contiguous().numpy().tobytes()
        return (id(self.group), str(x.dtype), tuple(x.shape),
                hashlib.blake2b(data, digest_size=32).digest())

    def mixture(self, x):
        if (self.max_rows is not None and x.shape[0] > self.max_rows) or x.requires_grad \
                or (self.cpu_only and x.device.type != "cpu"):
            return self.group.mixture(x)
        key = self._key(x)
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
        if hit is None:
            with torch.no_grad():
                hit = self.group.mixture(x)
            with self.lock:
                self.cache[key] = hit
                while len(self.cache) > self.entries:
                    self.cache.popitem(last=False)
        return hit.clone() if self.clone else hit

    def __getattr__(self, name):
        return getattr(self.group, name)


def remembered(projectors: Mapping, entries: int, **options) -> dict:
    """``projectors`` with every projector group (anything with ``mixture``) remembered in
    one bounded cache; routers and other entries pass through unchanged (a router's weights
    are per item, not projections). ``options`` go to :class:`RememberedGroup`."""
    cache: OrderedDict = OrderedDict()
    lock = threading.Lock()
    return {k: RememberedGroup(g, cache, lock, entries, **options)
            if hasattr(g, "mixture") and not k.startswith("router.") else g
            for k, g in projectors.items()}
