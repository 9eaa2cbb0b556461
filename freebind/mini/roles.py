"""The role check: held-out retrieval R@1 of every modality pair of every mini space, and
the four conditions that make the mini world a faithful miniature of the paper's setting.

Held-out data come from the ``heldout`` random stream, which no training recipe draws from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freebind.mini.world import rng, sample_event

PAIRS = (("audio", "text"), ("image", "text"), ("audio", "image"), ("point", "text"),
         ("point", "image"))
SHORT = {"audio": "a", "image": "i", "text": "t", "point": "p"}
#: "Far above chance" for audio–image: at least this many times the chance R@1.
CHANCE_FACTOR = 5.0


@dataclass
class HeldOut:
    events: list               # the held-out events (class and attributes)
    waves: np.ndarray          # float32 [n, 16000]
    pixels: np.ndarray         # uint8 [n, 40, 40, 3]
    audio_captions: list       # one caption naming class + acoustic attributes
    image_captions: list       # one caption naming class + visual attributes
    para_a: list               # paraphrase groups: wording A of each variant
    para_b: list               # wording B of the same variants
    para_groups: np.ndarray    # group id of each variant
    seed: int = 0
    _clouds: np.ndarray | None = None

    @property
    def clouds(self) -> np.ndarray:
        """float32 [n, 128, 6]: each event's point cloud as the mini point tower reads it
        (rendered on first use, from the ``heldout``/``points`` stream)."""
        if self._clouds is None:
            from freebind.mini.shapes import render_points, tower_input

            self._clouds = np.stack([
                tower_input(*render_points(e, rng("heldout", "points", self.seed, i)))
                for i, e in enumerate(self.events)])
        return self._clouds


def heldout(n: int = 500, n_groups: int = 60, seed: int = 0) -> HeldOut:
    from freebind.mini.captions import caption
    from freebind.mini.render import audio_to_float, render_audio, render_image
    from freebind.mini.training import paraphrase_groups

    g = rng("heldout", "items", seed)
    events = [sample_event(g) for _ in range(n)]
    waves = np.stack([audio_to_float(render_audio(e, g)) for e in events])
    pixels = np.stack([render_image(e, g) for e in events])
    acap = [caption(e, g, "audio") for e in events]
    icap = [caption(e, g, "image") for e in events]
    ta, tb, groups = paraphrase_groups(rng("heldout", "paraphrase", seed), n_groups)
    return HeldOut(events, waves, pixels, acap, icap, ta, tb, groups, seed)


def recall_at_1(sim: np.ndarray) -> float:
    """Row i's correct column is i; ties count against the query (pessimistic)."""
    sim = np.asarray(sim, dtype=np.float64)
    correct = np.diag(sim)
    better_or_equal = (sim >= correct[:, None]).sum(axis=1) - 1
    return float((better_or_equal == 0).mean())


def paraphrase_r1(a: np.ndarray, b: np.ndarray, groups: np.ndarray) -> float:
    """Each wording-A caption retrieves among the wording-B captions of its own group
    (captions that differ only in acoustic words); R@1 averaged over all captions."""
    hits = []
    for k in np.unique(groups):
        idx = np.flatnonzero(groups == k)
        sim = a[idx] @ b[idx].T
        if len(idx) > 1:
            hits.append(recall_at_1(sim) * len(idx))
    sizes = sum(len(np.flatnonzero(groups == k)) for k in np.unique(groups)
                if (groups == k).sum() > 1)
    return float(sum(hits) / max(sizes, 1))


def measure_space(space, data: HeldOut) -> dict:
    emb = {}
    if "audio" in space.modalities:
        emb["audio"] = space.embed_waves(data.waves).numpy()
    if "image" in space.modalities:
        emb["image"] = space.embed_pixels(data.pixels).numpy()
    if "point" in space.modalities:
        emb["point"] = space.embed_points(data.clouds).numpy()
    out = {}
    for x, y in PAIRS:
        if x not in space.modalities or y not in space.modalities:
            continue
        if y == "text":   # a shape is described as its image is
            caps = data.audio_captions if x == "audio" else data.image_captions
            ey = space.embed_texts(caps).numpy()
        else:
            ey = emb[y]
        sim = emb[x] @ ey.T
        xy, yx = recall_at_1(sim), recall_at_1(sim.T)
        out[f"{SHORT[x]}2{SHORT[y]}"] = xy
        out[f"{SHORT[y]}2{SHORT[x]}"] = yx
        out[f"{x}-{y}"] = (xy + yx) / 2
    if "text" in space.modalities:
        a = space.embed_texts(data.para_a).numpy()
        b = space.embed_texts(data.para_b).numpy()
        out["paraphrase"] = paraphrase_r1(a, b, data.para_groups)
    return out


