"""The mini world's ontology: sound-making object classes, their visual and acoustic
attributes, and *events* (a class plus one value of every attribute).

An event is what the other modules render: its image shows the class glyph with the visual
attributes (colour, size, texture), its audio sounds the class with the acoustic attributes
(loudness, pitch, rhythm), its captions name the class and a subset of the attributes.

Random streams are keyed: every consumer asks :func:`rng` for a stream named by a *purpose*
(training data of one space, a pool modality, one evaluation set, the held-out role check)
and a seed. Streams of different purposes are independent by construction (numpy
``SeedSequence`` entropy differs), so evaluation sets never reuse training draws.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

#: Bumped whenever rendering or caption grammar changes what a seed produces.
GENERATOR_VERSION = "mini-world-1"

#: Sound-making object classes, in label order (ESC-50 style ``category`` names).
CLASSES: tuple[str, ...] = (
    "dog", "cat", "cow", "rooster", "frog", "bird", "bee", "bell", "drum", "guitar",
    "piano", "flute", "trumpet", "siren", "car_horn", "engine", "train", "clock", "phone",
    "hammer",
)

COLOURS: tuple[str, ...] = ("red", "blue", "green", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
LOUDNESS: tuple[str, ...] = ("quiet", "loud")
PITCHES: tuple[str, ...] = ("low", "high")
RHYTHMS: tuple[str, ...] = ("single", "repeated", "continuous")

VISUAL_ATTRIBUTES: tuple[str, ...] = ("colour", "size", "texture")
ACOUSTIC_ATTRIBUTES: tuple[str, ...] = ("loudness", "pitch", "rhythm")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": COLOURS, "size": SIZES, "texture": TEXTURES,
    "loudness": LOUDNESS, "pitch": PITCHES, "rhythm": RHYTHMS,
}

#: Purposes of random streams. Training purposes and evaluation purposes never overlap.
PURPOSES = {
    "train": 11, "pool": 23, "evalset": 37, "heldout": 53, "test": 71,
}


@dataclass(frozen=True)
class Event:
    """A sound-making object with one value per attribute."""

    cls: str
    colour: str
    size: str
    texture: str
    loudness: str
    pitch: str
    rhythm: str

    @property
    def label(self) -> int:
        return CLASSES.index(self.cls)

    def with_values(self, **values) -> "Event":
        return replace(self, **values)

    def attributes(self) -> dict[str, str]:
        return {a: getattr(self, a) for a in (*VISUAL_ATTRIBUTES, *ACOUSTIC_ATTRIBUTES)}


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def rng(purpose: str, *keys: int | str) -> np.random.Generator:
    """A random stream for ``purpose`` (one of :data:`PURPOSES`) and integer/str keys."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random purpose {purpose!r}")
    entropy = [PURPOSES[purpose]] + [k if isinstance(k, int) else _key(k) for k in keys]
    if any(isinstance(k, int) and k < 0 for k in entropy):
        raise ValueError("random keys must be non-negative")
    return np.random.default_rng(entropy)


def sample_event(g: np.random.Generator, cls: str | None = None,
                 class_weights: Sequence[float] | None = None) -> Event:
    """One event with independent, uniformly drawn attributes."""
    if cls is None:
        if class_weights is None:
            cls = CLASSES[int(g.integers(len(CLASSES)))]
        else:
            w = np.asarray(class_weights, dtype=float)
            cls = CLASSES[int(g.choice(len(CLASSES), p=w / w.sum()))]
    values = {a: v[int(g.integers(len(v)))] for a, v in ATTRIBUTE_VALUES.items()}
    return Event(cls=cls, **values)


def sample_events(g: np.random.Generator, n: int,
                  class_weights: Sequence[float] | None = None) -> list[Event]:
    return [sample_event(g, class_weights=class_weights) for _ in range(n)]


def balanced_events(g: np.random.Generator, per_class: int) -> list[Event]:
    """``per_class`` events of every class (class-major order), attributes random."""
    return [sample_event(g, cls=c) for c in CLASSES for _ in range(per_class)]


def item_rng(base_seed: int, index: int) -> np.random.Generator:
    """Per-item stream for rendering jitter, derived from a drawn ``base_seed``."""
    return np.random.default_rng([base_seed, index])
