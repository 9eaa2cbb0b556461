"""The mini world (docs/mini-world.md): a generator of real files about sound-making objects with
visual and acoustic attributes, and small trained encoders that play the paper's roles
(``mini:bind`` like ImageBind, ``mini:vl`` like InternVL-C, ``mini:clap``/``mini:clap2`` like
CLAP). Its weights ship with the package; ``scripts/train_mini.py`` reproduces them.

    from freebind.mini import write_pools, write_evalsets
    write_pools("pools/", n_audio=3000, n_image=3000, n_text=3000, seed=0)
    write_evalsets("evalsets/", seed=0)
    space = freebind.spaces.get("mini:bind")
"""

from __future__ import annotations

from freebind.mini.world import (ACOUSTIC_ATTRIBUTES, CLASSES, GENERATOR_VERSION,
                                 VISUAL_ATTRIBUTES, Event)
from freebind.mini.writers import EVALSETS, write_evalsets, write_pools

__all__ = ["CLASSES", "VISUAL_ATTRIBUTES", "ACOUSTIC_ATTRIBUTES", "GENERATOR_VERSION", "Event",
           "EVALSETS", "write_pools", "write_evalsets"]
