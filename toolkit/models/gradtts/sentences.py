"""Fixed sentences shipped with the package for benchmarks, export validation and calibration.

Written for this project (no corpus text): varied lengths, ~1.5 s to ~6 s of speech.
"""

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A small boat drifted slowly across the quiet harbour at dawn.",
    "Edge devices must run speech models quickly, with little memory, and without losing quality.",
    "Please call me back tomorrow morning.",
]
