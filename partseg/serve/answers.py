"""What the service sends back: palette and RGB PNGs, per-class counts and COCO compressed RLE."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

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


def encode_coco_rle(bits: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a binary mask [H, W]: {"size": [H, W], "counts": str}, as pycocotools'
    mask.encode would write it (column-major runs starting with zeros, LEB128-like 6-bit characters, deltas
    from the fourth run on); `partseg.data.annotations.decode_coco_rle` reads it back."""
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

