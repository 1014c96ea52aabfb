"""One inference runtime for a distilled UNet, whatever it was exported to.

`Segmenter.load(path)` opens a UNet checkpoint (PyTorch), an ONNX file (onnxruntime) or a TensorRT engine, and
`Segmenter.predict(images)` turns uint8 RGB images of any size into index masks. Pre-processing (normalise,
optional resize, pad to the network's stride) and post-processing (crop, resize back, softmax/argmax) are written
once here, so the CLI, the benchmarks and the HTTP service give the same masks from every backend.

Images in one call are grouped by their padded size and each group runs as one batch: a mask never depends on
which other images shared its batch (padding another image's size would change border pixels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from partseg.distill.unet import resolve_unet_file
from partseg.images import from_uint8
from partseg.labels import Labels
from partseg.runtime.model_info import ENGINE_SUFFIXES, ONNX_SUFFIXES, ModelInfo

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


class Backend(Protocol):
    """Runs the network: float32 [N, 3, H, W] in [-1, 1] (H, W multiples of the stride) -> logits [N, K, H, W]."""

    name: str

    def run(self, x: np.ndarray) -> np.ndarray: ...


def gpu_present() -> bool:
    """True when an NVIDIA GPU can be used (a CPU-only torch build on a GPU machine still counts the device)."""
    return torch.cuda.is_available() or Path("/dev/nvidiactl").exists()


class TorchBackend:
    """PyTorch eager (or torch.compile) on a partseg UNet; fp16/bf16 and channels_last on request (GPU)."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 channels_last: bool = False, compile: bool = False):
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.channels_last = channels_last
        model = model.eval().to(self.device, self.dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model, dynamic=True) if compile else model
        parts = ["torch", str(self.device.type)] + ([str(self.dtype).removeprefix("torch.")] if dtype else [])
        self.name = "-".join(parts + (["channels_last"] if channels_last else []) + (["compile"] if compile else []))

    @torch.inference_mode()
    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_tensor(torch.from_numpy(x)).cpu().numpy()


