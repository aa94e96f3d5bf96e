"""Serving: the OpenAI-compatible HTTP API (``toolkit serve``) with dynamic batching, its Ray
Serve deployment (``--engine ray``), the load test, and the Triton model repository
(``toolkit export-triton``)."""
