"""onnxopt: post-training optimizer for transformer models in ONNX."""

__version__ = "0.1.0"
