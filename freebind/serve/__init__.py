"""HTTP servers: the search page and JSON API over an index, the OpenAI-compatible embeddings
API, and the localhost guard they share."""
