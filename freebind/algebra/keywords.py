"""Keyword arguments of bonds: per-modality factors and bond options, with their checks and
the training defaults that bond options override."""

from __future__ import annotations

#: pseudo-tuple defaults (neighbours aggregated per slot, softmax temperature); the one
#: place they are set: :mod:`freebind.build.pseudo_tuples` and the training defaults both read them
DEFAULT_TOPK = 5
DEFAULT_TAU = 0.05
#: training defaults for real spaces (the paper's recipe)
DEFAULT_HYPER = {"hidden": 2048, "temp": 0.05, "epochs": 40, "patience": 5, "lr": 1e-3,
                 "batch": 4096, "topk": DEFAULT_TOPK, "tau": DEFAULT_TAU, "seed": 0}
#: mini plans train fast: the quick start finishes in about a minute (measured by
#: examples/measure_bonds.py; temperature 0.02 and 15 epochs gave the best held-out R@1)
MINI_HYPER = {"hidden": 256, "epochs": 15, "batch": 256, "patience": 3, "temp": 0.02}

#: Factor keywords (short and long forms) -> canonical modality.
FACTOR_KEYWORDS = {
    "a": "audio", "audio": "audio",
    "v": "image", "i": "image", "image": "image", "vision": "image",
    "t": "text", "text": "text",
    "video": "video", "depth": "depth", "thermal": "thermal", "imu": "imu",
}
#: The short form printed in canonical text, per modality (others print long).
FACTOR_SHORT = {"audio": "a", "image": "v", "text": "t"}

#: Values of ``route=``: ``fixed`` (the default: the factors as written) or ``learned`` (a
#: router trained after the bond's projectors gives every item its own weights).
ROUTES = ("fixed", "learned")

#: Bond options: name -> (kind, lower bound, bound inclusive, description).
OPTIONS = {
    "hidden": ("int", 1, True, "hidden width of each projector (2048 in the paper)"),
    "temp": ("float", 0.0, False, "InfoNCE temperature"),
    "epochs": ("int", 1, True, "maximum training epochs"),
    "patience": ("int", 0, True, "early-stopping patience in epochs"),
    "lr": ("float", 0.0, False, "Adam learning rate"),
    "batch": ("int", 2, True, "training batch size"),
    "topk": ("int", 1, True, "neighbours aggregated per pseudo-tuple slot"),
    "tau": ("float", 0.0, False, "softmax temperature of pseudo-tuple aggregation"),
    "seed": ("int", 0, True, "random seed of this bond's training"),
    "w": ("weights", 0.0, True, "weights of parallel experts, e.g. w=(0.6, 0.4)"),
    "route": ("choice", ROUTES, True, "per-item mixing weights: learned (a trained router, "
              "combination bonds) or fixed (the factors as written)"),
}


def valid_keywords() -> list[str]:
    return [*FACTOR_KEYWORDS, *OPTIONS]


def factor_keyword(modality: str) -> str:
    return FACTOR_SHORT.get(modality, modality)
