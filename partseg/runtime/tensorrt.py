"""TensorRT engines in the one runtime: the JSON sidecar, the version check and the inference backend.

An engine file (`MODEL.plan`, `.engine` or `.trt`) holds only TensorRT's serialized network, so everything else a
`Segmenter` needs sits beside it in `MODEL.plan.json`: the ONNX file's partseg metadata (labels, stride,
normalisation, training size; the keys of `ModelInfo.to_metadata`) plus what the engine was built with and for
(TensorRT version, GPU, the min/opt/max input shapes of its optimisation profile, precision). `export/tensorrt.py`
writes both; `read_engine_info` reads the sidecar without TensorRT installed.

`TensorRTBackend` runs an engine with the name-based tensor API of TensorRT 10 and 11 (`set_input_shape`,
`set_tensor_address`, `execute_async_v3`), using torch CUDA tensors as device buffers and a torch CUDA stream (no
pycuda). TensorRT is imported lazily: this module imports, and its sidecar and version checks work, without it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partseg.atomic import atomic_write_text
from partseg.runtime.model_info import ENGINE_SUFFIXES, ModelInfo

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'partseg[tensorrt]'"
TENSORRT_MISSING = (f"TensorRT is not installed: `{INSTALL_HINT}` on a machine with an NVIDIA GPU and NVIDIA's "
                    f"package index reachable")
REBUILD_HINT = "rebuild it with `partseg export tensorrt`"
SIDECAR_VERSION = "1"
INPUT_NAME, OUTPUT_NAME = "image", "logits"  # the tensor names export/onnx.py gives the graph

Shape = tuple[int, int, int, int]


def require_tensorrt() -> Any:
    """The `tensorrt` module, or an ImportError that says how to install it."""
    try:
        import tensorrt
    except ImportError as e:
        raise ImportError(TENSORRT_MISSING) from e
    return tensorrt


def sidecar_path(engine: str | os.PathLike) -> Path:
    """`MODEL.plan` -> `MODEL.plan.json`."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


# -------------------------------------------------------------------------------------------------------- sidecar


