"""Service settings: PARTSEG_* environment variables, a TOML file, defaults; and whether a GPU is used."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_MODEL_NAME = "partseg-segmenter"
BUNDLE_FILE = "partseg-bundle.json"
BUNDLE_FORMAT = "partseg.serve-bundle"
ENV_PREFIX = "PARTSEG_"
CONFIG_ENV = "PARTSEG_SERVE_CONFIG"


@dataclass
class ServeConfig:
    """Service settings. Each field is read from the environment variable PARTSEG_<FIELD> (upper case), else from
    the TOML file named by PARTSEG_SERVE_CONFIG (same keys, lower case), else the default below."""

    model: str = DEFAULT_MODEL_NAME  # model-store tag: NAME or NAME:VERSION (NAME means NAME:latest)
    max_batch_size: int = 16  # images per backend call; 1 turns adaptive batching off
    max_latency_ms: int = 10_000  # BentoML answers 503 rather than queue a request longer than this
    batch_max_pixels: int = 65_536  # network-input pixels up to which an image is batched; larger ones run alone
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch (auto: best packaged artefact that loads here)
    device: str = "auto"  # auto | cpu | gpu; cpu ignores a GPU even when one is present
    threads: int = 0  # intra-op threads of the backend (0: the backend's default)
    max_pixels: int = 4_194_304  # per upload (width x height), 2048 x 2048
    max_upload_mb: float = 32.0  # per upload, before decoding
    max_side: int = 8192  # longest image side, read from the header (bounds the resize cost of thin images)
    max_aspect: float = 32.0  # longest side / shortest side
    max_queue: int = 128  # endpoint requests in progress at once; the next is answered 503 at once
    retry_after_s: int = 1  # Retry-After of every 503
    max_buffered_mb: float = 512.0  # request bodies held by the front at once, all requests together
    inversion: bool = False  # enable the predict_inversion endpoint (needs --gan/--head at packaging time)
    inversion_steps: int = 100  # optimiser steps per inverted image
    inversion_max_pixels: int = 1_048_576  # per inversion upload (1024 x 1024)
    inversion_timeout_s: float = 120.0  # per inversion request, waiting for a busy worker included
    inversion_threads: int = 1  # torch threads of the inversion worker process

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeConfig:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = env.get(CONFIG_ENV)
        if path:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"{CONFIG_ENV}={path}: no such config file")
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            try:
                data = tomllib.loads(p.read_text())
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{p}: not valid TOML ({e})") from e
            data = data.get("partseg", data)  # a [partseg] table or top-level keys
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(data) - names)
            if unknown:
                raise ValueError(f"{p}: unknown settings {unknown}; known: {', '.join(sorted(names))}")
            values.update(data)
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if env.get(key, "") != "":
                values[f.name] = env[key]
        return cls(**{k: _coerce(k, v, type(getattr(cls(), k))) for k, v in values.items()})

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "tensorrt", "onnxruntime", "torch"):
            raise ValueError(f"backend must be auto, tensorrt, onnxruntime or torch, got {self.backend!r}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {self.device!r}")
        for name in ("max_batch_size", "max_latency_ms", "max_pixels", "inversion_steps", "inversion_max_pixels",
                     "inversion_threads", "max_side", "max_queue", "retry_after_s", "batch_max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_aspect < 1:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect}")
        for name in ("max_upload_mb", "inversion_timeout_s", "max_buffered_mb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @property
    def model_tag(self) -> str:
        return self.model if ":" in self.model else f"{self.model}:latest"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text.replace("_", ""))
        if kind is float:
            return float(text)
    except ValueError:
        raise ValueError(f"setting {name} ({ENV_PREFIX}{name.upper()}): {value!r} is not a valid "
                         f"{kind.__name__}") from None
    return text


def gpu_requested(cfg: ServeConfig) -> bool:
    """Whether the model service runs on a GPU (decided without importing torch: an NVIDIA device node is present
    and the configuration does not say cpu)."""
    if cfg.device == "cpu":
        return False
    present = Path("/dev/nvidiactl").exists()
    if cfg.device == "gpu" and not present:
        raise ValueError("PARTSEG_DEVICE=gpu but no NVIDIA GPU is present (/dev/nvidiactl is missing)")
    return present

