"""What the service sends back: palette and RGB PNGs, per-class counts and COCO compressed RLE."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from partseg.data.rle import encode_coco_rle
from partseg.labels import Labels


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