@dataclass(frozen=True)
class OrtSettings:
    """onnxruntime session settings; benchmarks/ort_session.py measures each one against these defaults."""

    optimization: str = "all"  # graph optimisation level: disable | basic | extended | all
    intra_threads: int = 0  # 0: onnxruntime's default (one per physical core)
    inter_threads: int = 0
    parallel: bool = False  # execution mode PARALLEL (branches at once) instead of SEQUENTIAL
    mem_pattern: bool = True  # plan buffers from the first run's allocation pattern
    cpu_arena: bool = True  # keep freed CPU memory in onnxruntime's arena
    spinning: bool = False  # idle intra-op threads spin instead of sleeping: x1.1-1.8 slower when cores are shared

    def session_options(self):
        import onnxruntime as ort

        levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if self.optimization not in levels:
            raise ValueError(f"unknown graph optimisation level {self.optimization!r}; choose one of {list(levels)}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[self.optimization]
        opts.intra_op_num_threads, opts.inter_op_num_threads = self.intra_threads, self.inter_threads
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if self.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_mem_pattern, opts.enable_cpu_mem_arena = self.mem_pattern, self.cpu_arena
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        return opts


class OnnxRuntimeBackend:
    """onnxruntime with the best provider that really works here: TensorRT/CUDA only when a GPU is present."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int = 0,
                 settings: OrtSettings | None = None):
        """threads: intra-op threads (0: settings.intra_threads); settings: the session options."""
        import onnxruntime as ort

        available = ort.get_available_providers()
        if providers is None:  # onnxruntime-gpu lists CUDA/TensorRT even on machines without a GPU or TensorRT
            providers = []
            if gpu_present():
                if "TensorrtExecutionProvider" in available and _tensorrt_importable():
                    providers.append("TensorrtExecutionProvider")
                if "CUDAExecutionProvider" in available:
                    providers.append("CUDAExecutionProvider")
            providers = [*providers, "CPUExecutionProvider"]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ValueError(f"onnxruntime providers {unknown} are not available here (available: {available})")
        self.settings = settings or OrtSettings()
        if threads:
            self.settings = replace(self.settings, intra_threads=threads)
        opts = self.settings.session_options()
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types without the file name
            raise ValueError(f"{path}: onnxruntime cannot load this model ({e})") from e
        self.input_name = self.session.get_inputs()[0].name
        used = self.session.get_providers()[0]
        self.name = "onnxruntime-" + used.removesuffix("ExecutionProvider").lower()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _tensorrt_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def read_onnx_info(path: str | os.PathLike) -> ModelInfo:
    """The partseg metadata of an exported ONNX file (the graph itself is not loaded)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf decode errors do not name the file
        raise ValueError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from e
    return ModelInfo.from_metadata({p.key: p.value for p in model.metadata_props}, str(path))


class Segmenter:
    """uint8 RGB images of any size -> index masks (and class probabilities on request), on any backend."""

    def __init__(self, backend: Backend, info: ModelInfo, input_size: int | None | str = "model",
                 max_batch: int = 32):
        """input_size: "model" resizes every image to the size the network was trained at (then resizes the
        logits back), an int resizes to that square size, None runs at the image's own size (padded)."""
        self.backend = backend
        self.info = info
        self.input_size = info.input_size if input_size == "model" else input_size
        self.max_batch = max_batch

    @property
    def labels(self) -> Labels:
        return self.info.labels

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto", device: str | None = None,
             input_size: int | None | str = "model", max_batch: int = 32, **backend_options) -> Segmenter:
        """A UNet checkpoint (.safetensors), an ONNX file or a TensorRT engine; backend "auto" follows the file."""
        path = Path(path)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {path}")
        path = resolve_unet_file(path)
        suffix = path.suffix.lower()
        kind = {".safetensors": "torch", **dict.fromkeys(ONNX_SUFFIXES, "onnxruntime"),
                **dict.fromkeys(ENGINE_SUFFIXES, "tensorrt")}.get(suffix)
        if kind is None:
            raise ValueError(f"{path}: unknown model file type {suffix!r}; expected a UNet .safetensors, an .onnx "
                             f"file or a TensorRT engine ({', '.join(sorted(ENGINE_SUFFIXES))})")
        if backend != "auto" and backend != kind:
            raise ValueError(f"{path}: a {suffix} file runs on the {kind} backend, not {backend}")
        if kind == "torch":
            from partseg.distill.unet import fold_batchnorm, load_unet, unet_stride

            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model, labels, meta = load_unet(path, device="cpu", with_meta=True)
            if labels is None:
                raise ValueError(f"{path}: this UNet file stores no labels; re-save it with its labels")
            size = meta.get("train_resolution")
            info = ModelInfo(labels, unet_stride(model.cfg), int(size) if size else None,
                             source=str(path))
            opts = {"channels_last": True} | backend_options  # faster on CPU and GPU (benchmarks/inference.py)
            be: Backend = TorchBackend(fold_batchnorm(model), dev, **opts)
        elif kind == "onnxruntime":
            info = read_onnx_info(path)
            be = OnnxRuntimeBackend(path, **backend_options)
        else:
            from partseg.runtime.tensorrt import TensorRTBackend, read_engine_info

            info = read_engine_info(path)
            be = TensorRTBackend(path, **({"device": device} if device is not None else {}), **backend_options)
        return cls(be, info, input_size=input_size, max_batch=max_batch)

    # -- pre/post-processing ------------------------------------------------------------------------------------

    def _network_size(self, h: int, w: int) -> tuple[int, int]:
        if self.input_size is not None:
            h = w = int(self.input_size)
        s = self.info.stride
        return -(-h // s) * s, -(-w // s) * s

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float32 [3, H', W'] in [-1, 1] at the network size (resized and/or edge-padded)."""
        x = from_uint8(image)
        h, w = image.shape[:2]
        if self.input_size is not None and (h, w) != (self.input_size,) * 2:
            x = F.interpolate(x[None], size=(self.input_size,) * 2, mode="bilinear", align_corners=False,
                              antialias=True)[0]
            h = w = int(self.input_size)
        ph, pw = self._network_size(*image.shape[:2])
        if (ph, pw) != (h, w):
            x = F.pad(x[None], (0, pw - w, 0, ph - h), mode="replicate")[0]
        return x

    def _finish(self, logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Network logits [K, H', W'] -> logits [K, h, w] at the image's own size."""
        if self.input_size is not None:
            n = int(self.input_size)
            logits = logits[:, :n, :n]
            if (h, w) != (n, n):
                logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            return logits
        return logits[:, :h, :w]

    @staticmethod
    def _check(images: Sequence[np.ndarray]) -> None:
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                what = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
                raise ValueError(f"image {i}: expected a uint8 RGB array [H, W, 3], got {what}")
            if min(im.shape[:2]) < 1:
                raise ValueError(f"image {i}: empty image {im.shape}")

    def logits(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per image float32 logits [K, H, W] at the image's size."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        self._check(images)
        net = self.run_prepared([self._prepare(im).numpy() for im in images])  # checked once above
        return [self._finish(torch.from_numpy(y), *im.shape[:2]) for y, im in zip(net, images, strict=True)]

    # The three steps of `logits`, public so that a service can run the pre- and post-processing next to the upload
    # and send the network only network-size inputs (its cost per image then no longer depends on the upload).

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> the network's float32 input [3, H', W'] (resized and/or padded)."""
        self._check([image])
        return self._prepare(image).numpy()

    def run_prepared(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Network inputs from `prepare` -> float32 logits [K, H', W'] each; inputs of one size share a batch."""
        out: list[np.ndarray | None] = [None] * len(inputs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(tuple(x.shape), []).append(i)
        for idx in groups.values():
            for j in range(0, len(idx), self.max_batch):
                chunk = idx[j:j + self.max_batch]
                y = np.asarray(self.backend.run(np.stack([inputs[i] for i in chunk])), dtype=np.float32)
                for i, lg in zip(chunk, y, strict=True):
                    out[i] = lg
        return out  # type: ignore[return-value]

    def finish(self, logits: np.ndarray, height: int, width: int) -> np.ndarray:
        """Network logits [K, H', W'] from `run_prepared` -> the uint8 index mask [height, width]."""
        return index_mask(self._finish(torch.from_numpy(np.asarray(logits, dtype=np.float32)), height, width))

    def predict(self, images: Sequence[np.ndarray], return_probs: bool = False
                ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        """Index masks uint8 [H, W] per image; with return_probs also float32 probabilities [K, H, W]."""
        lg = self.logits(images)
        masks = [index_mask(x) for x in lg]
        if return_probs:
            return masks, [x.softmax(0).numpy() for x in lg]
        return masks


def index_mask(logits: torch.Tensor) -> np.ndarray:
    """Logits [K, H, W] -> uint8 class-index mask [H, W] (first maximum on ties, as torch.argmax). numpy's argmax
    over the class axis: torch's argmax(0) took 0.8 ms on a 10 x 64 x 64 CPU tensor, numpy's 0.08 ms."""
    return np.asarray(logits.detach().cpu().numpy().argmax(0), dtype=np.uint8)


@dataclass
class Parity:
    """How far a candidate runtime is from the reference on the same images."""

    max_abs_logit: float
    argmax_agreement: float  # share of pixels with the same class
    pixels: int

    def ok(self, min_agreement: float = 0.999, max_logit: float | None = None) -> bool:
        return self.argmax_agreement >= min_agreement and (max_logit is None or self.max_abs_logit <= max_logit)

    def __str__(self) -> str:
        return (f"max |logit difference| {self.max_abs_logit:.3g}, argmax agreement {100 * self.argmax_agreement:.4f}% "
                f"of {self.pixels} pixels")


def compare(reference: Segmenter, candidate: Segmenter, images: Sequence[np.ndarray]) -> Parity:
    """Logit and argmax agreement of two segmenters on the same images."""
    worst, same, total = 0.0, 0, 0
    for a, b in zip(reference.logits(images), candidate.logits(images), strict=True):
        worst = max(worst, float((a - b).abs().max()))
        same += int((a.argmax(0) == b.argmax(0)).sum())
        total += a[0].numel()
    return Parity(worst, same / max(total, 1), total)


def parity_images(info: ModelInfo, seed: int = 0) -> list[list[np.ndarray]]:
    """Batches for parity checks: uniform noise and (for the built-in faces labels) rendered faces, at two
    sizes and two batch sizes, so dynamic batch, height and width are all exercised."""
    from partseg.data.faces import render_face
    from partseg.labels import FACES

    rng = np.random.default_rng(seed)
    s = info.stride
    base = info.input_size or 4 * s
    sizes = [(base, base), (max(s, base // 2 + s), base + 2 * s)]
    batches = []
    for (h, w), n in zip(sizes, (1, 3), strict=True):
        batches.append([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)])
    if info.labels.names == FACES.names:
        for (h, w), n in zip(sizes, (3, 1), strict=True):
            faces = [render_face(9_900_000 + i, max(h, w))[0] for i in range(n)]
            batches.append([f[:h, :w] for f in faces])
    return batches
