"""What the HTTP service does, without the HTTP: configuration, upload checks, PNG/JSON answers, COCO RLE,
packaging into BentoML's model store, backend choice and the GAN-inversion worker.

`serve/service.py` is a thin BentoML layer over this module. Importing it needs numpy and Pillow only; torch,
onnxruntime and bentoml are imported inside the functions that need them, so the front service (uploads in,
PNGs out) stays light and everything here can be tested without a server.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .labels import IGNORE, Labels

log = logging.getLogger("partseg.serving")

DEFAULT_MODEL_NAME = "partseg-segmenter"
BUNDLE_FILE = "partseg-bundle.json"
BUNDLE_FORMAT = "partseg.serve-bundle"
ENV_PREFIX = "PARTSEG_"
CONFIG_ENV = "PARTSEG_SERVE_CONFIG"

# Image formats an upload may have (Image.open(formats=...)): no PostScript/EPS (Ghostscript), no PSD/ICO quirks.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp", "image/bmp",
                         "image/x-ms-bmp", "image/x-bmp", "image/tiff", "image/gif"})
GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})  # curl -F for unknown extensions


# ------------------------------------------------------------------------------------------------ configuration


@dataclass
class ServeConfig:
    """Service settings. Each field is read from the environment variable PARTSEG_<FIELD> (upper case), else from
    the TOML file named by PARTSEG_SERVE_CONFIG (same keys, lower case), else the default below."""

    model: str = DEFAULT_MODEL_NAME  # model-store tag: NAME or NAME:VERSION (NAME means NAME:latest)
    max_batch_size: int = 16  # images per backend call; 1 turns adaptive batching off
    max_latency_ms: int = 10_000  # BentoML answers 503 rather than queue a request longer than this
    backend: str = "auto"  # auto | tensorrt | onnxruntime | torch (auto: best packaged artefact that loads here)
    device: str = "auto"  # auto | cpu | gpu; cpu ignores a GPU even when one is present
    threads: int = 0  # intra-op threads of the backend (0: the backend's default)
    max_pixels: int = 4_194_304  # per upload (width x height), 2048 x 2048
    max_upload_mb: float = 32.0  # per upload, before decoding
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
                     "inversion_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "inversion_timeout_s"):
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


# ------------------------------------------------------------------------------------------------ request errors


class RequestError(Exception):
    """A problem with the client's request: the service answers `status` (always 4xx) with `message`."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, status: HTTPStatus | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class TooLarge(RequestError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedType(RequestError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class Disabled(RequestError):
    status = HTTPStatus.NOT_FOUND


# ------------------------------------------------------------------------------------------------ uploads


def check_content_type(content_type: str | None) -> None:
    """Accept a declared image type, a generic binary type or none (the bytes are sniffed); refuse the rest."""
    if not content_type:
        return
    base = content_type.split(";")[0].strip().lower()
    if base in IMAGE_TYPES or base in GENERIC_TYPES:
        return
    raise UnsupportedType(f"upload content type {base!r} is not accepted: send a PNG, JPEG, WebP, BMP, TIFF or GIF "
                          f"image (image/png, image/jpeg, ...) or application/octet-stream")


def install_pixel_limit(max_pixels: int) -> None:
    """Make Pillow's own decompression-bomb guard follow the service's limit (Pillow warns above
    MAX_IMAGE_PIXELS and raises DecompressionBombError above twice that, while reading the header)."""
    Image.MAX_IMAGE_PIXELS = int(max_pixels)


