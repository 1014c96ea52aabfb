"""LabelMe JSON: polygons, rectangles, circles and (LabelMe >= 5.3) masks, one file per image."""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from partseg.data.annotations.base import (
    Annotation,
    AnnotationError,
    Layer,
    _class_of,
    _open_image,
    _points,
    _polygon_layer,
    _raster_layer,
    _read_json,
)
from partseg.data.annotations.kit import _SKIP_JSON
from partseg.data.annotations.rasterize import rasterize_ellipse
from partseg.labels import Labels


def _labelme_path(value: str, base: Path) -> Path:
    """imagePath as written by LabelMe on any OS (Windows annotators write backslashes)."""
    p = Path(PureWindowsPath(value).as_posix()) if "\\" in value else Path(value)
    return p if p.is_absolute() else base / p


def _labelme_shape(shape: Any, labels: Labels, where: str) -> Layer:
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where}: a shape must be an object")
    kind = shape.get("shape_type") or "polygon"
    label = shape.get("label")
    cls = _class_of(label, labels, where)
    what = f"{where} ({kind} {label!r})"
    if kind == "polygon":
        return _polygon_layer(cls, what, _points(shape.get("points"), where, 3))
    if kind == "rectangle":
        (ax, ay), (bx, by) = _points(shape.get("points"), where, 2)[:2]
        return _polygon_layer(cls, what, np.array([[ax, ay], [bx, ay], [bx, by], [ax, by]]))
    if kind == "circle":
        (cx, cy), (px, py) = _points(shape.get("points"), where, 2)[:2]
        r = math.hypot(px - cx, py - cy)
        return Layer(cls, what, lambda h, w: rasterize_ellipse(cx, cy, r, r, h, w))
    if kind == "mask":  # LabelMe >= 5.3: a base64 PNG of the box between two integer pixel corners (inclusive)
        (ax, ay), (bx, by) = _points(shape.get("points"), where, 2)[:2]
        data = shape.get("mask")
        if not isinstance(data, str):
            raise AnnotationError(f"{where}: mask shape without its base64 'mask' data")
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise AnnotationError(f"{where}: 'mask' is not valid base64") from None
        bits = np.asarray(_open_image(raw, where).convert("L")) > 0
        x0, y0, x1, y1 = int(min(ax, bx)), int(min(ay, by)), int(max(ax, bx)), int(max(ay, by))
        if bits.shape != (y1 - y0 + 1, x1 - x0 + 1):
            raise AnnotationError(f"{where}: mask data is {bits.shape[1]}x{bits.shape[0]} but its box is "
                                  f"{x1 - x0 + 1}x{y1 - y0 + 1}")
        return _raster_layer(cls, what, bits, top=y0, left=x0, whole=False)
    raise AnnotationError(f"{where}: shape_type {kind!r} has no area; draw parts as polygon, rectangle, circle or "
                          f"mask")


def read_labelme(src: str | os.PathLike, labels: Labels) -> list[Annotation]:
    """LabelMe JSON files (one per image) in SRC and its subfolders, or a single JSON file.

    Shapes are painted in file order (LabelMe lists them in drawing order; later on top).
    """
    src = Path(src)
    if src.is_file():
        files = [src]
    elif src.is_dir():
        files = sorted(p for p in src.rglob("*.json") if p.name not in _SKIP_JSON)
    else:
        raise FileNotFoundError(f"annotation folder not found: {src}")
    out = []
    for f in files:
        d = _read_json(f)
        if not isinstance(d, dict) or not isinstance(d.get("shapes"), list):
            raise AnnotationError(f"{f}: not a LabelMe file (expected an object with a 'shapes' list)")
        image_path = d.get("imagePath")
        hints = []
        if isinstance(image_path, str) and image_path:
            p = _labelme_path(image_path, f.parent)
            hints.append(p)
            name = p.stem
        else:
            name = f.stem
        hints.append(f.with_suffix(".png"))
        size = None
        if d.get("imageHeight") is not None or d.get("imageWidth") is not None:
            try:
                size = (int(d["imageHeight"]), int(d["imageWidth"]))
            except (KeyError, TypeError, ValueError):
                raise AnnotationError(f"{f}: imageHeight/imageWidth must both be integers") from None
        data = None
        if isinstance(d.get("imageData"), str) and d["imageData"]:
            try:
                data = base64.b64decode(d["imageData"], validate=True)
            except ValueError:
                raise AnnotationError(f"{f}: imageData is not valid base64") from None
        layers = [_labelme_shape(s, labels, f"{f}: shape {i}") for i, s in enumerate(d["shapes"])]
        out.append(Annotation(name=name, source=str(f), size=size, layers=layers, image_hints=hints,
                              image_bytes=data))
    return out
