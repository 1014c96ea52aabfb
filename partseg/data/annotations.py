"""Annotation kits out, annotations in: the bridge between partseg and the tools people label with.

`export_kit` writes generated images with the exact latents that regenerate them, plus everything an annotator
needs at once (README, LabelMe label list, CVAT and Label Studio label configs). `import_annotations` reads what
comes back (PNG masks, LabelMe, CVAT for images 1.1, COCO, CelebAMask-HQ part masks) and writes ONE canonical
set in the data-set layout of `partseg.data.dataset`, carrying the kit's latents over for exactly the annotated images
so the GAN features can be recomputed.

Geometry convention (every vector format): coordinates are in pixels with (0, 0) the top-left corner of the
top-left pixel, so pixel (i, j) is the unit square [i, i+1) x [j, j+1) and its centre is (i + 0.5, j + 0.5).
A shape covers a pixel when the pixel's centre lies inside it (even-odd rule; a centre exactly on an edge counts
when the edge is a left or top edge, so shapes that share an edge never both claim, nor both miss, a pixel).
Hence a polygon or box with corners (x0, y0) and (x1 + 1, y1 + 1) covers exactly pixels x0..x1, y0..y1: what an
annotator sees when tracing pixel borders in LabelMe or CVAT, and what pycocotools produces for such a polygon.
PIL's ImageDraw.polygon is not used: it snaps vertices to the pixel grid and fills the pixels on the boundary
too, so a rectangle traced on pixel borders comes back one row and one column too big (checked with Pillow 13).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from partseg.data.dataset import IMAGE_SUFFIXES, IMAGES, MASKS, write_image, write_mask
from partseg.labels import FACES, IGNORE, LABELS_FILE, Labels

FORMATS = ("png", "labelme", "cvat", "coco", "celebamask-hq")
UNLABELLED = ("background", "ignore")
OVERLAP = ("z-order", "error")
IGNORE_NAME = "__ignore__"  # LabelMe's name for "do not care" regions; accepted in every vector format
LABELME_BACKGROUND = "_background_"  # LabelMe's conventional name for class 0

KIT_README = "README.md"
LABELME_LABELS = "labelme_labels.txt"
CVAT_LABELS = "cvat_labels.json"
LABEL_STUDIO_CONFIG = "label_studio_config.xml"

# CelebAMask-HQ part names in the order of the official face_parsing/Data_preprocessing/g_mask.py (label_list,
# "list2"): each part is painted over the previous ones, so a later part wins where two part masks overlap.
CELEBAMASK_PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
                    "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
# default part -> FACES class; earrings and necklaces are worn items, like glasses, hats and clothes
CELEBAMASK_TO_FACES: dict[str, str | None] = {
    "skin": "skin", "nose": "nose", "eye_g": "clothes", "l_eye": "eye", "r_eye": "eye", "l_brow": "eyebrow",
    "r_brow": "eyebrow", "l_ear": "ear", "r_ear": "ear", "mouth": "mouth", "u_lip": "mouth", "l_lip": "mouth",
    "hair": "hair", "hat": "clothes", "ear_r": "clothes", "neck_l": "clothes", "neck": "neck", "cloth": "clothes",
}

# Label Studio renames uploaded files "<8 hex>-<original name>"; its exports then name images that way
_LABEL_STUDIO_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")
_SKIP_JSON = {LABELS_FILE, "samples.json", CVAT_LABELS}


class AnnotationError(ValueError):
    """An annotation that cannot be imported as it is; the message names the file and the problem."""


class EmptyMaskError(AnnotationError):
    """An annotation that labels no pixel with a part class (an image nobody annotated yet, usually)."""


class AnnotationWarning(UserWarning):
    """Something left out of an import on purpose (for example an empty mask with skip_empty=True)."""


# ------------------------------------------------------------------------------------------ rasterisation


def rasterize_polygon(points: Sequence[Sequence[float]] | np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [H, W]: the pixels whose centre lies inside the polygon (see the module docstring for the rule).

    A scanline fill at the pixel-centre rows: every edge crossing row y at x toggles all pixels whose centre is
    at or right of x; the parity of the toggles is the even-odd rule. Exact for any vertex coordinates.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((height, width), dtype=bool)
    if len(pts) < 3 or height == 0 or width == 0:
        return out
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cy = np.arange(height, dtype=np.float64) + 0.5
    lo, hi = np.minimum(y0, y1)[:, None], np.maximum(y0, y1)[:, None]
    crosses = (lo <= cy) & (cy < hi)  # [E, H]; half-open in y, horizontal edges never cross
    e, r = np.nonzero(crosses)
    if len(e) == 0:
        return out
    t = (cy[r] - y0[e]) / (y1[e] - y0[e])
    xi = x0[e] + t * (x1[e] - x0[e])
    first = np.clip(np.ceil(xi - 0.5), 0, width).astype(np.int64)  # first pixel whose centre is >= xi
    toggles = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(toggles, (r, first), 1)
    return (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(bool)


def rasterize_ellipse(cx: float, cy: float, rx: float, ry: float, height: int, width: int) -> np.ndarray:
    """bool [H, W]: pixels whose centre lies inside or on an axis-aligned ellipse (a circle when rx == ry)."""
    if rx <= 0 or ry <= 0:
        return np.zeros((height, width), dtype=bool)
    ys = (np.arange(height) + 0.5 - cy)[:, None] / ry
    xs = (np.arange(width) + 0.5 - cx)[None, :] / rx
    return xs * xs + ys * ys <= 1.0


def decode_coco_rle(counts: str | bytes | Sequence[int], height: int, width: int, where: str = "RLE") -> np.ndarray:
    """bool [H, W] of a COCO RLE: uncompressed (a list of run lengths) or compressed (pycocotools' string).

    Runs alternate 0, 1, 0, ... starting with zeros, over the pixels in column-major order (down the first
    column, then the next). The compressed string is pycocotools' rleToString: each run length is written in
    chunks of 5 bits, least significant first, one character per chunk (value + 48, bit 0x20 = "more chunks
    follow", bit 0x10 of the last chunk = sign), and from the fourth run on the difference to the run two
    before it is stored instead of the run itself (maskApi.c: `if (m > 2) x += cnts[m - 2]`).
    """
    if isinstance(counts, (str, bytes)):
        s = counts.encode() if isinstance(counts, str) else counts
        runs: list[int] = []
        p = 0
        while p < len(s):
            x, k, more = 0, 0, True
            while more:
                if p >= len(s):
                    raise AnnotationError(f"{where}: compressed RLE string ends in the middle of a number")
                c = s[p] - 48
                if not 0 <= c < 64:
                    raise AnnotationError(f"{where}: compressed RLE has a character outside '0'..'o': {chr(s[p])!r}")
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p += 1
                k += 1
                if not more and c & 0x10:
                    x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
    else:
        runs = list(counts)
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in runs):
            raise AnnotationError(f"{where}: RLE counts must be integers")
    if any(v < 0 for v in runs):
        raise AnnotationError(f"{where}: RLE has a negative run length")
    if sum(runs) != height * width:
        raise AnnotationError(f"{where}: RLE runs cover {sum(runs)} pixels but its size {width}x{height} (WxH) has "
                              f"{height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    return flat.reshape(width, height).T.copy()  # column-major


# ------------------------------------------------------------------------------------------ parsed annotations


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
    try:
        im = Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
        im.load()
        return im
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise AnnotationError(f"{where}: unreadable image file: {e}") from None


# ------------------------------------------------------------------------------------------ png


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


# ------------------------------------------------------------------------------------------ labelme


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


# ------------------------------------------------------------------------------------------ cvat


def _cvat_float(el: ET.Element, key: str, where: str) -> float:
    try:
        v = float(el.attrib[key])
    except KeyError:
        raise AnnotationError(f"{where}: missing attribute {key!r}") from None
    except ValueError:
        raise AnnotationError(f"{where}: attribute {key}={el.attrib[key]!r} is not a number") from None
    if not math.isfinite(v):
        raise AnnotationError(f"{where}: attribute {key} is not finite")
    return v


def _cvat_shape(el: ET.Element, labels: Labels, where: str) -> Layer | None:
    tag = el.tag
    if tag == "tag":  # an image-level tag has no pixels
        return None
    label = el.get("label")
    cls = _class_of(label, labels, where)
    what = f"{where} (<{tag}> {label!r})"
    if tag == "polygon":
        try:
            pts = [[float(v) for v in p.split(",")] for p in (el.get("points") or "").strip().split(";") if p.strip()]
        except ValueError:
            raise AnnotationError(f"{where}: points must be 'x,y;x,y;...', got {el.get('points')!r:.80}") from None
        return _polygon_layer(cls, what, _points(pts, where, 3))
    if tag in ("box", "ellipse") and "rotation" in el.attrib and _cvat_float(el, "rotation", where) % 360 != 0:
        raise AnnotationError(f"{where}: rotated <{tag}> (rotation={el.get('rotation')}) is not supported; draw it "
                              f"as a polygon")
    if tag == "box":
        x0, y0, x1, y1 = (_cvat_float(el, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        return _polygon_layer(cls, what, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    if tag == "ellipse":
        cx, cy, rx, ry = (_cvat_float(el, k, where) for k in ("cx", "cy", "rx", "ry"))
        return Layer(cls, what, lambda h, w: rasterize_ellipse(cx, cy, rx, ry, h, w))
    if tag == "mask":  # brush masks: run lengths (0s first) over a left/top/width/height box, row by row
        left, top, mw, mh = (int(_cvat_float(el, k, where)) for k in ("left", "top", "width", "height"))
        try:
            runs = [int(v) for v in (el.get("rle") or "").split(",") if v.strip()]
        except ValueError:
            raise AnnotationError(f"{where}: rle must be comma-separated integers") from None
        if any(r < 0 for r in runs) or sum(runs) != mw * mh:
            raise AnnotationError(f"{where}: rle covers {sum(runs)} pixels but the mask box is {mw}x{mh}")
        values = np.zeros(len(runs), dtype=bool)
        values[1::2] = True
        bits = np.repeat(values, runs).reshape(mh, mw)
        return _raster_layer(cls, what, bits, top=top, left=left, whole=False)
    raise AnnotationError(f"{where}: <{tag}> has no area (or is not supported); draw parts as polygons, boxes, "
                          f"ellipses or masks")


def read_cvat(src: str | os.PathLike, labels: Labels) -> list[Annotation]:
    """CVAT for images 1.1 XML (the file, or a folder holding annotations.xml as in CVAT's export zip).

    Shapes are painted by increasing z_order (CVAT: bigger is closer to the camera), ties in file order.
    """
    src = Path(src)
    if src.is_dir():
        path = src / "annotations.xml"
        if not path.is_file():
            xmls = sorted(src.glob("*.xml"))
            if len(xmls) != 1:
                raise AnnotationError(f"{src}: expected annotations.xml (or exactly one .xml file), found "
                                      f"{[p.name for p in xmls]}")
            path = xmls[0]
    elif src.is_file():
        path = src
    else:
        raise FileNotFoundError(f"annotation file not found: {src}")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise AnnotationError(f"{path}: unreadable CVAT XML: {e}") from None
    if root.tag != "annotations":
        raise AnnotationError(f"{path}: not a CVAT XML file (root element <{root.tag}>, expected <annotations>)")
    if root.find("track") is not None:
        raise AnnotationError(f"{path}: this is a 'CVAT for video' export (it has <track> elements); export the task "
                              f"as 'CVAT for images 1.1'")
    out = []
    for image in root.iter("image"):
        name = image.get("name")
        if not name:
            raise AnnotationError(f"{path}: <image id={image.get('id')!r}> without a name")
        where = f"{path}: image {name!r}"
        try:
            size = (int(image.attrib["height"]), int(image.attrib["width"]))
        except (KeyError, ValueError):
            size = None
        shapes = []
        for i, el in enumerate(image):
            layer = _cvat_shape(el, labels, f"{where} element {i}")
            if layer is not None:
                try:
                    z = int(float(el.get("z_order") or 0))
                except ValueError:
                    raise AnnotationError(f"{where} element {i}: z_order {el.get('z_order')!r} is not a "
                                          f"number") from None
                shapes.append((z, i, layer))
        shapes.sort(key=lambda t: (t[0], t[1]))
        rel = Path(PureWindowsPath(name).as_posix())
        out.append(Annotation(name=rel.stem, source=where, size=size, layers=[s[2] for s in shapes],
                              image_hints=[path.parent / rel, path.parent / IMAGES / rel]))
    return out


# ------------------------------------------------------------------------------------------ coco


def _coco_file(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise FileNotFoundError(f"annotation file not found: {src}")
    found = []
    for p in sorted(src.rglob("*.json")):
        if p.name in _SKIP_JSON:
            continue
        d = _read_json(p)
        if isinstance(d, dict) and "images" in d and "annotations" in d:
            found.append(p)
    if len(found) != 1:
        raise AnnotationError(f"{src}: expected exactly one COCO JSON file (with 'images' and 'annotations'), found "
                              f"{[str(p) for p in found]}; pass the file itself")
    return found[0]


def read_coco(src: str | os.PathLike, labels: Labels) -> list[Annotation]:
    """COCO JSON: polygons or RLE (uncompressed or compressed) per annotation, category names mapped by name.

    Annotations are painted in file order (COCO has no z-order). Several polygons in one annotation are one
    region (their union). iscrowd=1 marks a region whose instances are not separated; for part masks it is
    simply a region of its category, so it is painted like the others.
    """
    path = _coco_file(Path(src))
    d = _read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("images"), list) or not isinstance(d.get("annotations"), list):
        raise AnnotationError(f"{path}: not a COCO file (expected 'images' and 'annotations' lists)")
    cats: dict[Any, str] = {}
    for c in d.get("categories") or []:
        if isinstance(c, dict) and "id" in c:
            cats[c["id"]] = c.get("name")
    images: dict[Any, dict] = {}
    for im in d["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise AnnotationError(f"{path}: every image needs an 'id' and a 'file_name'")
        images[im["id"]] = im
    per_image: dict[Any, list[Layer]] = {k: [] for k in images}
    for k, a in enumerate(d["annotations"]):
        where = f"{path}: annotation {k} (id {a.get('id')!r})" if isinstance(a, dict) else f"{path}: annotation {k}"
        if not isinstance(a, dict):
            raise AnnotationError(f"{where}: must be an object")
        if a.get("image_id") not in images:
            raise AnnotationError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
        if a.get("category_id") not in cats:
            raise AnnotationError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'")
        cls = _class_of(cats[a["category_id"]], labels, where)
        im = images[a["image_id"]]
        what = f"{where} ({cats[a['category_id']]!r}{', crowd' if a.get('iscrowd') else ''})"
        seg = a.get("segmentation")
        if isinstance(seg, list) and seg:
            polys = []
            for j, p in enumerate(seg):
                if not isinstance(p, list) or len(p) < 6 or len(p) % 2:
                    raise AnnotationError(f"{where}: polygon {j} must be a flat [x1, y1, x2, y2, ...] list of at "
                                          f"least 3 points")
                polys.append(_points(np.asarray(p, dtype=object).reshape(-1, 2).tolist(), f"{where} polygon {j}", 3))
            per_image[a["image_id"]].append(_union_layer(cls, what, polys))
        elif isinstance(seg, dict):
            size = seg.get("size")
            if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
                raise AnnotationError(f"{where}: RLE needs 'size': [height, width]")
            if "height" in im and "width" in im and list(size) != [im["height"], im["width"]]:
                raise AnnotationError(f"{where}: size mismatch: RLE size is {size[1]}x{size[0]} (WxH) but image "
                                      f"{im['file_name']!r} is {im['width']}x{im['height']}")
            if not isinstance(seg.get("counts"), (str, list)):
                raise AnnotationError(f"{where}: RLE needs 'counts' (a list or a compressed string)")
            bits = decode_coco_rle(seg["counts"], size[0], size[1], where)
            per_image[a["image_id"]].append(_raster_layer(cls, what, bits))
        else:
            raise AnnotationError(f"{where}: no 'segmentation' (polygons or RLE); boxes alone are not part masks")
    out = []
    for key, im in images.items():
        rel = Path(PureWindowsPath(im["file_name"]).as_posix())
        size = None
        if "height" in im and "width" in im:
            try:
                size = (int(im["height"]), int(im["width"]))
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}: image {im['file_name']!r}: height/width must be integers") from None
        out.append(Annotation(name=rel.stem, source=f"{path}: image {im['file_name']!r}", size=size,
                              layers=per_image[key], image_hints=[path.parent / rel, path.parent / IMAGES / rel,
                                                                  path.parent.parent / IMAGES / rel]))
    return out


# ------------------------------------------------------------------------------------------ celebamask-hq


def celebamask_mapping(labels: Labels, mapping: Mapping[str, str | None] | None = None) -> dict[str, int | None]:
    """Part name -> class index (None: leave the part out).

    Without an explicit mapping: a part maps to the class of the same name when LABELS has one (a label set
    that keeps CelebAMask-HQ's parts), else to its FACES class (`CELEBAMASK_TO_FACES`).
    """
    out: dict[str, int | None] = {}
    if mapping is None:
        for part in CELEBAMASK_PARTS:
            if part in {n.lower() for n in labels.names}:
                out[part] = labels.index(part)
            else:
                target = CELEBAMASK_TO_FACES[part]
                out[part] = None if target is None else _class_of(target, labels, f"CelebAMask-HQ part {part!r}")
        return out
    for part, target in mapping.items():
        out[part] = None if target is None else _class_of(target, labels, f"CelebAMask-HQ mapping of part {part!r}")
    return out


def _part_of(stem: str, parts: Sequence[str]) -> tuple[str, str] | None:
    """'00012_l_eye' -> ('00012', 'l_eye'): the longest known part the name ends with."""
    for part in sorted(parts, key=len, reverse=True):
        if stem.endswith("_" + part) and len(stem) > len(part) + 1:
            return stem[:-len(part) - 1], part
    return None


def read_celebamask_hq(src: str | os.PathLike, labels: Labels,
                       mapping: Mapping[str, str | None] | None = None) -> list[Annotation]:
    """CelebAMask-HQ part masks: `{i:05d}_{part}.png` binary masks (any non-zero pixel is the part), possibly
    spread over subfolders (the official CelebAMask-HQ-mask-anno/0 .. 14). The prefix may also be an image name
    (`seed000003_hair.png`). Parts are painted in the official g_mask.py order, later parts on top.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {src}")
    table = celebamask_mapping(labels, mapping)
    order = [p for p in CELEBAMASK_PARTS if p in table] + [p for p in table if p not in CELEBAMASK_PARTS]
    groups: dict[str, dict[str, Path]] = {}
    for f in sorted(src.rglob("*.png")):
        hit = _part_of(f.stem, order)
        if hit is None:
            raise AnnotationError(f"{f}: not a CelebAMask-HQ part mask: the name must end in _PART.png with PART one "
                                  f"of {', '.join(order)}")
        prefix, part = hit
        if part in groups.setdefault(prefix, {}):
            raise AnnotationError(f"{f}: part {part!r} of image {prefix!r} appears twice (also "
                                  f"{groups[prefix][part]})")
        groups[prefix][part] = f
    out = []
    for prefix, files in groups.items():
        layers, size = [], None
        for part in order:
            if part not in files or table[part] is None:
                continue
            f = files[part]
            bits = np.asarray(_open_image(f, str(f)).convert("RGB")).any(axis=2)
            size = size or bits.shape
            layers.append(_raster_layer(int(table[part]), f"{f} (part {part!r})", bits))
        first = next(iter(files.values()))
        out.append(Annotation(name=prefix, source=f"{first.parent}/{prefix}_*.png", size=size, layers=layers,
                              index=int(prefix) if prefix.isdigit() else None))
    return out


# ------------------------------------------------------------------------------------------ kit


@dataclass
class _Kit:
    root: Path
    labels: Labels
    index: dict
    latents: dict[str, torch.Tensor]
    rows: dict[str, tuple[int, int]]  # image name -> (row in the latents, seed)
    order: list[str]  # image names in sample order


def _load_kit(kit: str | os.PathLike) -> _Kit:
    from safetensors.torch import load_file

    from partseg.data.samples import INDEX_FILE, LATENTS_FILE

    root = Path(kit)
    if not (root / INDEX_FILE).is_file():
        raise FileNotFoundError(f"{root}: not an annotation kit (no {INDEX_FILE}; write one with "
                                f"`partseg annotate export`)")
    labels = Labels.load(root / LABELS_FILE)
    index = _read_json(root / INDEX_FILE)
    lat_path = root / (index.get("latents") or LATENTS_FILE)
    try:
        latents = load_file(str(lat_path))
    except Exception as e:  # safetensors raises several types for a bad file
        raise AnnotationError(f"{lat_path}: unreadable latents: {e}") from None
    rows, order = {}, []
    n = len(latents.get("seeds", []))
    for s in index.get("samples", []):
        name, row = Path(s["file"]).stem, s.get("index")
        if s.get("real") or row is None:
            continue
        if not (0 <= row < n) or int(latents["seeds"][row]) != s["seed"]:
            raise AnnotationError(f"{root}: samples.json entry {s['file']!r} does not match {lat_path.name}")
        rows[name] = (int(row), int(s["seed"]))
        order.append(name)
    return _Kit(root, labels, index, latents, rows, order)


def _labels_arg(labels: Labels | str | os.PathLike | None) -> Labels | None:
    if labels is None or isinstance(labels, Labels):
        return labels
    return Labels.load(labels)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AnnotationError(f"--out must be a folder, got a file: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AnnotationError(f"{out} exists and is not empty; refusing to overwrite it (choose another --out or "
                              f"pass overwrite=True / --overwrite)")


def _build_then_move(out: Path, overwrite: bool, build: Callable[[Path], None]) -> Path:
    """Build the whole output in a temporary folder beside `out`, then rename it into place: an error or a
    crash never leaves half a data set where the real one should be."""
    _check_out(out, overwrite)
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


# ------------------------------------------------------------------------------------------ export


def _hex(c: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)


def labelme_labels_text(labels: Labels) -> str:
    """LabelMe's --labels file: one name a line, `__ignore__` first (LabelMe's convention for "do not care")."""
    return "\n".join([IGNORE_NAME, *labels.names]) + "\n"


def cvat_labels_json(labels: Labels) -> str:
    """The label list for the "Raw" tab of CVAT's label constructor (task or project)."""
    return json.dumps([{"name": n, "color": _hex(c), "type": "polygon", "attributes": []}
                       for n, c in zip(labels.names, labels.colors, strict=True)], indent=2) + "\n"


def label_studio_config(labels: Labels) -> str:
    """A Label Studio labeling config: polygons on the image, one Label per class in its colour."""
    from xml.sax.saxutils import quoteattr

    rows = "\n".join(f"    <Label value={quoteattr(n)} background={quoteattr(_hex(c))}/>"
                     for n, c in zip(labels.names, labels.colors, strict=True))
    return (f'<View>\n  <Image name="image" value="$image"/>\n  <PolygonLabels name="label" toName="image">\n'
            f"{rows}\n  </PolygonLabels>\n</View>\n")


def kit_readme(labels: Labels, n: int, size: int | None = None) -> str:
    """Instructions for annotators: what to label, the classes, how to send the labels back."""
    table = "\n".join(f"| {i} | {n_} | `{_hex(c)}` | {c[0]}, {c[1]}, {c[2]} | {d} |"
                      for i, (n_, c, d) in enumerate(zip(labels.names, labels.colors, labels.descriptions,
                                                         strict=True)))
    px = f"{size}x{size} pixel " if size else ""
    return f"""# Annotation kit

This folder holds {n} generated {px}images in `images/`. Please label every pixel of each image with the part
it shows, using the classes below. Pixels you leave unlabelled count as **{labels.names[0]}** (class 0).

**Do not resize, crop, convert or rename the images**: the labels are matched to the images by file name and
must have exactly the images' size. Keep `latents.safetensors`, `samples.json` and `labels.json` untouched: they
let the labels be tied back to the generator.

## Classes

| index | name | colour | RGB | what it covers |
|---|---|---|---|---|
{table}

A region you cannot decide on may be labelled `{IGNORE_NAME}`: it is then left out of training and evaluation.

## How to label and what to send back

Any one of these is accepted; send back the files named below (zip them if you like).

* **LabelMe** (polygons): run
  `labelme images --labels {LABELME_LABELS} --nodata --validatelabel exact --autosave`
  and draw polygons (rectangles, circles and masks work too). LabelMe saves one `NAME.json` beside each image:
  send those JSON files. Shapes drawn later lie on top of earlier ones.
* **CVAT** (polygons, boxes, ellipses, brush masks): create a task from the images in `images/`; in the label
  constructor open the "Raw" tab and paste the contents of `{CVAT_LABELS}`. When done, export the task as
  **CVAT for images 1.1** and send `annotations.xml`. Where shapes overlap, the one with the higher z-order wins.
* **Label Studio** (polygons): create a project, paste `{LABEL_STUDIO_CONFIG}` as the labeling config, import
  the images, label, then export as **COCO** and send the JSON file.
* **COCO** from any other tool: polygons or RLE masks, category names exactly as in the table.
* **PNG masks** painted in any image editor: one `NAME.png` per image (same name and size as the image), either
  colour-coded with exactly the colours of the table (white = unlabelled; hard brush, no antialiasing, no
  JPEG), or a greyscale/palette PNG whose pixel values are the class indices (255 = unlabelled).

Coordinates are in pixels with (0, 0) the top-left corner of the top-left pixel; a pixel belongs to a shape when
its centre lies inside the shape.

The labels are imported with
`partseg annotate import ANNOTATIONS --format png|labelme|cvat|coco --kit THIS_FOLDER --out SHOTS`.
"""


def export_kit(gan: Any, n: int, seed: int, labels: Labels, out: str | os.PathLike, truncation: float = 1.0,
               noise_mode: str = "const", device: str = "cpu", batch: int = 16, overwrite: bool = False,
               z_dim: int | None = None) -> Path:
    """Write an annotation kit: n generated images with their exact latents, plus the annotators' files.

    gan: a checkpoint path, 'builtin:NAME', 'py:module:callable' (z_dim: its latent size when not inferable) or
    a generator object (our StyleGAN2, a HookedGenerator, a FewShotGAN). Image i is sample seed+i (file
    images/seedNNNNNN.png).
    The kit is built in a temporary folder and renamed into place, so a failure leaves no half kit.
    """
    from partseg.data.dataset import write_sample_set
    from partseg.gan.interface import as_fewshot_gan, load_fewshot_gan
    from partseg.gan.sampling import sample

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    by_name = isinstance(gan, str | os.PathLike)
    G = load_fewshot_gan(gan, device=device, z_dim=z_dim) if by_name else as_fewshot_gan(gan)
    generator = str(gan) if by_name else ""
    out = Path(out)
    _check_out(out, overwrite)
    s = sample(G, n, seed=seed, truncation=truncation, noise_mode=noise_mode, batch=batch)

    def build(tmp: Path) -> None:
        write_sample_set(tmp, s, labels, masks=None, generator=generator)
        (tmp / KIT_README).write_text(kit_readme(labels, n, int(s.images.shape[-1])), encoding="utf-8")
        (tmp / LABELME_LABELS).write_text(labelme_labels_text(labels), encoding="utf-8")
        (tmp / CVAT_LABELS).write_text(cvat_labels_json(labels), encoding="utf-8")
        (tmp / LABEL_STUDIO_CONFIG).write_text(label_studio_config(labels), encoding="utf-8")

    return _build_then_move(out, overwrite, build)


# ------------------------------------------------------------------------------------------ import


def _paint(ann: Annotation, h: int, w: int, unlabelled: str, overlap: str) -> np.ndarray:
    mask = np.full((h, w), 0 if unlabelled == "background" else IGNORE, dtype=np.uint8)
    owner = np.full((h, w), -1, dtype=np.int32) if overlap == "error" else None
    for k, layer in enumerate(ann.layers):
        cov = layer.cover(h, w)
        if owner is not None:
            clash = cov & (owner >= 0) & (mask != layer.cls)
            if clash.any():
                other = ann.layers[int(owner[clash][0])].what
                other = other[len(ann.source):].lstrip(": ") if other.startswith(ann.source) else other
                raise AnnotationError(f"{layer.what} overlaps {other} on {int(clash.sum())} pixels with a "
                                      f"different class (overlap='error'; use overlap='z-order' to let the later "
                                      f"shape win)")
            owner[cov] = k
        mask[cov] = layer.cls
    return mask


def _find_image(name: str, images: Path | None, hints: Sequence[Path]) -> Path | None:
    if images is not None:
        for suffix in IMAGE_SUFFIXES:
            for cand in (images / f"{name}{suffix}", images / f"{name}{suffix.upper()}"):
                if cand.is_file():
                    return cand
    for h in hints:
        if h.is_file():
            return h
    return None


def _image_by_number(i: int, images: Path | None) -> Path | None:
    if images is None or not images.is_dir():
        return None
    for p in sorted(images.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit() and int(p.stem) == i:
            return p
    return None


@dataclass
class _Resolved:
    name: str
    image: np.ndarray
    mask: np.ndarray
    kit_row: tuple[int, int] | None  # (row, seed) in the kit's latents; None for a real image


def _resolve(ann: Annotation, kit: _Kit | None, images: Path | None, allow_real: bool, unlabelled: str,
             overlap: str) -> _Resolved:
    name, path, data = ann.name, None, None
    if ann.index is not None and kit is not None:
        if ann.index >= len(kit.order):
            raise AnnotationError(f"{ann.source}: image number {ann.index} but the kit has {len(kit.order)} images "
                                  f"(numbers are positions in the kit, 0-{len(kit.order) - 1})")
        name = kit.order[ann.index]
    elif ann.index is not None:
        path = _image_by_number(ann.index, images)
        if path is None:
            raise AnnotationError(f"{ann.source}: no image numbered {ann.index} in --images "
                                  f"{images if images is not None else '(not given)'}")
        name = path.stem
    if kit is not None and name not in kit.rows:
        m = _LABEL_STUDIO_PREFIX.match(name)
        if m and m.group(1) in kit.rows:
            name = m.group(1)
    row = kit.rows.get(name) if kit is not None else None
    if row is not None:
        path = kit.root / IMAGES / f"{name}.png"
        if not path.is_file():
            raise AnnotationError(f"{ann.source}: the kit's image {path} is missing")
    else:
        if kit is not None and not allow_real:
            raise AnnotationError(f"{ann.source}: image {name!r} is not in the kit {kit.root} (so it has no latent); "
                                  f"pass allow_real=True (--allow-real) to import it as a real image")
        if path is None:
            path = _find_image(name, images, ann.image_hints)
            if path is None:
                m = _LABEL_STUDIO_PREFIX.match(name)
                if m:
                    path = _find_image(m.group(1), images, [])
                    name = m.group(1) if path is not None else name
        if path is None and ann.image_bytes is not None:
            data = ann.image_bytes
        if path is None and data is None:
            looked = [str(images)] if images is not None else []
            looked += [str(h) for h in ann.image_hints]
            raise AnnotationError(f"{ann.source}: no image found for {name!r} (looked in: "
                                  f"{', '.join(looked) or 'nothing; pass --images DIR or --kit KIT'})")
    where = str(path) if path is not None else f"{ann.source} (embedded imageData)"
    image = np.asarray(_open_image(path if path is not None else data, where).convert("RGB"), dtype=np.uint8)
    h, w = image.shape[:2]
    if ann.size is not None and tuple(ann.size) != (h, w):
        raise AnnotationError(f"{ann.source}: size mismatch: the annotation is {ann.size[1]}x{ann.size[0]} (WxH) "
                              f"but its image {where} is {w}x{h}; images must not be resized")
    mask = ann.mask if ann.mask is not None else _paint(ann, h, w, unlabelled, overlap)
    if not ((mask != 0) & (mask != IGNORE)).any():
        raise EmptyMaskError(f"{ann.source}: empty mask: no pixel of any part class (all background or "
                              f"unlabelled); was the image annotated? (skip_empty=True / --skip-empty leaves such "
                              f"images out)")
    return _Resolved(name, image, mask, row)


def import_annotations(src: str | os.PathLike, fmt: str, labels: Labels | str | os.PathLike | None,
                       out: str | os.PathLike, kit: str | os.PathLike | None = None, *,
                       images: str | os.PathLike | None = None, unlabelled: str = "background",
                       overlap: str = "z-order", allow_real: bool = False, skip_empty: bool = False,
                       mapping: Mapping[str, str | None] | None = None, overwrite: bool = False) -> Path:
    """Read annotations in `fmt` from `src` and write ONE canonical set in the data-set layout at `out`.

    out/labels.json, out/images/NAME.png, out/masks/NAME.png and, with a kit, out/latents.safetensors +
    out/samples.json holding exactly the annotated generated images' latents (real images, allowed with
    allow_real=True, are recorded with "latent": null). Every problem found is reported at once in one
    AnnotationError naming each file; nothing is written unless all images import cleanly.

    labels: Labels or a labels.json path; default the kit's labels, else FACES.
    unlabelled: what pixels no shape covers become in vector formats ('background' = class 0, or 'ignore').
    overlap: 'z-order' (later/higher shapes win) or 'error' (shapes of different classes must not overlap).
    mapping: CelebAMask-HQ part -> class name (None to drop a part); default `celebamask_mapping`.
    """
    from safetensors.torch import save_file

    from partseg.atomic import atomic_write_text
    from partseg.data.samples import INDEX_FILE, LATENTS_FILE

    if fmt not in FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if unlabelled not in UNLABELLED:
        raise AnnotationError(f"unlabelled must be one of {UNLABELLED}, got {unlabelled!r}")
    if overlap not in OVERLAP:
        raise AnnotationError(f"overlap must be one of {OVERLAP}, got {overlap!r}")
    out = Path(out)
    _check_out(out, overwrite)
    the_kit = _load_kit(kit) if kit is not None else None
    lab = _labels_arg(labels)
    if the_kit is not None:
        if lab is not None and lab != the_kit.labels:
            raise AnnotationError(f"the given labels differ from the kit's {the_kit.root / LABELS_FILE} (classes "
                                  f"{', '.join(lab.names)} vs {', '.join(the_kit.labels.names)}); leave --labels "
                                  f"out to use the kit's")
        lab = the_kit.labels
    lab = lab or FACES
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise FileNotFoundError(f"--images folder not found: {images_dir}")

    if fmt == "png":
        anns = read_png(src, lab)
    elif fmt == "labelme":
        anns = read_labelme(src, lab)
    elif fmt == "cvat":
        anns = read_cvat(src, lab)
    elif fmt == "coco":
        anns = read_coco(src, lab)
    else:
        anns = read_celebamask_hq(src, lab, mapping)
    if not anns:
        raise AnnotationError(f"{src}: no {fmt} annotations found")

    done: dict[str, _Resolved] = {}
    sources: dict[str, str] = {}
    errors: list[str] = []
    for ann in anns:
        try:
            r = _resolve(ann, the_kit, images_dir, allow_real, unlabelled, overlap)
        except EmptyMaskError as e:
            if skip_empty:
                warnings.warn(f"{ann.source}: empty mask, left out", AnnotationWarning, stacklevel=2)
            else:
                errors.append(str(e))
            continue
        except AnnotationError as e:
            errors.append(str(e))
            continue
        if r.name in done:
            errors.append(f"{ann.source}: image {r.name!r} is annotated twice (also in {sources[r.name]})")
            continue
        done[r.name], sources[r.name] = r, ann.source
    if errors:
        head = f"{len(errors)} problem{'s' if len(errors) > 1 else ''} importing {fmt} annotations from {src}"
        raise AnnotationError(head + ":\n  - " + "\n  - ".join(errors[:50])
                              + (f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""))
    if not done:
        raise AnnotationError(f"{src}: no non-empty annotation to import")

    def build(tmp: Path) -> None:
        lab.save(tmp / LABELS_FILE)
        for name in sorted(done):
            r = done[name]
            write_image(tmp / IMAGES / f"{name}.png", r.image)
            write_mask(tmp / MASKS / f"{name}.png", r.mask, lab)
        if the_kit is None:
            return
        generated = [n for n in sorted(done) if done[n].kit_row is not None]
        entries = []
        for name in sorted(done):
            row = done[name].kit_row
            if row is None:
                entries.append({"file": f"{IMAGES}/{name}.png", "seed": None, "index": None, "latent": None,
                                "real": True})
            else:
                entries.append({"file": f"{IMAGES}/{name}.png", "seed": row[1], "index": generated.index(name),
                                "real": False})
        if generated:
            rows = torch.tensor([done[n].kit_row[0] for n in generated], dtype=torch.long)
            save_file({k: the_kit.latents[k][rows].contiguous() for k in ("z", "ws", "seeds")},
                      str(tmp / LATENTS_FILE))
        index = {"generator": the_kit.index.get("generator", ""), "truncation": the_kit.index.get("truncation"),
                 "noise_mode": the_kit.index.get("noise_mode"), "latents": LATENTS_FILE if generated else None,
                 "kit": str(the_kit.root), "annotations": {"format": fmt, "source": str(src)}, "samples": entries}
        atomic_write_text(json.dumps(index, indent=1), tmp / INDEX_FILE)

    return _build_then_move(out, overwrite, build)
