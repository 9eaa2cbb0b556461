"""RAG frameworks embed through ``freebind api`` with their own OpenAI classes, no freebind
code: LangChain's ``OpenAIEmbeddings`` against a live local server gives the fused rows
(docs/search.md, "Vector databases")."""

from __future__ import annotations

import numpy as np
import pytest

from live_server import LiveServer
from search_world import make_bundle

import freebind

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
lc = pytest.importorskip("langchain_openai")

TEXTS = ["a dog barking", "rain on a tin roof"]


def test_langchain_openai_embeddings_are_the_fused_rows(tmp_path):
    from freebind.serve.embeddings_api import EmbeddingService, create_app, guard

    bundle = make_bundle(tmp_path / "fused.safetensors")
    live = LiveServer(guard(create_app(EmbeddingService(str(bundle))), max_body=1 << 20),
                      log_level="warning").start()
    try:
        emb = lc.OpenAIEmbeddings(model="fused@versatile", base_url=live.url("/v1"),
                                  api_key="unused", check_embedding_ctx_length=False,
                                  max_retries=0)
        docs = np.asarray(emb.embed_documents(TEXTS), dtype=np.float32)
        query = np.asarray(emb.embed_query(TEXTS[0]), dtype=np.float32)
    finally:
        live.stop()
    want = freebind.open(str(bundle), preset="versatile").encode("text", TEXTS).numpy()
    np.testing.assert_allclose(docs, want, atol=1e-6)
    np.testing.assert_allclose(query, want[0], atol=1e-6)
