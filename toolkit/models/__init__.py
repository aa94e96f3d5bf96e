"""PyTorch models, loading and training — one folder per family."""
