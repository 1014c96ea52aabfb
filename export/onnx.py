"""Entry point for ONNX export; the code lives in the library (`partseg.runtime.onnx_export`,
`partseg.runtime.quantize`).

    python3 export/onnx.py UNET --out MODEL.onnx [--int8 [--calib DIR | --gan CKPT]]   # same as `partseg export onnx`
"""

if __name__ == "__main__":
    import sys

    from partseg.cli import main

    sys.argv = [sys.argv[0], "export", "onnx", *sys.argv[1:]]
    main()
