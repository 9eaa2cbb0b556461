"""Rendering events into real media: RGB images (class glyph, colour, size, texture) and
1 s mono 16 kHz audio (class timbre, loudness, pitch, rhythm, background noise).

Both renderers are pure functions of an event and a random stream (for within-class
variation: position, rotation, shade, exact pitch and level, note timing, background), so a
seed reproduces every file bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from freebind.mini.world import Event

IMAGE_SIZE = 40
SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)

# ----------------------------------------------------------------------------------- images

_RGB = {
    "red": (205, 40, 40), "blue": (45, 80, 210), "green": (40, 160, 60),
    "yellow": (225, 200, 35), "purple": (135, 55, 175), "orange": (235, 130, 30),
}


def _regular(n: int, start: float = -math.pi / 2, radii=(1.0,)) -> list[tuple[float, float]]:
    pts = []
    for i in range(n * len(radii)):
        r = radii[i % len(radii)]
        a = start + 2 * math.pi * i / (n * len(radii))
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


# Class glyphs: lists of ("poly", points) / ("ellipse", (cx, cy, rx, ry)) / ("hole", ...)
# in unit coordinates (the glyph fits the unit disc).
_GLYPHS: dict[str, list] = {
    "dog": [("ellipse", (0, 0, 1.0, 1.0))],
    "cat": [("poly", [(-.8, -.8), (.8, -.8), (.8, .8), (-.8, .8)])],
    "cow": [("poly", _regular(3, radii=(1.0,)))],
    "rooster": [("poly", [(0, -1), (1, 0), (0, 1), (-1, 0)])],
    "frog": [("poly", _regular(5))],
    "bird": [("poly", _regular(6, start=0.0))],
    "bee": [("poly", _regular(5, radii=(1.0, 0.45)))],
    "bell": [("poly", [(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1),
                       (-.3, 1), (-.3, .3), (-1, .3), (-1, -.3), (-.3, -.3)])],
    "drum": [("ellipse", (0, 0, 1.0, 1.0)), ("hole", (0, 0, 0.5, 0.5))],
    "guitar": [("ellipse", (0, 0, 1.0, 1.0)), ("hole", (0.45, -0.1, 0.75, 0.85))],
    "piano": [("poly", [(0, -1), (1, .2), (.55, .2), (.55, 1), (-.55, 1), (-.55, .2),
                        (-1, .2)])],
    "flute": [("poly", [(-1, -1), (1, -1), (.15, 0), (1, 1), (-1, 1), (-.15, 0)])],
    "trumpet": [("poly", [(-1, -1), (1, -1), (1, -.45), (.3, -.45), (.3, 1), (-.3, 1),
                          (-.3, -.45), (-1, -.45)])],
    "siren": [("poly", [(-.75, -1), (-.15, -1), (-.15, .4), (.85, .4), (.85, 1),
                        (-.75, 1)])],
    "car_horn": [("ellipse", (0, 0, 1.0, 0.55))],
    "engine": [("poly", [(-1, .35), (-.95, 0), (-.8, -.45), (-.5, -.8), (0, -.95), (.5, -.8),
                         (.8, -.45), (.95, 0), (1, .35)])],
    "train": [("poly", [(-1, .7), (-.55, -.7), (.55, -.7), (1, .7)])],
    "clock": [("poly", _regular(4, radii=(1.0, 0.3)))],
    "phone": [("poly", [(-1, -.25), (.2, -.25), (.2, -.8), (1, 0), (.2, .8), (.2, .25),
                        (-1, .25)])],
    "hammer": [("ellipse", (0, -.42, .58, .58)), ("ellipse", (0, .42, .58, .58))],
}


def _glyph_mask(cls: str, size: int, cx: float, cy: float, r: float, rot: float,
                scale: int = 4) -> np.ndarray:
    """Antialiased coverage mask in [0, 1] of the class glyph (supersampled, box-filtered)."""
    from PIL import Image, ImageDraw

    big = size * scale
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    c, s = math.cos(rot), math.sin(rot)

    def tf(x, y):
        return ((cx + r * (c * x - s * y)) * scale, (cy + r * (s * x + c * y)) * scale)

    for kind, geom in _GLYPHS[cls]:
        if kind == "poly":
            draw.polygon([tf(x, y) for x, y in geom], fill=255)
        else:  # ellipse or hole, approximated by a 48-gon so that rotation applies
            ex, ey, rx, ry = geom
            angles = [2 * math.pi * i / 48 for i in range(48)]
            pts = [tf(ex + rx * math.cos(a), ey + ry * math.sin(a)) for a in angles]
            draw.polygon(pts, fill=0 if kind == "hole" else 255)
    arr = np.asarray(img, dtype=np.float32).reshape(size, scale, size, scale).mean(axis=(1, 3))
    return arr / 255.0


def render_image(event: Event, g: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """An RGB uint8 image [size, size, 3] of the event."""
    radius = size * (g.uniform(0.21, 0.26) if event.size == "small" else g.uniform(0.38, 0.44))
    margin = radius + 1
    cx = g.uniform(margin, size - margin) if size - 2 * margin > 0 else size / 2
    cy = g.uniform(margin, size - margin) if size - 2 * margin > 0 else size / 2
    rot = g.uniform(-0.3, 0.3)
    mask = _glyph_mask(event.cls, size, cx, cy, radius, rot)

    # background: a light, slightly tinted tone with sensor noise and a faint gradient
    tone = g.uniform(175, 235) + g.uniform(-12, 12, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ang = g.uniform(0, 2 * math.pi)
    grad = ((xx * math.cos(ang) + yy * math.sin(ang)) / size)[..., None] * g.uniform(-25, 25)
    bg = tone[None, None, :] + grad + g.normal(0, 5, size=(size, size, 3))

    # foreground: class glyph filled with the colour, modulated by the texture pattern
    base = np.asarray(_RGB[event.colour], dtype=np.float32) + g.uniform(-18, 18, size=3)
    if event.texture == "plain":
        pattern = np.zeros((size, size), np.float32)
    elif event.texture == "striped":
        period = g.uniform(3.6, 4.6)
        theta = g.uniform(0, math.pi)
        u = (xx * math.cos(theta) + yy * math.sin(theta)) / period + g.uniform(0, 1)
        pattern = (np.cos(2 * math.pi * u) > 0).astype(np.float32)
    else:  # dotted
        period = g.uniform(4.2, 5.2)
        ox, oy = g.uniform(0, period, size=2)
        dx = (xx - ox) % period - period / 2
        dy = (yy - oy) % period - period / 2
        pattern = (dx * dx + dy * dy < (period * 0.3) ** 2).astype(np.float32)
    shade = g.uniform(0.35, 0.5)
    fg = base[None, None, :] * (1.0 - shade * pattern[..., None])
    fg = fg + g.normal(0, 4, size=(size, size, 3))

    out = bg * (1 - mask[..., None]) + fg * mask[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ audio

# Class timbres. kind: how the source is made; f0: typical fundamental (or band centre) in
# Hz; env: percussive decay time constant in s (None = sustained note).
_TIMBRES: dict[str, dict] = {
    "dog": dict(kind="harmonic", f0=420, partials=[1, .7, .5, .35, .25, .15], noise=.35,
                env=.09, glide=-.25),
    "cat": dict(kind="harmonic", f0=560, partials=[1, .5, .3, .2], noise=.05, env=None,
                vibrato=(5.0, .04), glide=.2),
    "cow": dict(kind="harmonic", f0=130, partials=[1, .9, .8, .7, .6, .5, .4, .3], noise=.05,
                env=None, swell=True),
    "rooster": dict(kind="harmonic", f0=650, partials=[1, .6, .4, .3], noise=.1, env=None,
                    glide=.35, vibrato=(11.0, .02)),
    "frog": dict(kind="pulses", f0=110, rate=28.0, noise=.15, env=None),
    "bird": dict(kind="chirp", f0=2600, sweep=.6, env=.05),
    "bee": dict(kind="saw", f0=210, noise=.05, env=None, vibrato=(7.0, .03)),
    "bell": dict(kind="inharmonic", f0=780, ratios=[1, 2.76, 5.40, 8.93],
                 amps=[1, .6, .35, .2], env=.35),
    "drum": dict(kind="membrane", f0=95, noise=.6, env=.07),
    "guitar": dict(kind="harmonic", f0=196, partials=[1, .6, .45, .3, .25, .18, .12], noise=.02,
                   env=.22),
    "piano": dict(kind="harmonic", f0=262, partials=[1, .45, .3, .12, .08], noise=.01,
                  env=.45, stretch=.0015),
    "flute": dict(kind="harmonic", f0=690, partials=[1, .25, .08], noise=.12, env=None),
    "trumpet": dict(kind="harmonic", f0=350, partials=[1, .9, .85, .75, .6, .5, .4, .3],
                    noise=.02, env=None, attack=.04),
    "siren": dict(kind="harmonic", f0=880, partials=[1, .15], noise=0.0, env=None,
                  sweep_rate=1.6, sweep_depth=.3),
    "car_horn": dict(kind="dyad", f0=400, interval=1.26, env=None),
    "engine": dict(kind="engine", f0=65, rate=22.0, noise=.5, env=None, noise_mult=8.0,
                   noise_offset=150.0),
    "train": dict(kind="band", f0=500, width=.8, rate=3.0, env=None),
    "clock": dict(kind="click", f0=3200, env=.008),
    "phone": dict(kind="dyad", f0=1150, interval=1.25, tremolo=20.0, env=None, sine=True),
    "hammer": dict(kind="inharmonic", f0=310, ratios=[1, 1.59, 2.31, 3.7],
                   amps=[1, .7, .5, .3], env=.045, noise=.4),
}


def _bandpass_noise(g, n, centre, rel_width, rate):
    """Gaussian noise band-limited around ``centre`` Hz (FFT mask; deterministic)."""
    spec = np.fft.rfft(g.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    lo, hi = centre * (1 - rel_width / 2), centre * (1 + rel_width / 2)
    spec *= np.exp(-0.5 * ((freqs - centre) / max(hi - lo, 1.0) * 2.5) ** 2)
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-9)


def _source(t: dict, f0: float, g: np.random.Generator, n: int) -> np.ndarray:
    """One second of the class's raw sound (before note envelopes and level)."""
    rate = SAMPLE_RATE
    tt = np.arange(n) / rate
    inst = np.full(n, f0)
    if "glide" in t:
        inst = inst * (1 + t["glide"] * np.sin(np.pi * np.clip(tt / 0.5, 0, 1)) * g.uniform(.6, 1))
    if "vibrato" in t:
        vr, vd = t["vibrato"]
        inst = inst * (1 + vd * np.sin(2 * np.pi * vr * g.uniform(.8, 1.2) * tt
                                       + g.uniform(0, 6.3)))
    if "sweep_rate" in t:
        inst = inst * (1 + t["sweep_depth"] * np.sin(2 * np.pi * t["sweep_rate"] * tt
                                                     + g.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(inst) / rate
    kind = t["kind"]
    if kind == "harmonic":
        out = np.zeros(n)
        for k, a in enumerate(t["partials"], start=1):
            stretch = 1 + t.get("stretch", 0.0) * k * k
            if f0 * k * stretch < rate / 2 - 500:
                out += a * np.sin(k * stretch * phase + g.uniform(0, 6.3))
    elif kind == "saw":
        out = np.zeros(n)
        for k in range(1, 24):
            if f0 * k < rate / 2 - 500:
                out += np.sin(k * phase) / k
    elif kind == "pulses":
        carrier = np.sign(np.sin(phase)) * 0.5 + np.sin(2 * phase) * 0.3
        am = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * t["rate"] * g.uniform(.85, 1.15) * tt))
        out = carrier * am
    elif kind == "chirp":
        out = np.zeros(n)  # notes are generated per onset below (per-note FM chirp)
    elif kind == "inharmonic":
        out = np.zeros(n)
        for r_, a in zip(t["ratios"], t["amps"]):
            out += a * np.sin(2 * np.pi * f0 * r_ * g.uniform(.995, 1.005) * tt + g.uniform(0, 6.3))
    elif kind == "membrane":
        out = np.zeros(n)  # per-note pitch drop, below
    elif kind == "dyad":
        f1, f2 = f0, f0 * t["interval"]
        out = np.zeros(n)
        for f in (f1, f2):
            if t.get("sine"):
                out += np.sin(2 * np.pi * f * tt + g.uniform(0, 6.3))
            else:
                for k in (1, 3, 5, 7):
                    if f * k < rate / 2 - 500:
                        out += np.sin(2 * np.pi * k * f * tt + g.uniform(0, 6.3)) / k
        if "tremolo" in t:
            out *= 0.5 + 0.5 * (np.sin(2 * np.pi * t["tremolo"] * tt) > 0)
    elif kind == "engine":
        out = np.zeros(n)
        for k in range(1, 10):
            out += np.sin(k * phase + g.uniform(0, 6.3)) / k
        out *= 0.6 + 0.4 * np.sin(2 * np.pi * t["rate"] * g.uniform(.8, 1.2) * tt)
    elif kind == "band":
        out = _bandpass_noise(g, n, f0, t["width"], rate)
        out *= 0.55 + 0.45 * np.abs(np.sin(2 * np.pi * t["rate"] * g.uniform(.8, 1.2) * tt))
    elif kind == "click":
        out = _bandpass_noise(g, n, f0, 0.6, rate)
    else:  # pragma: no cover - table is fixed
        raise ValueError(kind)
    noise = t.get("noise", 0.0)
    if noise and kind not in ("band", "click"):
        centre = t.get("noise_mult", 3.0) * f0 + t.get("noise_offset", 800.0)
        out = out / (np.abs(out).max() + 1e-9) + noise * _bandpass_noise(g, n, centre, 1.5, rate)
    return out


