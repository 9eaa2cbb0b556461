"""Factor-analysis figures like the paper's: the change of each task's metric versus the
base space over a factor grid, one panel per task (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np


def delta_grid(result, task: str) -> np.ndarray:
    """``[len(values_0), len(values_1)]`` change (percentage points) of ``task`` vs base."""
    shape = [len(v) for v in result.grid_values]
    d = np.array([100.0 * (p.metrics[task] - result.base[task]) for p in result.fine])
    return d.reshape(shape)


def draw(result, path: str | Path, title: str = "") -> Path:
    """Write the figure to ``path`` (atomically) and return it. Two grid keys: heatmaps;
    one key: curves; no grid: bars of the coarse combinations."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    tasks: Sequence[str] = result.tasks
    n = len(tasks)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    keys = result.grid_keys
    for ax, task in zip(axes.flat, tasks):
        base = 100.0 * result.base[task]
        if len(keys) == 2:
            d = delta_grid(result, task)
            lim = max(float(np.abs(d).max()), 1e-6)
            im = ax.imshow(d, origin="lower", cmap="RdBu_r",
                           norm=TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim), aspect="auto")
            xs, ys = result.grid_values[1], result.grid_values[0]
            ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs], fontsize=7, rotation=90)
            ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys], fontsize=7)
            ax.set_xlabel(keys[1])
            ax.set_ylabel(keys[0])
            digits = 1 if lim < 5 else 0           # small changes: one decimal
            if d.size <= 144:
                for (i, j), v in np.ndenumerate(d):
                    label = f"{v:.{digits}f}"
                    if float(label) == 0.0:
                        label = label.lstrip("-")
                    ax.text(j, i, label, ha="center", va="center", fontsize=5.5,
                            color="white" if abs(v) > 0.6 * lim else "black")
            i, j = np.unravel_index(int(np.argmax(d)), d.shape)
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.6,
                                       edgecolor="black"))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Δ (points)")
        elif len(keys) == 1:
            d = delta_grid(result, task)
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.plot(result.grid_values[0], d, marker="o", ms=3)
            ax.set_xlabel(keys[0])
            ax.set_ylabel("Δ vs base (points)")
        else:
            labels = [",".join(p.overrides) or "all on" for p in result.coarse]
            d = [100.0 * (p.metrics[task] - result.base[task]) for p in result.coarse]
            ax.bar(range(len(d)), d)
            ax.set_xticks(range(len(d)), labels, fontsize=7, rotation=45, ha="right")
            ax.set_ylabel("Δ vs base (points)")
        ax.set_title(f"{task}\nbase {base:.1f}", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from freebind.util.atomic import atomic_write

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    finally:
        plt.close(fig)
