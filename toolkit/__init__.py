"""toolkit: take PyTorch speech, TTS and video models to the edge.

Layers (see README): ``models/`` (PyTorch), ``export/`` (ONNX, precision, TensorRT),
``runtime/`` (one Session interface, pipelines written once), ``bench/`` (timing, quality, records).
"""

__version__ = "0.1.0"
