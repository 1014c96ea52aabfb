"""Image conversions every stage shares: generator tensors in [-1, 1] <-> uint8 RGB arrays, grids and atomic PNGs."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from partseg.atomic import atomic_path


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8 (clipped)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


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
