"""SVT runtime: clip embedding (and slow-fast inference) over the backbone Session."""

from .pipeline import EmbedPipeline, open_pipeline

__all__ = ["EmbedPipeline", "open_pipeline"]
