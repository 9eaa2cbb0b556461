"""Search what was embedded: a factor-aware index (:class:`Index`), and a web page
(:mod:`freebind.serve.search_server`). See docs/search.md."""

from freebind.search.index import Hit, Index
from freebind.search import databases  # noqa: F401  (Index.open reads vector databases)

__all__ = ["Index", "Hit"]
