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


def check_device_and_precision(device: str | None = None, precision: str | None = None, *,
                               names: Mapping[str, str] | None = None) -> None:
    """Fail before any work when ``device`` (else ``$FREEBIND_DEVICE``) is not a device name
    (:class:`~freebind.util.errors.UsageError`, exit 2) or is not on this machine, or
    ``precision`` (else ``$FREEBIND_PRECISION``) cannot run on it (fp16 on a CPU)
    (:class:`~freebind.util.errors.SpaceError`, exit 1). ``names`` says how the caller
    calls each input (the CLI: ``--device``, ``--precision``)."""
    import os

    from freebind.util.errors import SpaceError, UsageError

    names = {"device": "device", "precision": "precision", **(names or {})}
    given = device or os.environ.get("FREEBIND_DEVICE") or None
    where = names["device"] if device else "$FREEBIND_DEVICE"
    if given in (None, "", "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(str(given).strip())
        except (RuntimeError, TypeError, ValueError):
            raise UsageError(f"{where} {given!r}: not a device; use cpu, cuda, cuda:N or mps"
                             ) from None
        _check_available(dev, where, given)
    pwhere = names["precision"] if precision else "$FREEBIND_PRECISION"
    precision = precision or os.environ.get("FREEBIND_PRECISION")
    if precision and str(precision).lower() == "fp16" and dev.type == "cpu":
        raise SpaceError(f"{pwhere} fp16 needs a GPU and the encoders run on the CPU here "
                         f"({'no CUDA device' if not torch.cuda.is_available() else 'cpu'}); "
                         f"use fp32 or bf16")


def _check_available(dev, where: str, given) -> None:
    from freebind.util.errors import SpaceError, UsageError

    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else ", built without CUDA"
            raise SpaceError(f"{where} {given}: no CUDA device here (torch "
                             f"{torch.__version__}{build}); use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise SpaceError(f"{where} {given}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SpaceError(f"{where} {given}: no Apple GPU (mps) here; use --device cpu")
    elif dev.type != "cpu":
        raise UsageError(f"{where} {given}: freebind runs on cpu, cuda or mps")