def _notes(event: Event, percussive: bool, g: np.random.Generator) -> list[tuple[float, float]]:
    """(onset, duration) of each note in seconds, from the rhythm attribute."""
    if event.rhythm == "single":
        dur = g.uniform(0.28, 0.5)
        return [(g.uniform(0.05, 0.95 - dur), dur)]
    if event.rhythm == "repeated":
        k = int(g.integers(3, 6))
        gap = g.uniform(0.16, 0.26)
        dur = gap * g.uniform(0.35, 0.55)
        start = g.uniform(0.02, max(0.03, 0.98 - k * gap))
        return [(start + i * gap, dur) for i in range(k)]
    # continuous: sustained sounds fill the clip; percussive ones roll fast (>= 12 Hz)
    if percussive:
        gap = g.uniform(0.05, 0.075)
        start = g.uniform(0.0, gap)
        return [(start + i * gap, gap) for i in range(int((1.0 - start) / gap))]
    return [(g.uniform(0.0, 0.03), 1.0)]


def _note_window(onset: float, dur: float, decay: float | None, n: int) -> tuple[int, int]:
    tail = 0.0 if decay is None else 3 * decay
    lo = max(0, int(math.floor(onset * SAMPLE_RATE)))
    hi = min(n, int(math.ceil((onset + dur + tail) * SAMPLE_RATE)))
    return lo, max(lo, hi)