def _prompt(modality: str, cls: str, attribute: str | None = None, value: str | None = None):
    from freebind.mini.captions import ACOUSTIC_ADVERBS, NOUNS, VISUAL_WORDS

    noun = NOUNS[cls][0]
    if modality == "audio":
        tail = f" {ACOUSTIC_ADVERBS[attribute][value][0]}" if attribute else ""
        return f"a {noun} is heard{tail}"
    adj = f"{VISUAL_WORDS[attribute][value][0]} " if attribute else ""
    return f"a photo of a {adj}{noun}"


def probe_space(space, data: "HeldOut") -> dict:
    """Zero-shot probes through the space's own text tower: class accuracy (20 prompts)
    and, for each attribute, accuracy of choosing the right value among prompts naming
    the item's true class with each value. Chance: 1/#classes, 1/#values."""
    from freebind.mini.world import ACOUSTIC_ATTRIBUTES, ATTRIBUTE_VALUES, CLASSES
    from freebind.mini.world import VISUAL_ATTRIBUTES

    out = {}
    if "text" not in space.modalities:
        return out
    labels = np.array([CLASSES.index(e.cls) for e in data.events])
    for modality, attrs in (("audio", ACOUSTIC_ATTRIBUTES), ("image", VISUAL_ATTRIBUTES)):
        if modality not in space.modalities:
            continue
        emb = (space.embed_waves(data.waves) if modality == "audio"
               else space.embed_pixels(data.pixels)).numpy()
        cls_t = space.embed_texts([_prompt(modality, c) for c in CLASSES]).numpy()
        out[f"{SHORT[modality]}:class"] = float(((emb @ cls_t.T).argmax(1) == labels).mean())
        for a in attrs:
            values = ATTRIBUTE_VALUES[a]
            prompts = [_prompt(modality, c, a, v) for c in CLASSES for v in values]
            t = space.embed_texts(prompts).numpy().reshape(len(CLASSES), len(values), -1)
            scores = np.einsum("nd,nvd->nv", emb, t[labels])
            truth = np.array([values.index(getattr(e, a)) for e in data.events])
            out[f"{SHORT[modality]}:{a}"] = float((scores.argmax(1) == truth).mean())
    return out


def conditions(results: dict, n: int) -> list[dict]:
    """The mini spaces' four role conditions (docs/mini-world.md), each with its measured
    values and verdict."""
    b, vl, clap = results["mini:bind"], results["mini:vl"], results["mini:clap"]
    chance = 1.0 / n
    return [
        {"condition": "mini:bind audio-text R@1 <= 1/2 x mini:clap's",
         "measured": f"{b['audio-text']:.3f} vs {clap['audio-text']:.3f}",
         "ok": b["audio-text"] <= 0.5 * clap["audio-text"]},
        {"condition": "mini:bind image-text R@1 < mini:vl's",
         "measured": f"{b['image-text']:.3f} vs {vl['image-text']:.3f}",
         "ok": b["image-text"] < vl["image-text"]},
        {"condition": f"mini:bind audio-image R@1 >= {CHANCE_FACTOR:g} x chance",
         "measured": f"{b['audio-image']:.3f} vs chance {chance:.3f} "
                     f"({b['audio-image'] / chance:.0f}x)",
         "ok": b["audio-image"] >= CHANCE_FACTOR * chance},
        {"condition": "mini:bind caption->paraphrase R@1 (acoustic-only differences) >= 0.8",
         "measured": f"{b['paraphrase']:.3f}", "ok": b["paraphrase"] >= 0.8},
    ]


def measure(spaces: dict | None = None, n: int = 500, seed: int = 0) -> dict:
    """Measure every space (default: the four shipped mini spaces)."""
    if spaces is None:
        from freebind.mini.spaces import WHICH, load

        spaces = {f"mini:{w}": load(None, which=w) for w in WHICH}
    data = heldout(n=n, seed=seed)
    results = {name: measure_space(sp, data) for name, sp in spaces.items()}
    probes = {name: probe_space(sp, data) for name, sp in spaces.items()}
    report = {"items": n, "seed": seed, "chance": 1.0 / n, "spaces": results,
              "probes": probes}
    if {"mini:bind", "mini:vl", "mini:clap"} <= set(results):
        report["conditions"] = conditions(results, n)
        report["ok"] = all(c["ok"] for c in report["conditions"])
    return report
