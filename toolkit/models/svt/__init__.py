"""SVT (self-supervised video transformer): TimeSformer backbone, video decoding, training."""

from .checkpoint import load_model
from .train import TrainOptions, train

__all__ = ["load_model", "TrainOptions", "train"]
