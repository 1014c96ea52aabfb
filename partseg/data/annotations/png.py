"""Finished masks as images: index-coded (greyscale, palette) or colour-coded (RGB/RGBA in the class colours)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from partseg.data.annotations.base import Annotation, AnnotationError, _open_image
from partseg.data.dataset import IMAGES, MASKS
from partseg.labels import IGNORE, Labels


def _colour_table(labels: Labels) -> dict[int, int]:
    """24-bit colour -> class index; white means unlabelled unless a class uses it."""
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(labels.colors)}
    table.setdefault(0xFFFFFF, IGNORE)
    return table


def _decode_colours(rgb: np.ndarray, labels: Labels, where: str) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = _colour_table(labels)
    uniq, inv, cnt = np.unique(code, return_inverse=True, return_counts=True)
    bad = [(int(c), int(n)) for c, n in zip(uniq, cnt, strict=True) if int(c) not in table]
    if bad:
        bad.sort(key=lambda t: -t[1])
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}) on {n} pixels" for c, n in bad[:5])
        more = f" and {len(bad) - 5} more colours" if len(bad) > 5 else ""
        classes = ", ".join(f"{n} #{r:02x}{g:02x}{b:02x}" for n, (r, g, b) in zip(labels.names, labels.colors,
                                                                                 strict=True))
        raise AnnotationError(f"{where}: colour not in LABELS: {shown}{more}. Colour-coded masks must use exactly the "
                              f"class colours ({classes}; white = unlabelled): paint with a hard brush, no "
                              f"antialiasing, and save as PNG (never JPEG)")
    lut = np.array([table[int(c)] for c in uniq], dtype=np.uint8)
    return lut[inv.reshape(code.shape)]


def _check_indices(mask: np.ndarray, labels: Labels, where: str) -> np.ndarray:
    bad = (mask >= len(labels)) & (mask != IGNORE)
    if bad.any():
        vals = sorted(set(np.unique(mask[bad]).tolist()))
        raise AnnotationError(f"{where}: mask values {vals[:10]} are not class indices (0-{len(labels) - 1}) nor "
                              f"{IGNORE} (unlabelled)")
    return mask.astype(np.uint8)


def decode_mask_image(im: Image.Image, labels: Labels, where: str) -> np.ndarray:
    """uint8 [H, W] class indices of a mask image, index-coded or colour-coded.

    Greyscale ('L', 16-bit, '1'): pixel values are class indices. Palette ('P'): indices when the palette is the
    LABELS palette (what partseg writes) or a plain grey ramp, otherwise the palette colours are matched like an
    RGB image. RGB/RGBA: colours must be exactly the LABELS colours (white = unlabelled unless a class is white;
    fully transparent = unlabelled). Anything else is an error, never a guess.
    """
    mode = im.mode
    if mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "LA"):
        arr = np.asarray(im.getchannel(0) if mode == "LA" else im)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
            raise AnnotationError(f"{where}: greyscale mask values run {int(arr.min())}-{int(arr.max())}; class "
                                  f"indices are 0-{len(labels) - 1} and {IGNORE} (unlabelled)")
        mask = arr.astype(np.uint8)
        if mode == "LA":
            mask = np.where(np.asarray(im.getchannel(1)) == 0, IGNORE, mask).astype(np.uint8)
        return _check_indices(mask, labels, where)
    if mode == "P":
        idx = np.asarray(im)
        raw = im.getpalette() or []
        pal = np.zeros(768, dtype=np.int64)
        pal[:min(len(raw), 768)] = raw[:768]
        pal = pal.reshape(256, 3)
        used = np.unique(idx)
        ours = np.asarray(labels.palette(), dtype=np.int64).reshape(256, 3)
        grey = np.repeat(np.arange(256)[:, None], 3, axis=1)
        if (pal[used] == ours[used]).all() or (pal[used] == grey[used]).all():
            return _check_indices(idx.astype(np.uint8), labels, where)
        return _decode_colours(pal[idx].astype(np.uint8), labels, where)
    if mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        mask = _decode_colours(arr[..., :3], labels, where)
        if mode == "RGBA":
            alpha = arr[..., 3]
            if ((alpha > 0) & (alpha < 255)).any():
                raise AnnotationError(f"{where}: partly transparent pixels: a mask must be opaque (or fully "
                                      f"transparent where unlabelled); was it painted with a soft brush?")
            mask[alpha == 0] = IGNORE
        return mask
    raise AnnotationError(f"{where}: mask mode {mode!r} is not supported; use a palette, greyscale or RGB PNG")


def read_png(src: str | os.PathLike, labels: Labels) -> list[Annotation]:
    """Finished masks: SRC/NAME.png (or SRC/masks/NAME.png), one per image, named like the image."""
    src = Path(src)
    if src.is_file():
        files = [src]
    else:
        if not src.is_dir():
            raise FileNotFoundError(f"annotation folder not found: {src}")
        folder = src / MASKS if (src / MASKS).is_dir() else src
        lossy = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if lossy:
            raise AnnotationError(f"{folder}: JPEG masks ({', '.join(lossy[:5])}): JPEG changes colours and class "
                                  f"borders; save masks as PNG")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    out = []
    for f in files:
        mask = decode_mask_image(_open_image(f, str(f)), labels, str(f))
        out.append(Annotation(name=f.stem, source=str(f), size=mask.shape, mask=mask,
                              image_hints=[f.parent.parent / IMAGES / f.name]))
    return out
