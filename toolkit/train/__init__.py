"""Training that needs the runtime (Whisper: evaluation with the toolkit's decode loop).

Grad-TTS and SVT train in ``models/`` (they need nothing above it).
"""
