"""Small shared helpers: errors, TensorRT imports, atomic writes, config, ONNX loading, progress."""
