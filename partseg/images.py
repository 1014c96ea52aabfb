"""Images every stage shares: one decoder with one rule set, one centre crop, one uint8 <-> [-1, 1] conversion,
grids and atomic PNGs.

The decoder's rules hold for uploads (partseg.serve), image files (data sets, the CLI, the labeller, calibration
folders, GAN training data) alike: only the formats in IMAGE_FORMATS are opened (never Pillow's Ghostscript or
PSD plug-ins), the pixel count read from the header is checked before any pixel is decompressed, EXIF orientation
is applied, and the result is uint8 RGB [H, W, 3] (alpha dropped, first frame of an animation).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from partseg.atomic import atomic_path

if TYPE_CHECKING:  # torch is imported by the conversions only: decoding needs numpy and Pillow alone
    import torch

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")  # what Image.open(formats=...) may use
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # files of those formats
MAX_PIXELS = 100_000_000  # default limit for image files (the service sets its own, usually far lower)
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageError(ValueError):
    """An image that cannot or may not be decoded. The message is `what` followed by the problem."""

    def __init__(self, what: str, problem: str):
        super().__init__(f"{what} {problem}")
        self.what, self.problem = what, problem


class ImageTooLarge(ImageError):
    """Over a byte, pixel or side limit, or a decompression bomb: refused before decoding."""


class ImageShapeRefused(ImageError):
    """Within the limits but too thin (over the aspect-ratio limit)."""


def _check_header(im: Image.Image, what: str, max_pixels: int, max_side: int | None,
                  max_aspect: float | None) -> tuple[int, int]:
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(what, f"has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLarge(what, f"is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} pixels")
    if max_side is not None and max(w, h) > max_side:
        raise ImageTooLarge(what, f"is {w}x{h}; the longest side may be {max_side:,} pixels")
    if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
        raise ImageShapeRefused(what, f"is {w}x{h}, an aspect ratio of {max(w, h) / min(w, h):,.1f}:1; at most "
                                      f"{max_aspect:g}:1 is accepted (crop it first)")
    return w, h


def _open(source: bytes | Path, what: str, max_pixels: int, max_side: int | None, max_aspect: float | None,
          decode: bool, mode: str | None = "RGB") -> np.ndarray | tuple[int, int] | Image.Image:
    """Under the rules above: the decoded array in `mode` (decode; mode None: the PIL image in its own mode, e.g.
    a palette mask) or the (height, width) after EXIF orientation (not decode)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=IMAGE_FORMATS) as im:
            w, h = _check_header(im, what, max_pixels, max_side, max_aspect)
            if not decode:
                return (w, h) if im.getexif().get(0x0112) in _ROTATED else (h, w)
            im.load()
            out = ImageOps.exif_transpose(im)
            out = out.convert(mode) if mode else out.copy()  # a copy: the file's image closes with the `with`
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(what, f"is refused as a decompression bomb ({type(e).__name__}: {e})") from None
    except UnidentifiedImageError:
        raise ImageError(what, f"is not an image in a supported format: cannot identify image file as "
                               f"{', '.join(IMAGE_FORMATS)}") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError) as e:
        raise ImageError(what, f"is a damaged or truncated image ({type(e).__name__}: {e})") from None
    if mode is None:
        return out
    arr = np.array(out, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    if arr.ndim != 3 or arr.shape[2] != 3:  # defensive: convert("RGB") always gives [H, W, 3]
        raise ImageError(what, "could not be read as an RGB image")
    return arr


def open_image(source: bytes | str | os.PathLike, what: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A loaded PIL image in its own mode (palette masks stay palette) under the decoder's rules: for readers that
    need more than RGB, e.g. annotation masks. ImageError names `what` (default: the file)."""
    if not isinstance(source, bytes):
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"image not found: {source}")
    what = what or (f"{source}: the file" if isinstance(source, Path) else "the image")
    if isinstance(source, bytes) and not source:
        raise ImageError(what, "is empty (0 bytes)")
    return _open(source, what, max_pixels, None, None, decode=True, mode=None)


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, max_bytes: int | None = None, what: str = "the image",
                 max_side: int | None = None, max_aspect: float | None = None) -> np.ndarray:
    """Image bytes -> uint8 RGB [H, W, 3], or an ImageError saying what is wrong with them.

    The size in the header is checked before any pixel is decoded: an image over `max_pixels` or `max_side`, or
    thinner than 1:`max_aspect`, is refused without being decompressed (a 1 x 4,000,000 image is under a pixel
    limit, but resizing it takes seconds).
    """
    if not data:
        raise ImageError(what, "is empty (0 bytes): send the image file's bytes")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageTooLarge(what, f"is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB")
    return _open(bytes(data), what, max_pixels, max_side, max_aspect, decode=True)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file -> uint8 RGB [H, W, 3] under decode_image's rules; FileNotFoundError when it is missing,
    ImageError (a ValueError naming the file) when it cannot or may not be decoded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file", "is empty (0 bytes)")
    return _open(path, f"{path}: the file", max_pixels, None, None, decode=True)


def image_size(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of an image file as read_image returns it (EXIF rotation included), from its header only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return _open(path, f"{path}: the file", max_pixels, None, None, decode=False)


# ------------------------------------------------------------------------------------------ geometry


def centre_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the largest centred square."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> its centre square resized to [size, size, 3] (Lanczos when shrinking, bicubic when
    enlarging): how training images, few-shot inputs and inversion requests are brought to a generator's size."""
    top, left, s = centre_box(*image.shape[:2])
    crop = Image.fromarray(np.asarray(image)[top:top + s, left:left + s])
    if s != size:
        crop = crop.resize((size, size), Image.LANCZOS if s > size else Image.BICUBIC)
    return np.asarray(crop, dtype=np.uint8).copy()


# ------------------------------------------------------------------------------------------ conversions


def to_uint8_tensor(images: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3] (clipped, rounded), on the same device."""
    import torch

    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> numpy uint8 [N, H, W, 3] (clipped, rounded)."""
    return to_uint8_tensor(images).cpu().numpy()


def from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1] (x / 127.5 - 1): the inverse of to_uint8."""
    import torch

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.require(images, requirements=["C", "W"]))
    return images.movedim(-1, -3).float() / 127.5 - 1


def image_grid(images: torch.Tensor, cols: int | None = None) -> Image.Image:
    arr = to_uint8(images)
    n, h, w, _ = arr.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, a in enumerate(arr):
        grid[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = a
    return Image.fromarray(grid)


def save_png(img: Image.Image, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
