"""freebind: bind pretrained multimodal embedding spaces with space bonds (FreeBind).

The curated API, imported lazily so ``import freebind`` stays cheap::

    freebind.plan("IB + d(InternVL) + c(CLAP_g, CLAP_m)")   # parse + compile
    fused = freebind.load("fused.safetensors")              # a FusedSpace
    fused.fuse({"IB": {"audio": a}, "CLAP_g": {"audio": b}, ...}, factors=["a=0.8"])
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "parse": ("freebind.algebra", "parse"),
    "format": ("freebind.algebra", "format"),
    "plan": ("freebind.algebra", "plan"),
    "load": ("freebind.fused", "load"),
    "FusedSpace": ("freebind.fused", "FusedSpace"),
    "build": ("freebind.builder", "build"),
    "Index": ("freebind.search", "Index"),
    "spaces": ("freebind.spaces", None),
    "FreebindError": ("freebind.errors", "FreebindError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'freebind' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)