def _note_envelope(lo: int, hi: int, onset: float, dur: float, decay: float | None,
                   attack: float) -> np.ndarray:
    x = np.arange(lo, hi) / SAMPLE_RATE - onset
    a = np.clip(x / attack, 0, 1)
    if decay is None:
        return a * np.clip((dur - x) / 0.03, 0, 1)
    return a * np.exp(-np.maximum(x, 0) / decay)


def _envelope(n: int, notes, decay: float | None, attack: float) -> np.ndarray:
    env = np.zeros(n)
    for onset, dur in notes:
        lo, hi = _note_window(onset, dur, decay, n)
        env[lo:hi] = np.maximum(env[lo:hi], _note_envelope(lo, hi, onset, dur, decay, attack))
    return env


def render_audio(event: Event, g: np.random.Generator) -> np.ndarray:
    """1 s of 16 kHz mono audio as int16 samples."""
    n = CLIP_SAMPLES
    t = _TIMBRES[event.cls]
    f0 = t["f0"] * (g.uniform(0.62, 0.8) if event.pitch == "low" else g.uniform(1.3, 1.7))
    percussive = t["env"] is not None
    notes = _notes(event, percussive, g)
    decay = t["env"] * g.uniform(0.8, 1.25) if percussive else None
    attack = t.get("attack", 0.004 if percussive else 0.02)
    tt = np.arange(n) / SAMPLE_RATE

    if t["kind"] in ("chirp", "membrane"):
        fg = np.zeros(n)
        for onset, dur in notes:
            lo, hi = _note_window(onset, dur, decay, n)
            if hi - lo < 2:
                continue
            x = np.clip(np.arange(lo, hi) / SAMPLE_RATE - onset, 0, None)
            if t["kind"] == "chirp":
                inst = f0 * (1 + t["sweep"] * np.clip(x / max(dur, 0.04), 0, 1))
            else:
                inst = f0 * (1 + 1.2 * np.exp(-x / 0.03))
            one = np.sin(2 * np.pi * np.cumsum(inst) / SAMPLE_RATE)
            if t["kind"] == "membrane":
                one = one + t["noise"] * _bandpass_noise(g, hi - lo, 1800, 1.6, SAMPLE_RATE) \
                    * np.exp(-x / 0.015)
            env = _note_envelope(lo, hi, onset, dur, decay, attack)
            fg[lo:hi] += one * env
    else:
        fg = _source(t, f0, g, n) * _envelope(n, notes, decay, attack)
    fg = fg / (np.abs(fg).max() + 1e-9)
    level_db = g.uniform(-27, -20) if event.loudness == "quiet" else g.uniform(-8, -2)
    fg *= 10 ** (level_db / 20)

    # background, varied within class: none, hiss, mains hum or a distant murmur
    kind = int(g.integers(4))
    bg_level = 10 ** (g.uniform(-46, -36) / 20)
    if kind == 1:
        bg = g.normal(size=n)
        bg /= 3.0
    elif kind == 2:
        mains = g.choice([50.0, 60.0])
        bg = sum(np.sin(2 * np.pi * mains * k * tt + g.uniform(0, 6.3)) / k for k in (1, 2, 3))
    elif kind == 3:
        bg = _bandpass_noise(g, n, g.uniform(300, 900), 1.0, SAMPLE_RATE)
        bg *= 0.6 + 0.4 * np.sin(2 * np.pi * g.uniform(0.5, 3) * tt)
    else:
        bg = np.zeros(n)
    wave = fg + bg_level * bg
    return np.clip(np.rint(wave * 32767), -32768, 32767).astype(np.int16)


def audio_to_float(samples: np.ndarray) -> np.ndarray:
    """int16 samples as float32 exactly as ``soundfile`` decodes a PCM_16 file."""
    return samples.astype(np.float32) / 32768.0
