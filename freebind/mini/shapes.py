"""The mini world in 3D: every sound-making object class has a shape, and an event's point
cloud is that shape's surface, coloured and textured by the event's visual attributes.

A class's shape is two to four parts (ellipsoid, box, cylinder, cone, torus) whose kinds,
places, sizes and turns are drawn once from a stream keyed by the class name, so they never
change. An event's cloud: :data:`N_POINTS` surface points spread over the parts by area,
scaled by its size (small 0.6, large 1.0), turned about the vertical axis by a little,
stretched a little per axis, with sensor noise; coloured by its colour (the images' RGB);
``striped``: white bands across the height, ``dotted``: white spots around a few surface
points, ``plain``: one colour. Colours are quantised to bytes, as a PLY file keeps them.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from freebind.mini.world import CLASSES, Event

#: points in a rendered cloud (the mini point tower samples :data:`TOWER_POINTS` of them)
N_POINTS = 1024
TOWER_POINTS = 128
PRIMITIVES = ("ellipsoid", "box", "cylinder", "cone", "torus")
SIZE_SCALE = {"small": 0.6, "large": 1.0}
#: the images' colours (freebind.mini.render), in [0, 1]
RGB = {"red": (205, 40, 40), "blue": (45, 80, 210), "green": (40, 160, 60),
       "yellow": (225, 200, 35), "purple": (135, 55, 175), "orange": (235, 130, 30)}
WHITE = np.array([0.95, 0.95, 0.95])


def _class_rng(cls: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(
        f"mini-shape:{cls}".encode()).digest()[:8], "little"))


def class_parts(cls: str) -> list[dict]:
    """The parts of a class's shape: ``kind``, ``centre`` [3], ``scale`` [3], ``turn``
    (radians about z), fixed for the class. The first part is the body."""
    if cls not in CLASSES:
        raise ValueError(f"unknown mini class {cls!r}")
    g = _class_rng(cls)
    k = CLASSES.index(cls)
    parts = [{"kind": PRIMITIVES[k % len(PRIMITIVES)], "centre": np.zeros(3),
              "scale": g.uniform(0.45, 1.0, size=3), "turn": 0.0}]
    for _ in range(1 + k // len(PRIMITIVES) % 3):
        parts.append({"kind": PRIMITIVES[int(g.integers(len(PRIMITIVES)))],
                      "centre": g.uniform(-0.8, 0.8, size=3),
                      "scale": g.uniform(0.15, 0.5, size=3),
                      "turn": float(g.uniform(0, math.pi))})
    return parts


def _surface(kind: str, n: int, g: np.random.Generator) -> np.ndarray:
    """``n`` points on the unit primitive's surface (roughly uniform)."""
    if kind == "ellipsoid":
        v = g.normal(size=(n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-9)
    if kind == "box":
        face = g.integers(6, size=n)
        p = g.uniform(-1, 1, size=(n, 3))
        axis, sign = face // 2, np.where(face % 2 == 0, -1.0, 1.0)
        p[np.arange(n), axis] = sign
        return p
    theta = g.uniform(0, 2 * math.pi, size=n)
    if kind == "cylinder":
        side = g.random(n) < 2 / 3
        z = np.where(side, g.uniform(-1, 1, size=n), np.where(g.random(n) < .5, -1.0, 1.0))
        r = np.where(side, 1.0, np.sqrt(g.random(n)))
        return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)
    if kind == "cone":
        side = g.random(n) < 0.7
        t = np.sqrt(g.random(n))           # radius fraction, area-uniform on the side
        z = np.where(side, 1 - 2 * t, -1.0)
        r = np.where(side, t, np.sqrt(g.random(n)))
        return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)
    phi = g.uniform(0, 2 * math.pi, size=n)     # torus: tube radius 0.35 around radius 0.65
    ring = 0.65 + 0.35 * np.cos(phi)
    return np.stack([ring * np.cos(theta), ring * np.sin(theta), 0.35 * np.sin(phi)], axis=1)


def _turn(p: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return p @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def class_surface(cls: str, n: int, g: np.random.Generator) -> np.ndarray:
    """``n`` points on a class's shape (before an event's size, turn and colour)."""
    parts = class_parts(cls)
    area = np.array([float(np.prod(np.sort(p["scale"])[1:])) for p in parts])
    counts = np.floor(n * area / area.sum()).astype(int)
    counts[0] += n - counts.sum()
    pieces = [_turn(_surface(p["kind"], c, g) * p["scale"], p["turn"]) + p["centre"]
              for p, c in zip(parts, counts)]
    return np.concatenate(pieces)


def _texture(xyz: np.ndarray, texture: str, g: np.random.Generator) -> np.ndarray:
    """Which points are white: bands across the height, spots, or none."""
    if texture == "striped":
        z = (xyz[:, 2] - xyz[:, 2].min()) / max(float(np.ptp(xyz[:, 2])), 1e-9)
        return (np.floor(z * 7 + g.uniform(0, 1)) % 2) == 1
    if texture == "dotted":
        centres = xyz[g.choice(len(xyz), size=6, replace=False)]
        d = ((xyz[:, None, :] - centres[None]) ** 2).sum(-1).min(axis=1)
        scale = float(np.ptp(xyz, axis=0).max())
        return d < (0.12 * scale) ** 2
    return np.zeros(len(xyz), dtype=bool)


def render_points(event: Event, g: np.random.Generator, n: int = N_POINTS):
    """``(xyz float32 [n, 3], rgb float32 [n, 3] in [0, 1], bytes-quantised)`` of an event."""
    xyz = class_surface(event.cls, n, g)
    xyz = _turn(xyz, g.uniform(-0.35, 0.35)) * g.uniform(0.9, 1.1, size=3)
    xyz = xyz * SIZE_SCALE[event.size] + g.normal(0, 0.01, size=xyz.shape)
    base = np.asarray(RGB[event.colour], dtype=np.float64) / 255.0
    rgb = np.tile(base + g.uniform(-0.03, 0.03, size=3), (n, 1))
    rgb[_texture(xyz, event.texture, g)] = WHITE
    rgb = np.rint(np.clip(rgb, 0, 1) * 255) / 255.0
    return xyz.astype(np.float32), rgb.astype(np.float32)


def tower_input(xyz: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """What the mini point tower reads: ``[TOWER_POINTS, 6]`` (freebind.data.points.prepare:
    farthest-point sampled, centred, in the unit sphere)."""
    from freebind.data.points import Cloud, prepare

    return prepare(Cloud(np.asarray(xyz, np.float32), np.asarray(rgb, np.float32)),
                   TOWER_POINTS)
