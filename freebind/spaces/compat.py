"""Imports that need care, for the real adapters (their base class and runtime live in
:mod:`freebind.spaces.adapter`).

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

from freebind.util.errors import SpaceError

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

