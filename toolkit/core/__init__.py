"""Shared basics at the bottom of the layer stack: errors, progress, files, threads, hardware,
tensor parity metrics. Nothing here imports another ``toolkit`` layer."""
