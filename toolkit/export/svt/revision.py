"""The svt export's revision, importable without PyTorch."""

EXPORT_REVISION = 3  # 3: bilinear (TensorRT-parsable) spatial position resize
