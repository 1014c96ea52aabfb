"""Exporters of the distilled UNet: ONNX (`export.onnx`) and TensorRT engines (`export.tensorrt`)."""
