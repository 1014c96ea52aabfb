#!/usr/bin/env bash
# The prepared GPU check (issue #19), one command on a machine with an NVIDIA GPU:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]      # default OUT_DIR: $OUT, else ./gpu_check
#
# 1. installs what the GPU stages need from the package index, where it is missing: a CUDA build of torch (the
#    PyPI wheel; a "+cpu" build is replaced by the same version), onnxruntime-gpu with its CUDA/cuDNN wheels,
#    and TensorRT 10 for torch's CUDA major (onnxruntime's TensorRT provider links libnvinfer 10); a failed
#    install is logged and the stages that need it report the error;
# 2. runs benchmarks/gpu_check.py within GPU_CHECK_BUDGET seconds (default 480): TensorRT FP16 build + parity,
#    inference speed with the roofline floor, the HTTP service on TensorRT, GAN training sec/kimg;
# 3. leaves OUT_DIR/BENCHMARKS_gpu.md (sections to paste under BENCHMARKS.md's GPU heading),
#    OUT_DIR/BENCHMARKS_gpu.json and OUT_DIR/install.log.
# Without an NVIDIA GPU it installs nothing, writes a report that says so and exits 3.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check}}"
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/BENCHMARKS_gpu.md"
LOG="$OUT_DIR/install.log"
PY="${PYTHON:-python3}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  exec "$PY" benchmarks/gpu_check.py --out "$REPORT"   # says there is no GPU, writes that, exits 3
fi

echo "gpu_check: $(nvidia-smi -L | head -1); installing into $("$PY" -c 'import sys; print(sys.prefix)') (log: $LOG)"
pipi() { "$PY" -m pip install --disable-pip-version-check "$@" >>"$LOG" 2>&1 || echo "gpu_check: pip install $* failed (see $LOG)"; }
: >"$LOG"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
  TV="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
  pipi --force-reinstall --no-deps "torch${TV:+==$TV}"   # the PyPI wheel of the same version is the CUDA build
  pipi "torch${TV:+==$TV}"                                # and its nvidia-* libraries
fi
CUDA_MAJOR="$("$PY" -c 'import torch; print((torch.version.cuda or "13").split(".")[0])' 2>/dev/null || echo 13)"
"$PY" -c 'import importlib.metadata as m; m.version("onnxruntime-gpu")' 2>/dev/null || pipi "onnxruntime-gpu[cuda,cudnn]"
"$PY" -c 'import tensorrt' 2>/dev/null || pipi "tensorrt-cu${CUDA_MAJOR}>=10,<11" || true
"$PY" -c 'import tensorrt' 2>/dev/null || pipi "tensorrt-cu${CUDA_MAJOR}"
"$PY" -c 'import partseg' 2>/dev/null || pipi --no-deps -e .
"$PY" - <<'EOF' | tee -a "$LOG"
import importlib
for name in ("torch", "onnxruntime", "tensorrt", "bentoml"):
    try:
        mod = importlib.import_module(name)
        extra = f" CUDA {mod.version.cuda}, GPU available: {mod.cuda.is_available()}" if name == "torch" else ""
        print(f"gpu_check: {name} {mod.__version__}{extra}")
    except Exception as e:  # noqa: BLE001
        print(f"gpu_check: {name} not importable: {e}")
EOF

exec "$PY" benchmarks/gpu_check.py --out "$REPORT" --budget "${GPU_CHECK_BUDGET:-480}"
