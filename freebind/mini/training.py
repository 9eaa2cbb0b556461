"""Training the mini spaces on generated *paired* data (used by ``scripts/train_mini.py``).

Each space is a recipe: which towers (and widths), which paired data, which caption policy,
how long. The roles come from the data each space sees, as in the paper's models:

* ``bind`` (like ImageBind): image and text towers trained on image–caption pairs whose
  captions mostly name the class (web-style, few attributes), plus paraphrase pairs of
  captions so that its text tower — like CLIP's, which knows sound words from language
  alone — separates captions that differ only in acoustic words. Then the image tower is
  frozen and the audio tower is trained against images only: audio–text alignment emerges
  through images and cannot carry loudness, pitch or rhythm.
* ``vl`` (like InternVL-C): wider image/text towers, more image–caption pairs, captions that
  name the visual attributes (mixed with class-only captions), and visual paraphrase pairs
  (its text side, like InternVL's language model, knows synonyms of visual words).
* ``clap`` / ``clap2`` (like CLAP_g / CLAP_m): audio–caption pairs whose captions name the
  acoustic attributes, plus acoustic paraphrase pairs; ``clap2`` has another seed, another
  slice of data and another emphasis (rhythm and loudness named more often than pitch).

Every text tower learns from paraphrase pairs (:func:`paraphrase_groups`): two wordings of the
same caption, with hard negatives that differ only in the attributes of one kind. Without
them, noun and attribute synonyms are learnt from co-occurrence alone and training is slow.
"""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np

from freebind.mini.captions import caption, paraphrase_pair, render_caption
from freebind.mini.render import audio_to_float, render_audio, render_image
from freebind.mini.world import (ACOUSTIC_ATTRIBUTES, ATTRIBUTE_VALUES, GENERATOR_VERSION,
                                 VISUAL_ATTRIBUTES, rng, sample_event)

#: Probability that a training caption names each attribute.
POLICIES = {
    "web": {"colour": .5, "size": .25, "texture": .25, "loudness": .3, "pitch": .3, "rhythm": .3},
    "visual": {"colour": .8, "size": .8, "texture": .8, "loudness": .2, "pitch": .2, "rhythm": .2},
    "acoustic": {"colour": .15, "size": .15, "texture": .15, "loudness": .8, "pitch": .8,
                 "rhythm": .8},
    "acoustic-rhythm": {"colour": .15, "size": .15, "texture": .15, "loudness": .85,
                        "pitch": .45, "rhythm": .85},
    "class": {"colour": .1, "size": .1, "texture": .1, "loudness": .1, "pitch": .1,
              "rhythm": .1},
}
#: Mixtures: a caption follows one of several policies (diverse caption sources).
MIXTURES = {
    "visual-mix": ((0.4, "class"), (0.6, "visual")),
}

CORPUS_SIZE = 12000

RECIPES: dict[str, dict] = {
    "bind": {"dim": 64, "modalities": ("audio", "image", "text"),
             "towers": {"image": 16, "text": 64, "audio": 48},
             "pairs": ("image", "text"), "corpus": (0, 8000), "policy": "web",
             "epochs": 12, "paraphrase": "acoustic", "audio_epochs": 12, "seed": 101,
             "lr": 3e-3},
    "vl": {"dim": 48, "modalities": ("image", "text"), "towers": {"image": 24, "text": 96},
           "pairs": ("image", "text"), "corpus": (0, CORPUS_SIZE), "policy": "visual-mix",
           "paraphrase": "visual", "epochs": 12, "seed": 202, "lr": 3e-3},
    "clap": {"dim": 32, "modalities": ("audio", "text"), "towers": {"audio": 64, "text": 64},
             "pairs": ("audio", "text"), "corpus": (0, CORPUS_SIZE), "policy": "acoustic",
             "paraphrase": "acoustic", "epochs": 14, "seed": 303, "lr": 3e-3},
    "clap2": {"dim": 40, "modalities": ("audio", "text"), "towers": {"audio": 48, "text": 48},
              "pairs": ("audio", "text"), "corpus": (3000, CORPUS_SIZE),
              "policy": "acoustic-rhythm", "paraphrase": "acoustic", "epochs": 14, "seed": 404,
              "lr": 3e-3},
    # Uni3D's role: a point tower aligned to a frozen image-text space (mini:vl's towers,
    # as Uni3D aligns to EVA-CLIP), on clouds of the corpus's events and their images and
    # captions; the image and text towers are mini:vl's, unchanged
    "3d": {"dim": 48, "modalities": ("image", "text", "point"), "towers": {"point": 16},
           "teacher": "vl", "corpus": (0, 4000), "policy": "visual-mix", "epochs": 12,
           "seed": 505, "lr": 3e-3},
}
BATCH = 128


