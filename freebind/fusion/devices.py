"""Where fusion runs: projector groups and routers read on a device without moving the
caller's modules (a copy per device is made once and kept while the module lives)."""

from __future__ import annotations

import weakref
from typing import Mapping

import torch


def tensors_of(module) -> list:
    """The parameters and buffers of a torch module (none for any other object)."""
    if not isinstance(module, torch.nn.Module):
        return []
    return list(module.parameters()) + list(module.buffers())


def module_on(module, device):
    """``module`` on ``device``: itself when it is there already, else a copy kept beside it
    (the caller's module is never moved; fusion reuses the copy while the module lives)."""
    device = torch.device(device)
    params = tensors_of(module)
    if not params or params[0].device == device or (
            device.type == "cuda" and params[0].device.type == "cuda"
            and device.index is None):
        return module
    copies = _COPIES.setdefault(module, {})
    key = str(device)
    if key not in copies:
        import copy

        copies[key] = copy.deepcopy(module).to(device).eval()
    return copies[key]


_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class OnDevice(Mapping):
    """A projector mapping whose modules are read on one device (copies made once)."""

    def __init__(self, projectors: Mapping, device):
        self._p, self._device = projectors, device

    def __getitem__(self, key):
        return module_on(self._p[key], self._device)

    def get(self, key, default=None):
        return self[key] if key in self._p else default

    def __iter__(self):
        return iter(self._p)

    def __len__(self):
        return len(self._p)

    def __contains__(self, key):
        return key in self._p