def decode_image(data: bytes, max_pixels: int, max_bytes: int | None = None, what: str = "upload") -> np.ndarray:
    """Upload bytes -> uint8 RGB [H, W, 3], or a RequestError saying what is wrong with them.

    The size in the header is checked before any pixel is decoded (an image over `max_pixels` is refused without
    being decompressed); EXIF orientation is applied, alpha is dropped, the first frame of an animation is used.
    """
    if not data:
        raise RequestError(f"{what} is empty (0 bytes): send the image file's bytes")
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLarge(f"{what} is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise RequestError(f"{what} has no pixels ({w}x{h})")
            if w * h > max_pixels:
                raise TooLarge(f"{what} is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} pixels")
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise TooLarge(f"{what} refused as a decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise RequestError(f"{what} is not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from None
    except RequestError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError) as e:
        raise RequestError(f"{what} is a damaged or truncated image ({type(e).__name__}: {e})") from None
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:  # defensive: convert("RGB") always gives [H, W, 3]
        raise RequestError(f"{what} could not be read as an RGB image")
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------------------------ answers


def mask_png(mask: np.ndarray, labels: Labels) -> bytes:
    """Palette PNG of a class-index mask: pixel value = class index, palette = class colours (255 white)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be uint8 [H, W], got {mask.dtype} {list(mask.shape)}")
    im = Image.fromarray(mask, "L").convert("P")  # "L" -> "P" keeps the values as palette indices
    im.putpalette(labels.palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def rgb_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def encode_coco_rle(bits: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a binary mask [H, W]: {"size": [H, W], "counts": str}, as pycocotools'
    mask.encode would write it (column-major runs starting with zeros, LEB128-like 6-bit characters, deltas
    from the fourth run on); `partseg.annotations.decode_coco_rle` reads it back."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2:
        raise ValueError(f"RLE needs a 2-D mask, got shape {list(bits.shape)}")
    h, w = bits.shape
    flat = bits.T.reshape(-1)  # column-major
    if flat.size == 0:
        runs: list[int] = [0]
    else:
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        runs = np.diff(bounds).tolist()
        if flat[0]:
            runs = [0, *runs]
    out = bytearray()
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if c & 0x10 else (x != 0)
            if more:
                c |= 0x20
            out.append(c + 48)
    return {"size": [int(h), int(w)], "counts": out.decode("ascii")}


def class_stats(mask: np.ndarray, labels: Labels, rle: bool = False) -> list[dict[str, Any]]:
    """Per class: index, name, colour, pixel count and fraction of the image (and its COCO RLE on request)."""
    mask = np.asarray(mask)
    total = max(int(mask.size), 1)
    counts = np.bincount(mask.reshape(-1), minlength=256)
    out = []
    for i, (name, color) in enumerate(zip(labels.names, labels.colors, strict=True)):
        n = int(counts[i])
        row: dict[str, Any] = {"index": i, "name": name, "color": list(color), "pixels": n,
                               "fraction": round(n / total, 6)}
        if rle:
            row["rle"] = encode_coco_rle(mask == i)
        out.append(row)
    return out


def prediction_json(mask: np.ndarray, labels: Labels, backend: str, model: str, rle: bool = False) -> dict[str, Any]:
    h, w = mask.shape
    return {"width": int(w), "height": int(h), "backend": backend, "model": model,
            "rle_format": "coco-compressed" if rle else None, "classes": class_stats(mask, labels, rle)}


# ------------------------------------------------------------------------------------------------ bundles


@dataclass
class Artefact:
    kind: str  # tensorrt | onnxruntime | torch
    file: str  # relative to the bundle folder
    extra: list[str] = field(default_factory=list)  # sidecar files that travel with it


ORDER = ("tensorrt", "onnxruntime", "torch")
KIND_OF_SUFFIX = {".plan": "tensorrt", ".engine": "tensorrt", ".trt": "tensorrt", ".onnx": "onnxruntime",
                  ".safetensors": "torch"}


@dataclass
class Bundle:
    """A packaged segmenter in the model store: artefacts (any of TensorRT engine, ONNX, UNet), labels, model info
    and optionally the generator + few-shot head of the inversion mode."""

    root: Path
    artefacts: list[Artefact]
    labels: Labels
    info: dict[str, str]  # ModelInfo.to_metadata() of the first artefact
    generator: str | None = None
    head: str | None = None

    @property
    def has_inversion(self) -> bool:
        return self.generator is not None and self.head is not None

    @classmethod
    def open(cls, root: str | os.PathLike) -> Bundle:
        root = Path(root)
        path = root / BUNDLE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{root}: not a partseg model ({BUNDLE_FILE} is missing); package one with "
                                    f"`partseg serve package`")
        d = json.loads(path.read_text())
        if d.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{path}: format {d.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        arts = [Artefact(**a) for a in d["artefacts"]]
        labels = Labels.from_dict(d["labels"], source=str(path))
        inv = d.get("inversion") or {}
        return cls(root, arts, labels, d["info"], inv.get("generator"), inv.get("head"))

    def path(self, rel: str) -> Path:
        return self.root / rel


def _artefact_info(path: Path) -> tuple[str, Any]:
    """(kind, ModelInfo) of a model file, checked by loading it on the CPU (a TensorRT engine: its metadata only)."""
    from .runtime import ModelInfo, Segmenter, read_onnx_info

    kind = KIND_OF_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown model file type {path.suffix!r}; expected a UNet .safetensors, an .onnx "
                         f"file or a TensorRT engine (.plan, .engine, .trt)")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if kind == "tensorrt":
        try:
            from .tensorrt_runtime import read_engine_info  # type: ignore[import-not-found]
        except ImportError as e:
            raise ValueError(f"{path}: reading a TensorRT engine's metadata needs partseg.tensorrt_runtime, which "
                             f"this install lacks ({e})") from e
        info = read_engine_info(path)
        if not isinstance(info, ModelInfo):
            raise ValueError(f"{path}: no partseg metadata found for this engine")
        return kind, info
    if kind == "onnxruntime":
        read_onnx_info(path)
    seg = Segmenter.load(path, device="cpu", **({"providers": ["CPUExecutionProvider"]} if kind == "onnxruntime"
                                                  else {}))
    s = seg.info.stride
    seg.predict([np.zeros((s, s, 3), np.uint8)])  # the file really runs
    return kind, seg.info


def _sidecars(path: Path) -> list[Path]:
    """Files next to a TensorRT engine that carry its metadata (`model.plan.json`, `model.json`, ...)."""
    out = []
    for p in sorted(path.parent.iterdir()):
        if p == path or not p.is_file():
            continue
        if p.name.startswith(path.name + ".") or (p.stem == path.stem and p.suffix.lower() == ".json"):
            out.append(p)
    return out


def stage_bundle(artefacts: Sequence[str | os.PathLike], out: str | os.PathLike, gan: str | None = None,
                 head: str | os.PathLike | None = None) -> Bundle:
    """Check the artefacts (and generator + head) and copy them into the folder `out` as a bundle."""
    from .runtime import ModelInfo
    from .unet import resolve_unet_file

    out = Path(out)
    if not artefacts:
        raise ValueError("nothing to package: give a UNet .safetensors, an .onnx file and/or a TensorRT engine")
    if (gan is None) != (head is None):
        raise ValueError("the inversion mode needs both --gan (generator) and --head (few-shot head)")
    paths = [resolve_unet_file(a) for a in artefacts]  # a run folder stands for its best (else last) UNet
    infos: list[tuple[Path, str, ModelInfo]] = []
    for p in paths:
        kind, info = _artefact_info(p)
        if any(k == kind for _, k, _ in infos):
            raise ValueError(f"{p}: two {kind} artefacts given; package one file per backend")
        infos.append((p, kind, info))
    first = infos[0][2]
    for p, _, info in infos[1:]:
        if info.labels != first.labels or info.stride != first.stride:
            raise ValueError(f"{p}: its labels/stride differ from {infos[0][0]}'s; package artefacts of one model")
    out.mkdir(parents=True, exist_ok=True)
    arts = []
    for p, kind, _ in sorted(infos, key=lambda t: ORDER.index(t[1])):
        name = {"tensorrt": "model" + p.suffix.lower(), "onnxruntime": "model.onnx", "torch": "unet.safetensors"}[kind]
        shutil.copyfile(p, out / name)
        extra = []
        if kind == "tensorrt":
            for side in _sidecars(p):
                dest = name + side.name[len(p.name):] if side.name.startswith(p.name) else "model" + side.suffix
                shutil.copyfile(side, out / dest)
                extra.append(dest)
        arts.append(Artefact(kind, name, extra))
    inversion = None
    if gan is not None:
        inversion = _stage_inversion(gan, Path(head), first.labels, out)  # type: ignore[arg-type]
    manifest = {"format": BUNDLE_FORMAT, "version": 1, "artefacts": [asdict(a) for a in arts],
                "labels": first.labels.to_dict(), "info": first.to_metadata(), "inversion": inversion,
                "sources": [str(p.resolve()) for p, _, _ in infos]}
    (out / BUNDLE_FILE).write_text(json.dumps(manifest, indent=1))
    first.labels.save(out / "labels.json")
    return Bundle.open(out)


def _stage_inversion(gan: str, head: Path, labels: Labels, out: Path) -> dict[str, str]:
    from .fewshot import FewShotHead
    from .gan import load_generator, save_generator

    G = load_generator(gan)
    h = FewShotHead.load(head, G)  # refuses a head trained on another generator
    if tuple(h.labels.names) != tuple(labels.names):
        raise ValueError(f"{head}: the head's classes {list(h.labels.names)} differ from the segmenter's "
                         f"{list(labels.names)}; package a head with the same labels")
    (out / "inversion").mkdir(exist_ok=True)
    save_generator(G, out / "inversion" / "generator.safetensors")
    shutil.copyfile(head, out / "inversion" / "head.safetensors")
    staged = out / "inversion"
    FewShotHead.load(staged / "head.safetensors", load_generator(staged / "generator.safetensors"))  # still pairs
    return {"generator": "inversion/generator.safetensors", "head": "inversion/head.safetensors",
            "gan_source": str(gan), "head_source": str(head.resolve())}


def package_model(artefacts: Sequence[str | os.PathLike], name: str = DEFAULT_MODEL_NAME, gan: str | None = None,
                  head: str | os.PathLike | None = None) -> str:
    """Save a bundle into BentoML's model store (BENTOML_HOME) with bentoml.models.create; returns the tag."""
    import bentoml

    with bentoml.models.create(name, labels={"project": "partseg"}) as model:
        bundle = stage_bundle(artefacts, model.path, gan=gan, head=head)
        model.info.metadata.update({"backends": ",".join(a.kind for a in bundle.artefacts),
                                    "classes": ",".join(bundle.labels.names),
                                    "inversion": bundle.has_inversion})
    return str(model.tag)


# ------------------------------------------------------------------------------------------------ backend choice


@dataclass
class Loaded:
    segmenter: Any  # partseg.runtime.Segmenter
    backend: str  # e.g. onnxruntime-cpu, onnxruntime-cuda, tensorrt, torch-cpu
    artefact: str
    skipped: list[str]  # why better candidates were not used


def candidates(bundle: Bundle, cfg: ServeConfig, gpu: bool) -> tuple[list[Artefact], list[str]]:
    """Artefacts to try in order: TensorRT (GPU only) > onnxruntime (CUDA with a GPU, else CPU) > PyTorch."""
    arts = sorted(bundle.artefacts, key=lambda a: ORDER.index(a.kind))
    skipped = []
    if cfg.backend != "auto":
        chosen = [a for a in arts if a.kind == cfg.backend]
        if not chosen:
            raise ValueError(f"PARTSEG_BACKEND={cfg.backend} but the packaged model has only "
                             f"{', '.join(a.kind for a in arts)}")
        arts = chosen
    out = []
    for a in arts:
        if a.kind == "tensorrt" and not gpu:
            skipped.append(f"{a.file}: TensorRT needs a GPU")
            continue
        out.append(a)
    return out, skipped


def load_segmenter(bundle: Bundle, cfg: ServeConfig, gpu: bool) -> Loaded:
    """The best artefact that loads here; each failure is logged and the next one is tried."""
    from .runtime import Segmenter

    order, skipped = candidates(bundle, cfg, gpu)
    for a in order:
        opts: dict[str, Any] = {}
        if a.kind == "onnxruntime":
            if not gpu:
                opts["providers"] = ["CPUExecutionProvider"]
            if cfg.threads:
                opts["threads"] = cfg.threads
        try:
            seg = Segmenter.load(bundle.path(a.file), device=None if gpu else "cpu", max_batch=cfg.max_batch_size,
                                 **opts)
        except Exception as e:  # noqa: BLE001 - any failure means: try the next artefact
            log.warning("partseg: cannot use %s (%s); trying the next artefact", a.file, e)
            skipped.append(f"{a.file}: {e}")
            continue
        return Loaded(seg, getattr(seg.backend, "name", a.kind), a.file, skipped)
    raise RuntimeError(f"{bundle.root}: no packaged artefact could be loaded here: {'; '.join(skipped)}")


# ------------------------------------------------------------------------------------------------ inversion


class InversionBusy(Exception):
    pass


class InversionTimeout(Exception):
    pass


class InversionFailed(Exception):
    pass


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv(fd: int, deadline: float | None = None) -> Any:
    """One message from the pipe; TimeoutError when the deadline passes first, EOFError when the writer is gone."""

    def read(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    (n,) = struct.unpack("<Q", read(8))
    return pickle.loads(read(n))


def invert_image(G: Any, head: Any, image: np.ndarray, steps: int) -> tuple[np.ndarray, float]:
    """Segment one uint8 RGB image by GAN inversion: its centre square is resized to the generator's resolution
    and inverted, the head's labels are resized back (nearest); pixels outside the square are 255 (unlabelled)."""
    import torch

    from .invert import InversionConfig
    from .segment import segment_by_inversion

    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(image[top:top + s, left:left + s])
    r = G.resolution
    if s != r:
        crop = crop.resize((r, r), Image.LANCZOS if s > r else Image.BICUBIC)
    x = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float()[None] / 127.5 - 1
    res = segment_by_inversion(G, head, x, InversionConfig(steps=steps), batch=1)
    lab = res["labels"][0].byte().numpy()
    if s != r:
        lab = np.asarray(Image.fromarray(lab, "L").resize((s, s), Image.NEAREST))
    mask = np.full((h, w), IGNORE, np.uint8)
    mask[top:top + s, left:left + s] = lab
    return mask, float(res["psnr"][0])


def inversion_worker_main(argv: Sequence[str] | None = None) -> None:
    """Child process: load generator + head once, then answer (image, steps) messages until the pipe closes."""
    gan, head, fd_in, fd_out, threads = argv if argv is not None else sys.argv[1:]
    fd_in, fd_out = int(fd_in), int(fd_out)
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        from .fewshot import FewShotHead
        from .gan import load_generator

        G = load_generator(gan)
        h = FewShotHead.load(head, G)
    except Exception as e:  # noqa: BLE001 - report to the parent, which logs and refuses requests
        _send(fd_out, ("error", f"cannot load the inversion generator/head: {type(e).__name__}: {e}"))
        return
    _send(fd_out, ("ready", G.resolution))
    while True:
        try:
            image, steps = _recv(fd_in)
        except EOFError:
            return
        try:
            _send(fd_out, ("ok", invert_image(G, h, image, steps)))
        except Exception as e:  # noqa: BLE001
            _send(fd_out, ("error", f"{type(e).__name__}: {e}"))


class InversionRunner:
    """One inversion worker process, one request at a time; a request that runs past its timeout kills the worker
    (the next request starts a fresh one), so a slow inversion never holds the service."""

    def __init__(self, generator: str | os.PathLike, head: str | os.PathLike, threads: int = 1,
                 start_timeout: float = 300.0):
        self.generator, self.head, self.threads = str(generator), str(head), threads
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._fds: tuple[int, int] | None = None
        self.resolution: int | None = None

    def start(self, timeout: float | None = None) -> None:
        with self._lock:
            self._ensure(time.monotonic() + (timeout or self.start_timeout))

    def _ensure(self, deadline: float) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        code = "import sys; from partseg.serving import inversion_worker_main; inversion_worker_main()"
        args = [sys.executable, "-c", code, self.generator, self.head, str(to_child_r), str(from_child_w),
                str(self.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        self._proc = subprocess.Popen(args, pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._fds = (from_child_r, to_child_w)
        try:
            status, payload = _recv(from_child_r, deadline)
        except TimeoutError:
            self._stop()
            raise InversionTimeout("the inversion worker did not start in time") from None
        except EOFError:
            self._stop()
            raise InversionFailed("the inversion worker exited while starting") from None
        if status != "ready":
            self._stop()
            raise InversionFailed(payload)
        self.resolution = int(payload)

    def run(self, image: np.ndarray, steps: int, timeout: float) -> tuple[np.ndarray, float]:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise InversionBusy(f"another inversion is running; none finished within {timeout:g} s")
        try:
            self._ensure(deadline)
            assert self._fds is not None
            _send(self._fds[1], (image, steps))
            try:
                status, payload = _recv(self._fds[0], deadline)
            except TimeoutError:
                self._stop()
                raise InversionTimeout(f"the inversion did not finish within {timeout:g} s ({steps} steps); lower "
                                       f"PARTSEG_INVERSION_STEPS or raise PARTSEG_INVERSION_TIMEOUT_S") from None
            except EOFError:
                self._stop()
                raise InversionFailed("the inversion worker exited unexpectedly") from None
            if status != "ok":
                raise InversionFailed(payload)
            return payload
        finally:
            self._lock.release()

    def _stop(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._stop()


# ------------------------------------------------------------------------------------------------ metrics


BATCH_METRIC = "partseg_model_batch_images"
BENTOML_BATCH_METRIC = "bentoml_service_adaptive_batch_size"


def batch_buckets(max_batch_size: int) -> list[float]:
    b, out = 1, []
    while b < max_batch_size:
        out.append(float(b))
        b *= 2
    return [*out, float(max_batch_size)]


def histogram_counts(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a Prometheus histogram in /metrics text (summed over labels)."""
    out: dict[float, float] = {}
    prefix = name + "_bucket{"
    for line in metrics_text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line[len(prefix):].rpartition("} ")
        le = next((p.split("=", 1)[1].strip('"') for p in labels.split(",") if p.startswith("le=")), None)
        if le is None:
            continue
        key = float("inf") if le == "+Inf" else float(le)
        out[key] = out.get(key, 0.0) + float(value)
    return dict(sorted(out.items()))


def histogram_sizes(after: dict[float, float], before: dict[float, float] | None = None) -> dict[str, float]:
    """Observations per bucket (not cumulative) of `histogram_counts` output, or of the difference between two
    scrapes: {"1": 8, "2": 3, "3-4": 5, ">16": 0, ...}, empty buckets left out."""
    before = before or {}
    out, prev_le, prev = {}, 0.0, 0.0
    for le in sorted(after):
        c = after[le] - before.get(le, 0.0)
        if c - prev > 0:
            lo = int(prev_le) + 1
            if le == float("inf"):
                label = f">{int(prev_le)}"
            else:
                label = str(int(le)) if lo >= int(le) else f"{lo}-{int(le)}"
            out[label] = c - prev
        prev_le, prev = le, c
    return out