# ----------------------------------------------------------------------------------- data

def _corpus_item(args):
    seed, i = args
    g = rng("train", "corpus", seed, i)
    e = sample_event(g)
    return e, render_audio(e, g), render_image(e, g)


def render_corpus(n: int = CORPUS_SIZE, seed: int = 0, workers: int = 2) -> dict:
    """``n`` paired events (audio int16 [n, 16000], pixels uint8 [n, 40, 40, 3]) from the
    ``train`` stream; item i depends only on (seed, i)."""
    tasks = [(seed, i) for i in range(n)]
    if workers > 1 and n >= 256:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ctx.Pool(workers) if ctx else mp.Pool(workers) as pool:
            items = pool.map(_corpus_item, tasks, chunksize=256)
    else:
        items = [_corpus_item(t) for t in tasks]
    events = [it[0] for it in items]
    return {"events": events,
            "audio": np.stack([it[1] for it in items]),
            "pixels": np.stack([it[2] for it in items])}


def policy_caption(event, g, policy: str) -> str:
    if policy in MIXTURES:
        weights = np.array([w for w, _ in MIXTURES[policy]])
        policy = MIXTURES[policy][int(g.choice(len(weights), p=weights / weights.sum()))][1]
    probs = POLICIES[policy]
    mention = [a for a in (*VISUAL_ATTRIBUTES, *ACOUSTIC_ATTRIBUTES) if g.random() < probs[a]]
    return caption(event, g, mention=mention)


def paraphrase_groups(g, n_groups: int, group_size: int = 8, vary: str = "acoustic"):
    """Paraphrase groups: per group one event and mention set (>= 1 attribute of the
    ``vary`` kind), up to ``group_size`` variants differing only in the mentioned values of
    that kind, and two wordings (specs). Returns (texts_a, texts_b, group_ids)."""
    varied_kind = ACOUSTIC_ATTRIBUTES if vary == "acoustic" else VISUAL_ATTRIBUTES
    fixed_kind = VISUAL_ATTRIBUTES if vary == "acoustic" else ACOUSTIC_ATTRIBUTES
    a_texts, b_texts, groups = [], [], []
    for k in range(n_groups):
        e = sample_event(g)
        fixed = [a for a in fixed_kind if g.random() < 0.5]
        varied = [a for a in varied_kind if g.random() < 0.7]
        if not varied:
            varied = [varied_kind[int(g.integers(3))]]
        combos = list(itertools.product(*(ATTRIBUTE_VALUES[a] for a in varied)))
        order = g.permutation(len(combos))[:group_size]
        spec_a, spec_b = paraphrase_pair(e, g, fixed + varied)
        for j in order:
            v = e.with_values(**dict(zip(varied, combos[j])))
            a_texts.append(render_caption(v, spec_a))
            b_texts.append(render_caption(v, spec_b))
            groups.append(k)
    return a_texts, b_texts, np.asarray(groups)


# ------------------------------------------------------------------------------- training

def _info_nce(a, b, scale):
    import torch
    import torch.nn.functional as F

    logits = scale * a @ b.T
    target = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _norm(x):
    import torch.nn.functional as F

    return F.normalize(x, dim=-1)


class _Trainer:
    """Adam with cosine decay over a known number of steps, and a learnable logit scale."""

    def __init__(self, params, lr: float, steps: int):
        import torch

        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.opt = torch.optim.Adam([*params, self.log_scale], lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))

    @property
    def scale(self):
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def step(self, loss):
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()


def _batches(n: int, g, batch: int = BATCH):
    order = g.permutation(n)
    for i in range(0, n - batch + 1, batch):  # drop the ragged tail (stable BatchNorm)
        yield order[i:i + batch]