@dataclass
class EngineInfo:
    """What the sidecar records: the model's metadata and how the engine was built."""

    model: ModelInfo
    tensorrt_version: str
    gpu: str  # torch.cuda.get_device_name of the GPU it was built on
    min_shape: Shape  # the optimisation profile of input "image", NxCxHxW
    opt_shape: Shape
    max_shape: Shape
    precision: str  # "fp32" | "fp16"
    engine_bytes: int  # size of the engine file it describes (catches an engine and a sidecar from two builds)
    extra: dict[str, str] = field(default_factory=dict)  # informative only (compute capability, fp16 method, ...)

    def to_json(self) -> str:
        d: dict[str, Any] = {**self.model.to_metadata(), "sidecar_version": SIDECAR_VERSION,
                             "tensorrt_version": self.tensorrt_version, "gpu": self.gpu,
                             "min_shape": list(self.min_shape), "opt_shape": list(self.opt_shape),
                             "max_shape": list(self.max_shape), "precision": self.precision,
                             "engine_bytes": self.engine_bytes, "input": INPUT_NAME, "output": OUTPUT_NAME}
        return json.dumps({**d, **{k: v for k, v in self.extra.items() if k not in d}}, indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> EngineInfo:
        model = ModelInfo.from_metadata({k: v for k, v in d.items() if isinstance(v, str)}, where)
        missing = [k for k in ("tensorrt_version", "min_shape", "opt_shape", "max_shape", "precision",
                               "engine_bytes") if k not in d]
        if missing:
            raise ValueError(f"{where}: TensorRT sidecar lacks {', '.join(missing)}; {REBUILD_HINT}")
        shapes = []
        for k in ("min_shape", "opt_shape", "max_shape"):
            s = d[k]
            if not (isinstance(s, list) and len(s) == 4 and all(isinstance(v, int) and v > 0 for v in s)):
                raise ValueError(f"{where}: {k} must be 4 positive integers (N, C, H, W), got {s!r}")
            shapes.append(tuple(s))
        known = {"sidecar_version", "tensorrt_version", "gpu", "min_shape", "opt_shape", "max_shape", "precision",
                 "engine_bytes", "input", "output", *model.to_metadata()}
        return cls(model=model, tensorrt_version=str(d["tensorrt_version"]), gpu=str(d.get("gpu", "")),
                   min_shape=shapes[0], opt_shape=shapes[1], max_shape=shapes[2], precision=str(d["precision"]),
                   engine_bytes=int(d["engine_bytes"]),
                   extra={k: str(v) for k, v in d.items() if k not in known})


def write_engine_info(engine: str | os.PathLike, info: EngineInfo) -> Path:
    """Write the sidecar of `engine` atomically; returns its path."""
    path = sidecar_path(engine)
    atomic_write_text(info.to_json(), path)
    return path


def read_engine_sidecar(path: str | os.PathLike) -> EngineInfo:
    """The sidecar of a TensorRT engine, checked against the engine file (which must exist)."""
    path = Path(path)
    if path.suffix.lower() not in ENGINE_SUFFIXES:
        hint = " (ONNX files run on onnxruntime: `Segmenter.load` picks it)" if path.suffix.lower() == ".onnx" else ""
        raise ValueError(f"{path}: not a TensorRT engine file: expected one of {', '.join(sorted(ENGINE_SUFFIXES))}"
                         f", got {path.suffix or 'no suffix'!r}{hint}")
    if not path.exists():
        raise FileNotFoundError(f"TensorRT engine not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: a folder, not a TensorRT engine file")
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{path}: its sidecar {side.name} is missing (it holds the labels, stride and TensorRT "
                                f"version the engine needs); {REBUILD_HINT} (it writes both files)")
    try:
        d = json.loads(side.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{side}: not a JSON sidecar of a TensorRT engine ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{side}: not a JSON sidecar of a TensorRT engine (top level is {type(d).__name__})")
    info = EngineInfo.from_dict(d, str(side))
    size = path.stat().st_size
    if size != info.engine_bytes:
        raise ValueError(f"{side} describes an engine of {info.engine_bytes} bytes but {path.name} has {size}: the "
                         f"two files come from different builds; {REBUILD_HINT}")
    return info


def read_engine_info(path: str | os.PathLike) -> ModelInfo:
    """The partseg metadata of a TensorRT engine, from its sidecar `MODEL.plan.json` (TensorRT not needed)."""
    return read_engine_sidecar(path).model


# -------------------------------------------------------------------------------------------------------- versions


class EngineVersionError(ValueError):
    """The engine was serialized by another TensorRT release than the installed one."""


def _release(version: str) -> tuple[int, ...] | str:
    """"10.13.3.9" -> (10, 13, 3): the release; a fourth (build) number and suffixes (".post1") are ignored."""
    nums = []
    for part in str(version).strip().split(".")[:3]:
        m = re.match(r"\d+", part)
        if not m:
            break
        nums.append(int(m.group()))
    return tuple(nums) if len(nums) == 3 else str(version).strip()


def check_engine_version(built: str, installed: str, engine: str | os.PathLike = "engine") -> None:
    """Raise EngineVersionError unless `built` and `installed` are the same TensorRT release.

    TensorRT engines are, by default, compatible only with the TensorRT version used to build them (the
    version-compatible build flag is not used here), so major, minor and patch must all match.
    """
    if _release(built) != _release(installed):
        raise EngineVersionError(f"{engine}: engine built for TensorRT {built}, this is {installed}; {REBUILD_HINT}")


# -------------------------------------------------------------------------------------------------------- backend

_LOGGER_CLASS: type | None = None


def make_logger(trt: Any, verbose: bool = False) -> Any:
    """A trt.ILogger that sends TensorRT's messages to Python logging and keeps the errors for our exceptions."""
    global _LOGGER_CLASS
    if _LOGGER_CLASS is None:
        class PartsegTrtLogger(trt.ILogger):
            def __init__(self, verbose: bool = False):
                trt.ILogger.__init__(self)  # required by the bindings for Python subclasses
                self.verbose = verbose
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                    self.errors.append(str(msg))
                    log.error("TensorRT: %s", msg)
                elif severity == trt.ILogger.WARNING:
                    log.warning("TensorRT: %s", msg)
                elif self.verbose or severity == trt.ILogger.INFO:
                    (log.info if self.verbose else log.debug)("TensorRT: %s", msg)

            def take_errors(self) -> str:
                text = "; ".join(self.errors[-5:]) or "no error message from TensorRT"
                self.errors.clear()
                return text

        _LOGGER_CLASS = PartsegTrtLogger
    return _LOGGER_CLASS(verbose)


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    mapping = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    if dtype not in mapping:
        raise ValueError(f"engine I/O tensor of type {dtype} is not supported (float32 or float16 expected)")
    return mapping[dtype]


def _shape_str(s: Shape | tuple[int, ...]) -> str:
    return "x".join(str(int(v)) for v in s)


class TensorRTBackend:
    """Runs a partseg TensorRT engine on one GPU: float32 [N, 3, H, W] -> float32 logits [N, K, H, W] (numpy).

    Batches larger than the engine's maximum batch run in chunks; heights and widths outside the optimisation
    profile, or batches below its minimum, are a clear error (rebuild with a wider --min/--max).
    """

    def __init__(self, path: str | os.PathLike, device: int | str | torch.device = 0):
        trt = require_tensorrt()
        self.path = Path(path)
        self.meta = read_engine_sidecar(self.path)
        check_engine_version(self.meta.tensorrt_version, trt.__version__, self.path)
        if not torch.cuda.is_available():
            raise RuntimeError(f"{self.path}: TensorRT engines run on an NVIDIA GPU, but torch sees no CUDA device "
                               f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
        dev = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
        if dev.type != "cuda":
            raise ValueError(f"TensorRT runs on a CUDA device, not {dev}")
        self.device = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        gpu = torch.cuda.get_device_name(self.device)
        if self.meta.gpu and gpu != self.meta.gpu:
            warnings.warn(f"{self.path} was built on a {self.meta.gpu} and runs on a {gpu}: TensorRT engines are tuned "
                          f"for (and may fail on) other GPU models; {REBUILD_HINT} on this machine", stacklevel=2)
        self._trt = trt
        self._logger = make_logger(trt)  # must outlive the runtime and engine made with it
        self._lock = threading.Lock()  # one execution context: one inference at a time
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"{self.path}: TensorRT {trt.__version__} could not deserialize this engine "
                                   f"({self._logger.take_errors()}); {REBUILD_HINT}")
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or len(outputs) != 1:
                raise ValueError(f"{self.path}: expected one input and one output tensor, the engine has inputs "
                                 f"{inputs} and outputs {outputs}")
            self.input_name, self.output_name = inputs[0], outputs[0]
            self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
            self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_shape, self.max_shape = tuple(int(v) for v in lo), tuple(int(v) for v in hi)
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise RuntimeError(f"{self.path}: could not create an execution context "
                                   f"({self._logger.take_errors()})")
            self.stream = torch.cuda.Stream(self.device)
        self.name = f"tensorrt-{self.meta.precision}"

    def check_input(self, shape: tuple[int, ...]) -> None:
        """ValueError unless [N, C, H, W] fits the engine (N above the maximum batch is fine: it runs in chunks)."""
        lo, hi = self.min_shape, self.max_shape
        if len(shape) != 4 or shape[1] != lo[1]:
            raise ValueError(f"{self.path}: expected input [N, {lo[1]}, H, W], got {list(shape)}")
        n, _, h, w = shape
        bad = [f"{what} {v} (engine accepts {a}..{b})" for what, v, a, b in
               (("height", h, lo[2], hi[2]), ("width", w, lo[3], hi[3]), ("batch", n, lo[0], None))
               if v < a or (b is not None and v > b)]
        if bad:
            raise ValueError(f"{self.path}: input {_shape_str(shape)} is outside the engine's optimisation profile: "
                             f"{', '.join(bad)}; it was built with --min {_shape_str(lo)} --max {_shape_str(hi)}. "
                             f"Rebuild it with `partseg export tensorrt` and a wider --min/--max, or feed images of "
                             f"a size inside the profile")

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x.shape)
        step = self.max_shape[0]
        with self._lock:
            parts = [self._run_batch(x[i:i + step]) for i in range(0, x.shape[0], step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_batch(self, x: np.ndarray) -> np.ndarray:
        ctx = self.context
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            inp = torch.from_numpy(x).to(self.device, self.input_dtype)  # enqueued on self.stream
            if not ctx.set_input_shape(self.input_name, tuple(inp.shape)):
                raise ValueError(f"{self.path}: TensorRT refused input shape {_shape_str(inp.shape)} "
                                 f"({self._logger.take_errors()})")
            shape = tuple(ctx.get_tensor_shape(self.output_name))
            if any(v < 0 for v in shape):
                raise RuntimeError(f"{self.path}: output shape {shape} unresolved for input {_shape_str(inp.shape)}")
            out = torch.empty(shape, dtype=self.output_dtype, device=self.device)
            ctx.set_tensor_address(self.input_name, inp.data_ptr())
            ctx.set_tensor_address(self.output_name, out.data_ptr())
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.path}: TensorRT inference failed ({self._logger.take_errors()})")
            result = out.float().cpu()  # a blocking copy on self.stream
            self.stream.synchronize()
        return result.numpy()
