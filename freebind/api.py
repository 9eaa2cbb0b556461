"""The public import path of the OpenAI-compatible embeddings endpoint, ``freebind.api``::

    from freebind.api import EmbeddingService, serve
    EmbeddingService(target).embed({"input": ["a dog barks"]})   # the endpoint, no server
    serve(target, port=8000)                                      # freebind api TARGET

The implementation lives in :mod:`freebind.serve.embeddings_api`."""

from freebind.serve.embeddings_api import (DEFAULT_PORT, EmbeddingService, Item, create_app,
                                           parse_factors, parse_inputs, parse_item, serve)

__all__ = ["DEFAULT_PORT", "EmbeddingService", "Item", "create_app", "parse_factors",
           "parse_inputs", "parse_item", "serve"]
