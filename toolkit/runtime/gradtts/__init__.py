"""Grad-TTS runtime: the N-step probability-flow ODE sampler over Session objects."""
