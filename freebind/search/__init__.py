"""Search what was embedded: a factor-aware index (:class:`Index`), and a web page
(:mod:`freebind.serve.search_server`). See docs/search.md."""

from freebind.search.index import Hit, Index

__all__ = ["Index", "Hit"]
