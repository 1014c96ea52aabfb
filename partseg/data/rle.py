"""COCO run-length encoding (RLE) both ways: the one codec behind annotation import (COCO files) and the
service's answers (`rle=true`), cross-checked against pycocotools in tests/test_rle.py.

A COCO RLE lists run lengths over the pixels in column-major order (down the first column, then the next),
starting with a run of zeros (0 when the first pixel is set). Uncompressed, `counts` is that list; compressed, it
is pycocotools' rleToString of it (see `decode_coco_rle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from partseg.data.annotation_errors import AnnotationError


def coco_runs(bits: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a binary mask [H, W]: column-major runs, zeros first ([0] when empty)."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2:
        raise ValueError(f"RLE needs a 2-D mask, got shape {list(bits.shape)}")
    flat = bits.T.reshape(-1)  # column-major
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def encode_coco_rle(bits: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a binary mask [H, W]: {"size": [H, W], "counts": str}, as pycocotools'
    mask.encode writes it (LEB128-like 6-bit characters, deltas from the fourth run on; `decode_coco_rle` reads
    it back)."""
    runs = coco_runs(bits)
    h, w = np.shape(bits)
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
