"""Training ``mini:3d``, the mini world's Uni3D: a point tower aligned to a frozen
image-text space (the teacher, mini:vl), as Uni3D aligns its point encoder to EVA-CLIP.

Each corpus event is also rendered as a cloud (:func:`freebind.mini.shapes.render_points`,
from its own ``train``/``points`` stream) and read as the tower reads files (farthest-point
sampled to 128 points, centred, in the unit sphere). The loss is Uni3D's: InfoNCE of the
clouds against the teacher's image embeddings plus InfoNCE against its embeddings of
captions (the teacher's caption policy). The teacher's image and text towers are copied
into the space unchanged, so mini:3d's image and text embeddings are mini:vl's.
"""

from __future__ import annotations

import json
import time

import numpy as np

from freebind.mini.world import rng

#: bumped whenever a cloud's rendering or reading changes what the tower sees
POINT_VERSION = "mini-points-1 (1024 rendered, FPS 128, unit sphere, rgb)"


def _cloud_item(args):
    from freebind.mini.shapes import render_points, tower_input

    event, seed, i = args
    xyz, rgb = render_points(event, rng("train", "points", seed, i))
    return tower_input(xyz, rgb)


def point_corpus(events, seed: int, start: int = 0, workers: int = 1) -> np.ndarray:
    """Tower inputs ``[n, 128, 6]`` of ``events`` (corpus rows ``start``…); row i depends
    only on (seed, start + i)."""
    tasks = [(e, seed, start + i) for i, e in enumerate(events)]
    if workers > 1 and len(tasks) >= 256:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ctx.Pool(workers) if ctx else mp.Pool(workers) as pool:
            return np.stack(pool.map(_cloud_item, tasks, chunksize=128))
    return np.stack([_cloud_item(t) for t in tasks])


def _teacher(recipe: dict):
    from freebind.mini.spaces import load_file, weights_path

    path = recipe.get("teacher_weights") or weights_path(recipe["teacher"])
    return load_file(path)


def train_point_space(which: str, recipe: dict, corpus: dict, seed: int, g, log):
    """(tensors, metadata) of a point space over the teacher's image and text towers."""
    import torch

    from freebind.mini.encoders import build_towers
    from freebind.mini.features import Tokenizer, image_tensor
    from freebind.mini.training import BATCH, _Trainer, _batches, _info_nce, _norm
    from freebind.mini.training import _weights_metadata, policy_caption

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
