"""The gradtts export's revision, importable without PyTorch."""

EXPORT_REVISION = 2  # 2: relative-position clamp in float (TensorRT has no int64 Clip)
