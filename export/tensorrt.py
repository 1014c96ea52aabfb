"""Entry point for TensorRT engines; the builder lives in the library (`partseg.runtime.tensorrt_build`).

    python3 export/tensorrt.py MODEL.onnx --out MODEL.plan [--fp16 ...]   # same as `partseg export tensorrt`
"""

if __name__ == "__main__":
    import sys

    from partseg.cli import main

    sys.argv = [sys.argv[0], "export", "tensorrt", *sys.argv[1:]]
    main()
