"""HTTP servers: the search page and JSON API over an index, the OpenAI-compatible embeddings
API, and what they share: the localhost guard, API keys (``auth``), health and metrics
(``ops``) and micro-batching of concurrent requests (``batching``)."""
