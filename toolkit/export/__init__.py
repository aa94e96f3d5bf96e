"""Export: graph specs per family, ONNX export, precision conversion, TensorRT engines."""
