"""Entry point for ONNX export; the code lives in the library
(`partseg.runtime.onnx_export`, `partseg.runtime.quantize`).

    python3 -m export.onnx UNET --out MODEL.onnx [--int8 [--calib DIR | --gan CKPT]]   # same as `partseg export onnx`
"""

from __future__ import annotations

from partseg.runtime.onnx_export import DEFAULT_OPSET, MAX_SIDE, OnnxExport, export_onnx
from partseg.runtime.quantize import Int8Export, Int8Parity, export_int8

__all__ = ["DEFAULT_OPSET", "MAX_SIDE", "Int8Export", "Int8Parity", "OnnxExport", "export_int8", "export_onnx"]

if __name__ == "__main__":
    import sys

    from partseg.cli import main

    sys.argv = [sys.argv[0], "export", "onnx", *sys.argv[1:]]
    main()
