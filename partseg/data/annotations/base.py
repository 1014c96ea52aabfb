"""What every annotation reader shares: the errors, the parsed form of an annotation (layers painted in order),
class-name lookup, checked points, JSON and image reading, and building an output folder all-or-nothing."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from partseg.data.annotation_errors import AnnotationError, AnnotationWarning, EmptyMaskError  # noqa: F401
from partseg.data.annotations.rasterize import rasterize_polygon
from partseg.images import ImageError, open_image
from partseg.labels import IGNORE, Labels

FORMATS = ("png", "labelme", "cvat", "coco", "celebamask-hq")
UNLABELLED = ("background", "ignore")
OVERLAP = ("z-order", "error")
IGNORE_NAME = "__ignore__"  # LabelMe's name for "do not care" regions; accepted in every vector format
LABELME_BACKGROUND = "_background_"  # LabelMe's conventional name for class 0


@dataclass
class Layer:
    """One shape (or one part mask) of one class, painted over the layers before it."""

    cls: int  # class index, or IGNORE
    what: str  # how to name it in messages, e.g. "shape 3 (polygon 'eye')"
    cover: Callable[[int, int], np.ndarray]  # (H, W) -> bool [H, W] of the pixels it covers


@dataclass
class Annotation:
    """One image's annotation as a tool wrote it, before it is checked against its image.

    The readers (`read_png`, `read_labelme`, ...) only parse; `import_annotations` finds the image, checks the
    sizes and paints the layers, so every format gets the same validation.
    """

    name: str  # image name without extension (the output is images/NAME.png, masks/NAME.png)
    source: str  # the annotation file (and element) for messages
    size: tuple[int, int] | None = None  # (H, W) the file declares
    layers: list[Layer] = field(default_factory=list)  # painted in order: later on top
    mask: np.ndarray | None = None  # png format: the finished mask
    image_hints: list[Path] = field(default_factory=list)  # where the file says the image is
    image_bytes: bytes | None = None  # LabelMe's embedded imageData
    index: int | None = None  # CelebAMask-HQ: the image's number (position in the kit when a kit is given)


def _class_of(name: Any, labels: Labels, where: str) -> int:
    """Class index of a label name as written in an annotation file (case-insensitive, surrounding spaces off)."""
    if not isinstance(name, str) or not name.strip():
        raise AnnotationError(f"{where}: missing or empty label name")
    key = name.strip()
    if key == IGNORE_NAME:
        return IGNORE
    if key == LABELME_BACKGROUND:
        return 0
    for i, n in enumerate(labels.names):
        if n.lower() == key.lower():
            return i
    raise AnnotationError(f"{where}: class name {key!r} is not in LABELS; valid names are "
                          f"{', '.join(labels.names)} (and {IGNORE_NAME} for unlabelled)")


def _polygon_layer(cls: int, what: str, points: np.ndarray) -> Layer:
    return Layer(cls, what, lambda h, w: rasterize_polygon(points, h, w))


def _union_layer(cls: int, what: str, polygons: list[np.ndarray]) -> Layer:
    def cover(h: int, w: int) -> np.ndarray:
        out = np.zeros((h, w), dtype=bool)
        for p in polygons:
            out |= rasterize_polygon(p, h, w)
        return out
    return Layer(cls, what, cover)


def _raster_layer(cls: int, what: str, bits: np.ndarray, top: int = 0, left: int = 0,
                  whole: bool = True) -> Layer:
    """A layer from a bool array; whole=True means it must be exactly image-sized, else it is a patch placed at
    (left, top) and clipped to the image."""
    def cover(h: int, w: int) -> np.ndarray:
        if whole:
            if bits.shape != (h, w):
                raise AnnotationError(f"{what}: size mismatch: mask is {bits.shape[1]}x{bits.shape[0]} (WxH) but the "
                                      f"image is {w}x{h}")
            return bits
        out = np.zeros((h, w), dtype=bool)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + bits.shape[0], h), min(left + bits.shape[1], w)
        if y1 > y0 and x1 > x0:
            out[y0:y1, x0:x1] = bits[y0 - top:y1 - top, x0 - left:x1 - left]
        return out
    return Layer(cls, what, cover)


def _points(value: Any, where: str, at_least: int) -> np.ndarray:
    try:
        pts = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: points must be numbers, got {str(value)[:80]}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < at_least or not np.isfinite(pts).all():
        raise AnnotationError(f"{where}: expected at least {at_least} finite [x, y] points, got {str(value)[:80]}")
    return pts


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: unreadable file: {e}") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON: {e}") from None


def _open_image(path_or_bytes: Path | bytes, where: str) -> Image.Image:
    """An annotation's image or mask under partseg.images' decoder rules, in its own mode (palettes kept)."""
    try:
        return open_image(path_or_bytes, "the image")
    except (ImageError, FileNotFoundError) as e:
        raise AnnotationError(f"{where}: unreadable image file: {e}") from None


def check_out_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AnnotationError(f"--out must be a folder, got a file: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AnnotationError(f"{out} exists and is not empty; refusing to overwrite it (choose another --out or "
                              f"pass overwrite=True / --overwrite)")


def build_then_move(out: Path, overwrite: bool, build: Callable[[Path], None]) -> Path:
    """Build the whole output in a temporary folder beside `out`, then rename it into place: an error or a
    crash never leaves half a data set where the real one should be."""
    check_out_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
