"""Small shared helpers: errors, lazy imports, atomic writes, config, ONNX loading, progress."""
