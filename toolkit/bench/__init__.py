"""Benchmarks: timing, quality metrics, one record per model × backend × precision × shape."""
