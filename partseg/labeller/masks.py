"""Mask uploads: the two body formats the page and scripts send, checked before anything is written.

A mask arrives either as raw H*W uint8 class indices (what the page sends: no encoder in the browser, and the
bytes are exactly the mask it edits) or as a PNG of class indices (what a script most easily writes). Both must
match the image's size and hold only class indices or IGNORE; a PNG's size is checked from its header, so a
huge PNG is never decompressed.
"""

from __future__ import annotations

import io
from http import HTTPStatus

import numpy as np
from PIL import Image, UnidentifiedImageError

from partseg.http_errors import RequestError
from partseg.labels import IGNORE

RAW = "application/octet-stream"


def mime(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case, without parameters."""
    return (content_type or "").split(";")[0].strip().lower()


def decode_upload(body: bytes, content_type: str | None, name: str, height: int, width: int,
                  n_classes: int) -> np.ndarray:
    """A validated uint8 [height, width] mask from an upload for image `name`, or a RequestError saying what is
    wrong with it."""
    h, w = height, width
    kind = mime(content_type)
    if kind == RAW:
        if len(body) != h * w:
            raise RequestError(f"raw mask of {len(body)} bytes; image {name!r} is "
                               f"{w}x{h}, so exactly {h * w} bytes are expected", HTTPStatus.BAD_REQUEST)
        mask = np.frombuffer(body, dtype=np.uint8).reshape(h, w).copy()
    elif kind == "image/png":
        try:
            with Image.open(io.BytesIO(body)) as im:
                if im.format != "PNG":
                    raise RequestError(f"body is {im.format}, not a PNG", HTTPStatus.BAD_REQUEST)
                if im.size != (w, h):  # checked before decoding: a huge PNG is never decompressed
                    raise RequestError(f"mask is {im.size[0]}x{im.size[1]}; image "
                                       f"{name!r} is {w}x{h}", HTTPStatus.BAD_REQUEST)
                if im.mode not in ("L", "P"):
                    raise RequestError(f"PNG mode is {im.mode!r}; a mask is a "
                                       f"palette ('P') or greyscale ('L') PNG whose "
                                       f"pixel values are class indices", HTTPStatus.BAD_REQUEST)
                mask = np.asarray(im, dtype=np.uint8).copy()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise RequestError(f"cannot decode the PNG: {e}", HTTPStatus.BAD_REQUEST) from None
    else:
        raise RequestError(f"Content-Type {content_type!r}: send image/png (class indices) or {RAW} "
                           f"(H*W uint8, row-major)",
                           HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
    bad = (mask >= n_classes) & (mask != IGNORE)
    if bad.any():
        vals = sorted(set(np.unique(mask[bad]).tolist()))
        raise RequestError(f"mask values {vals[:10]} are not class indices "
                           f"(0-{n_classes - 1}) nor {IGNORE} (unlabelled)", HTTPStatus.BAD_REQUEST)
    return mask
