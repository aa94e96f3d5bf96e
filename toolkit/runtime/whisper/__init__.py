"""Whisper runtime: the decode loop, written once over Session objects."""
