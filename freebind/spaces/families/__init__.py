"""Families of spaces resolved from prefixed references (``transformers:``, ``pe:``, …):
one module per family, each exposing ``resolve_family(spec, ref) -> SpaceInfo``, ``check``,
``load`` and a fetcher, named as ``"module:function"`` strings in the catalog so that
nothing heavy is imported before a space is used."""
