"""Upload checks: declared content type, size and pixel limits read from the header, decoding to RGB.

Every problem is a RequestError carrying the 4xx status the service answers with.
"""

from __future__ import annotations

import io
import struct
from http import HTTPStatus

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Image formats an upload may have (Image.open(formats=...)): no PostScript/EPS (Ghostscript), no PSD/ICO quirks.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp", "image/bmp",
                         "image/x-ms-bmp", "image/x-bmp", "image/tiff", "image/gif"})
GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})  # curl -F for unknown extensions


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


class Unprocessable(RequestError):
    """A well-formed request whose parameter or image is of a kind the service does not process."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY


class Unavailable(RequestError):
    """Not the client's fault: the service cannot answer now (answered 503 with Retry-After)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


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


def decode_image(data: bytes, max_pixels: int, max_bytes: int | None = None, what: str = "upload",
                 max_side: int | None = None, max_aspect: float | None = None) -> np.ndarray:
    """Upload bytes -> uint8 RGB [H, W, 3], or a RequestError saying what is wrong with them.

    The size in the header is checked before any pixel is decoded (an image over `max_pixels` or `max_side`, or
    thinner than 1:`max_aspect`, is refused without being decompressed: a 1 x 4,000,000 image is under the pixel
    limit but its resize to the network size takes seconds); EXIF orientation is applied, alpha is dropped, the
    first frame of an animation is used.
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
            if max_side is not None and max(w, h) > max_side:
                raise TooLarge(f"{what} is {w}x{h}; the longest side may be {max_side:,} pixels")
            if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
                raise Unprocessable(f"{what} is {w}x{h}, an aspect ratio of {max(w, h) / min(w, h):,.1f}:1; at "
                                    f"most {max_aspect:g}:1 is accepted (crop it first)")
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

