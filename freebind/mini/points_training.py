"""The data of ``mini:3d``'s training (the loop: :func:`freebind.mini.training.train_point_space`),
the mini world's Uni3D: a point tower aligned to a frozen image-text space (the teacher,
mini:vl), as Uni3D aligns its point encoder to EVA-CLIP.

Each corpus event is also rendered as a cloud (:func:`freebind.mini.shapes.render_points`,
from its own ``train``/``points`` stream) and read as the tower reads files (farthest-point
sampled to 128 points, centred, in the unit sphere). The loss is Uni3D's: InfoNCE of the
clouds against the teacher's image embeddings plus InfoNCE against its embeddings of
captions (the teacher's caption policy). The teacher's image and text towers are copied
into the space unchanged, so mini:3d's image and text embeddings are mini:vl's.
"""

from __future__ import annotations


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
