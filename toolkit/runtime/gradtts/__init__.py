"""Grad-TTS runtime: the sampler over encoder and U-Net Sessions, and `toolkit synthesize`."""

from .pipeline import GradTTSPipeline, open_pipeline
from .synthesize import synthesize_to_files

__all__ = ["GradTTSPipeline", "open_pipeline", "synthesize_to_files"]
