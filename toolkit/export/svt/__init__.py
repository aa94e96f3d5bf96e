"""SVT export: the video backbone, one graph with dynamic batch, frames, height and width."""

from .plan import EXPORT_REVISION, build_plan

__all__ = ["EXPORT_REVISION", "build_plan"]
