"""Grad-TTS (Popov et al., ICML 2021): model, text front end, audio, MAS, sampler, training."""

from .checkpoint import load_model
from .train import train

__all__ = ["load_model", "train"]
