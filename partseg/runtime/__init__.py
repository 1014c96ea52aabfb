"""Inference: one Segmenter over PyTorch, onnxruntime and TensorRT backends, and the exports that feed it."""

from partseg.runtime.segmenter import Backend, ModelInfo, OrtSettings, Segmenter, compare, read_onnx_info

__all__ = ["Backend", "ModelInfo", "OrtSettings", "Segmenter", "compare", "read_onnx_info"]
