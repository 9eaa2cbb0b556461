"""freebind: bind pretrained multimodal embedding spaces with space bonds (FreeBind).

The curated API, imported lazily so ``import freebind`` stays cheap::

    freebind.plan("IB + d(InternVL) + c(CLAP_g, CLAP_m)")   # parse + compile
    fused = freebind.load("fused.safetensors")              # a FusedSpace
    target = freebind.open("fused.safetensors@versatile")   # any target string
    report = freebind.embed(target, ["media/"], output="out/")  # resumable partitions
    records = freebind.evaluate(["mini:bind", target], ["audiocaps"], ["sets/"])
    result = freebind.tune("fused.safetensors", ["audiocaps"], ["sets/"], ["a=0:1:0.1"])
    freebind.import_embeddings("CLAP_g", "clip_retrieval_out/")  # rows computed elsewhere
    fused.fuse({"IB": {"audio": a}, "CLAP_g": {"audio": b}, ...}, factors=["a=0.8"])
    freebind.open("hf:org/fused@main@versatile")            # a bundle on the Hub
    freebind.push("fused.safetensors", "org/fused")          # publish it, with a model card

The public API (each name is imported on first use; ``help(freebind.NAME)`` for details):

* ``plan``, ``parse``, ``format`` — space expressions: compile, parse, print canonically
* ``build`` — train a fused space from pools and write its bundle
* ``load``, ``FusedSpace`` — a bundle as a space (``encode``, ``fuse``, ``with_factors``)
* ``open``, ``Target`` — any target string (space, bundle, ``bundle@preset``, ``hf:…``)
* ``embed``, ``plan_embed``, ``EmbedReport`` — files to resumable embedding partitions
* ``evaluate``, ``tune`` — the paper's suites; factor sweeps and presets
* ``import_embeddings`` — rows computed elsewhere, into the cache
* ``Index`` — search an index folder (``freebind index``)
* ``push`` — publish a bundle with a model card
* ``spaces`` — the space registry (``spaces.get``, ``spaces.names``)
* ``FreebindError`` — the base of every error freebind reports (``.exit_code``)
"""

from __future__ import annotations

from freebind.util.version import __version__

_LAZY = {
    "parse": ("freebind.algebra", "parse"),
    "format": ("freebind.algebra", "format"),
    "plan": ("freebind.algebra", "plan"),
    "load": ("freebind.fusion.fused", "load"),
    "open": ("freebind.run.targets", "open"),
    "Target": ("freebind.run.targets", "Target"),
    "embed": ("freebind.embed", None),           # callable: freebind.run.partitions.embed
    "plan_embed": ("freebind.run.partitions", "plan_embed"),
    "EmbedReport": ("freebind.run.partitions", "EmbedReport"),
    "evaluate": ("freebind.evaluate", None),     # callable: freebind.evaluate.entrypoints.evaluate
    "tune": ("freebind.evaluate.entrypoints", "tune"),
    "FusedSpace": ("freebind.fusion.fused", "FusedSpace"),
    "build": ("freebind.build", None),           # callable: freebind.build.orchestrator.build
    "import_embeddings": ("freebind.run.importer", "import_embeddings"),
    "Index": ("freebind.search", "Index"),
    "push": ("freebind.share.push", "push"),
    "spaces": ("freebind.spaces", None),
    "FreebindError": ("freebind.util.errors", "FreebindError"),
}

__all__ = ["__version__", *_LAZY]


def __dir__():
    return sorted([*globals(), *_LAZY])


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'freebind' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value   # one object from the first access: freebind.embed is freebind.embed
    return value
