"""Upload checks: declared content type, size and pixel limits read from the header, decoding to RGB.

Every problem is a RequestError carrying the 4xx status the service answers with.
"""

from __future__ import annotations

from http import HTTPStatus

import numpy as np
from PIL import Image

from partseg import images
from partseg.http_errors import RequestError
from partseg.images import IMAGE_FORMATS  # noqa: F401 - re-exported by partseg.serve

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp", "image/bmp",
                         "image/x-ms-bmp", "image/x-bmp", "image/tiff", "image/gif"})
GENERIC_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})  # curl -F for unknown extensions


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
    """Upload bytes -> uint8 RGB [H, W, 3] under partseg.images.decode_image's rules (allow-listed formats, size
    limits checked from the header before decoding, EXIF orientation applied), or the RequestError to answer:
    413 over a size limit, 422 too thin, 400 otherwise."""
    try:
        return images.decode_image(data, max_pixels, max_bytes, what, max_side, max_aspect)
    except images.ImageTooLarge as e:
        raise TooLarge(str(e)) from None
    except images.ImageShapeRefused as e:
        raise Unprocessable(str(e)) from None
    except images.ImageError as e:
        raise RequestError(str(e)) from None
