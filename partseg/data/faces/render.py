"""Rendering: paint the layers in order on the supersampled grid, then downsample the image (box filter, then
lighting ramp, cast, blur, noise) and the mask (majority vote per pixel)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from partseg.data.faces.aligned import params_for
from partseg.data.faces.body import _back_hair, _background, _clothes, _ear, _neck, _skin
from partseg.data.faces.canvas import _Canvas
from partseg.data.faces.params import MIN_SIZE, FaceParams
from partseg.data.faces.parts import _brow, _eye, _front_hair, _glasses, _hat, _mouth, _nose

# tie-break for the mask vote: small / thin parts win a 2-2 split, so they do not vanish at low resolution
_PRIORITY = np.array([0, 1, 5, 8, 9, 6, 7, 4, 2, 3], np.int32)


def draw(p: FaceParams, size: int = 64, ss: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Paint all layers on the ss x ss supersampled grid: float image [S, S, 3] (0-255), labels [S, S]."""
    cv = _Canvas(p, size, ss)
    _background(cv, p)
    _clothes(cv, p)
    _back_hair(cv, p)
    _neck(cv, p)
    far = 1 if p.yaw > 0 else -1
    if abs(p.yaw) > 0.05:
        _ear(cv, p, far, near=False)
    _skin(cv, p)
    for side in (-1, 1):
        if abs(p.yaw) <= 0.05 or side != far:
            _ear(cv, p, side, near=True)
    _nose(cv, p)
    _mouth(cv, p)
    for side in (-1, 1):
        _eye(cv, p, side)
        _brow(cv, p, side)
    if p.glasses:
        _glasses(cv, p)
    _front_hair(cv, p)
    _hat(cv, p)
    return cv.img, cv.lab


def _downsample_labels(lab: np.ndarray, ss: int) -> np.ndarray:
    """Majority class of each pixel's ss x ss samples; ties go to the smaller / thinner part (_PRIORITY)."""
    S = lab.shape[0]
    n = S // ss
    L = lab.reshape(n, ss, n, ss).transpose(0, 2, 1, 3).reshape(n * n, ss * ss)
    counts = (L[:, :, None] == L[:, None, :]).sum(-1)
    score = counts * 16 + _PRIORITY[L]
    idx = score.argmax(1)
    return L[np.arange(n * n), idx].reshape(n, n)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        q = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(k[i] * np.take(q, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return img


def finish(img: np.ndarray, p: FaceParams, size: int, ss: int = 2) -> np.ndarray:
    """Supersampled float image -> uint8 [size, size, 3]: box-downsample, lighting ramp, cast, blur, noise."""
    out = img.reshape(size, ss, size, ss, 3).mean((1, 3))
    if p.gradient or p.exposure != 1.0 or p.cast != (1.0, 1.0, 1.0):
        g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        ramp = g[None, :] * math.cos(p.gradient_angle) + g[:, None] * math.sin(p.gradient_angle)
        gain = (p.exposure * (1 + p.gradient * ramp))[..., None] * np.asarray(p.cast, np.float32)
        out = out * gain
    if p.blur > 0:
        out = _gaussian_blur(out, p.blur * size / 64)
    if p.noise > 0:
        out = out + np.random.default_rng([p.seed, size]).normal(0, p.noise, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_params(p: FaceParams, size: int = 64, ss: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render given parameters: (image uint8 [size, size, 3], mask uint8 [size, size] of class indices)."""
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size}")
    if ss < 1:
        raise ValueError(f"supersampling ss must be >= 1, got {ss}")
    img, lab = draw(p, int(size), ss)
    return finish(img, p, int(size), ss), _downsample_labels(lab, ss).astype(np.uint8)


def render_face(seed: int, size: int = 64, mode: str = "wild") -> tuple[np.ndarray, np.ndarray]:
    """The face of `seed` at `size` px: (image uint8 [H, W, 3], mask uint8 [H, W]). Deterministic; the same
    seed at another size is the same face (only the pixel noise differs). mode: "wild" (unaligned, cluttered)
    or "aligned" (FFHQ-style crop of the same identity, `partseg.data.faces.aligned`)."""
    return render_params(params_for(seed, mode), size)


def render_batch(seeds: Iterable[int], size: int = 64, mode: str = "wild") -> tuple[np.ndarray, np.ndarray]:
    """Stacked renders: images uint8 [N, size, size, 3], masks uint8 [N, size, size]."""
    out = [render_face(int(s), size, mode) for s in seeds]
    if not out:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8)
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])