def train_space(which: str, corpus: dict, seed: int = 0, log=print,
                overrides: dict | None = None) -> tuple[dict, dict]:
    """Train one space from a rendered corpus. Returns (tensors, metadata).
    ``overrides`` replaces recipe entries (tests train tiny variants). The caller's torch
    random state and deterministic-algorithms flag are left as they were."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with torch.random.fork_rng():
            torch.use_deterministic_algorithms(True)
            return _train_space(which, corpus, seed, log, overrides)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train_space(which, corpus, seed, log, overrides):
    import torch

    from freebind.mini.captions import vocabulary
    from freebind.mini.encoders import build_towers
    from freebind.mini.features import Tokenizer

    recipe = {**RECIPES[which], **(overrides or {})}
    torch.manual_seed(recipe["seed"] + 1000 * seed)
    g = rng("train", which, seed)
    if recipe.get("teacher"):
        return train_point_space(which, recipe, corpus, seed, g, log)
    vocab = vocabulary()
    tok = Tokenizer(vocab)
    config = {"dim": recipe["dim"], "vocab_size": len(tok), **recipe["towers"]}
    towers = build_towers(config)
    lo, hi = recipe["corpus"]
    events = corpus["events"][lo:hi]
    t0 = time.time()
    encode = _TowerEncoder(towers, tok, recipe, corpus, lo, hi)
    _train_pairs(which, recipe, towers, encode, events, g, log, t0)
    if recipe.get("audio_epochs"):
        _train_audio_to_images(which, recipe, towers, encode, g, log, t0)
    towers.eval()
    tensors = {f"{name}": t.detach().clone().contiguous()
               for name, t in towers.state_dict().items()}
    return tensors, _weights_metadata(which, recipe, config, vocab, seed, t0)


class _TowerEncoder:
    """A recipe's towers over its slice of the corpus: ``encode(modality, idx, texts)`` gives
    the normalised embeddings of corpus rows ``idx`` (of ``texts`` for the text tower)."""

    def __init__(self, towers, tok, recipe: dict, corpus: dict, lo: int, hi: int):
        import torch

        from freebind.mini.features import log_mel

        self.towers, self.tok = towers, tok
        self.n = len(corpus["events"][lo:hi])
        self.mels = None
        if "audio" in recipe["towers"]:
            waves = audio_to_float(corpus["audio"][lo:hi])
            self.mels = torch.cat([log_mel(waves[i:i + 1024]) for i in range(0, self.n, 1024)])
        self.pixels = corpus["pixels"][lo:hi] if "image" in recipe["towers"] else None

    def __call__(self, modality, idx, texts=None):
        from freebind.mini.features import image_tensor

        if modality == "audio":
            return _norm(self.towers["audio"](self.mels[idx]))
        if modality == "image":
            return _norm(self.towers["image"](image_tensor(self.pixels[idx])))
        return _norm(self.towers["text"](self.tok(texts)))


def _epoch_policy(recipe: dict, epoch: int) -> str:
    """The caption policy of ``epoch``: the recipe's, or its curriculum's
    (``schedule``: ``[(until_epoch, policy), ...]``)."""
    if recipe.get("schedule"):
        return next(p for until, p in recipe["schedule"] if epoch < until)
    return recipe["policy"]


def _train_pairs(which, recipe, towers, encode, events, g, log, t0) -> None:
    """Contrastive training of the recipe's pair of towers on paired rows and captions (with
    text paraphrase groups when the recipe asks for them)."""
    first, second = recipe["pairs"]
    n = len(events)
    params = [p for m in (first, second) for p in towers[m].parameters()]
    steps = recipe["epochs"] * (n // BATCH)
    tr = _Trainer(params, recipe["lr"], steps)
    towers.train()
    for epoch in range(recipe["epochs"]):
        total, count = 0.0, 0
        for idx in _batches(n, g):
            policy = _epoch_policy(recipe, epoch)
            texts = [policy_caption(events[i], g, policy) for i in idx]
            a = encode(first, idx)
            b = encode(second, idx, texts)
            loss = _info_nce(a, b, tr.scale)
            if recipe.get("paraphrase"):
                ta, tb, _ = paraphrase_groups(g, 12, vary=recipe["paraphrase"])
                loss = loss + _info_nce(encode("text", None, ta), encode("text", None, tb),
                                        tr.scale)
            tr.step(loss)
            total, count = total + float(loss.detach()), count + 1
        log(f"[{which}] {first}-{second} epoch {epoch + 1}/{recipe['epochs']} "
            f"loss {total / count:.3f} ({time.time() - t0:.0f}s)")


def _train_audio_to_images(which, recipe, towers, encode, g, log, t0) -> None:
    """ImageBind-style: freeze the image tower, align audio to images only."""
    import torch

    from freebind.mini.features import image_tensor

    n, pixels = encode.n, encode.pixels
    towers["image"].eval()
    for p in towers["image"].parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        targets = torch.cat([_norm(towers["image"](image_tensor(pixels[i:i + 512])))
                             for i in range(0, n, 512)])
    steps = recipe["audio_epochs"] * (n // BATCH)
    tr = _Trainer(towers["audio"].parameters(), recipe["lr"], steps)
    for epoch in range(recipe["audio_epochs"]):
        total, count = 0.0, 0
        for idx in _batches(n, g):
            loss = _info_nce(encode("audio", idx), targets[idx], tr.scale)
            tr.step(loss)
            total, count = total + float(loss.detach()), count + 1
        log(f"[{which}] audio-image epoch {epoch + 1}/{recipe['audio_epochs']} "
            f"loss {total / count:.3f} ({time.time() - t0:.0f}s)")


def _weights_metadata(which, recipe, config, vocab, seed, t0) -> dict:
    """The safetensors metadata of trained mini weights."""
    from freebind.mini.features import PREPROCESS_VERSION

    return {
        "format": "freebind-mini-1", "which": which, "dim": str(recipe["dim"]),
        "modalities": json.dumps(list(recipe["modalities"])), "config": json.dumps(config),
        "vocab": json.dumps(list(vocab)), "preprocess": PREPROCESS_VERSION,
        "generator": GENERATOR_VERSION, "seed": str(seed),
        "recipe": json.dumps({k: v for k, v in recipe.items() if k != "modalities"}),
        "train_seconds": f"{time.time() - t0:.1f}",
    }


def save_weights(path, tensors: dict, metadata: dict) -> None:
    """Atomic safetensors write (temporary file, then ``os.replace``)."""
    from safetensors.torch import save_file

    from freebind.util.atomic import atomic_write

    atomic_write(path, lambda tmp: save_file(dict(sorted(tensors.items())), tmp,
                                             metadata=metadata))


# ------------------------------------------------- a point tower over a teacher (mini:3d)

def _teacher(recipe: dict):
    from freebind.mini.spaces import load_file, weights_path

    path = recipe.get("teacher_weights") or weights_path(recipe["teacher"])
    return load_file(path)


def train_point_space(which: str, recipe: dict, corpus: dict, seed: int, g, log):
    """(tensors, metadata) of a point space over the teacher's image and text towers."""
    import torch

    from freebind.mini.encoders import build_towers
    from freebind.mini.features import Tokenizer, image_tensor
    from freebind.mini.points_training import POINT_VERSION, point_corpus

    teacher = _teacher(recipe)
    vocab = json.loads(teacher.metadata["vocab"])
    tok = Tokenizer(vocab)
    config = {**json.loads(teacher.metadata["config"]), "point": recipe["towers"]["point"]}
    towers = build_towers(config)
    missing, _ = towers.load_state_dict(teacher.towers.state_dict(), strict=False)
    assert all(k.startswith("point.") for k in missing), missing
    for name in ("image", "text"):
        towers[name].eval().requires_grad_(False)
    lo, hi = recipe["corpus"]
    events = corpus["events"][lo:hi]
    t0 = time.time()
    clouds = torch.from_numpy(point_corpus(events, seed, lo, recipe.get("workers", 1)))
    with torch.no_grad():
        pixels = corpus["pixels"][lo:hi]
        images = torch.cat([_norm(towers["image"](image_tensor(pixels[i:i + 512])))
                            for i in range(0, len(events), 512)])
    log(f"[{which}] {len(events)} clouds rendered ({time.time() - t0:.0f}s)")
    tr = _Trainer(towers["point"].parameters(), recipe["lr"],
                  recipe["epochs"] * (len(events) // BATCH))
    towers["point"].train()
    for epoch in range(recipe["epochs"]):
        total, count = 0.0, 0
        for idx in _batches(len(events), g):
            texts = [policy_caption(events[i], g, recipe["policy"]) for i in idx]
            with torch.no_grad():
                text = _norm(towers["text"](tok(texts)))
            p = _norm(towers["point"](clouds[idx]))
            loss = _info_nce(p, images[idx], tr.scale) + _info_nce(p, text, tr.scale)
            tr.step(loss)
            total, count = total + float(loss.detach()), count + 1
        log(f"[{which}] point-image+text epoch {epoch + 1}/{recipe['epochs']} "
            f"loss {total / count:.3f} ({time.time() - t0:.0f}s)")
    towers.eval()
    tensors = {k: t.detach().clone().contiguous() for k, t in towers.state_dict().items()}
    recipe = {k: v for k, v in recipe.items() if k != "teacher_weights"}
    meta = _weights_metadata(which, recipe, config, vocab, seed, t0)
    meta.update({"teacher": teacher.fingerprint, "points": POINT_VERSION})
    return tensors, meta
