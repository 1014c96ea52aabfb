"""Pixel-wise features: a generator's activations, resized to one size and stacked into one vector per pixel.

This is the representation of "Repurposing GANs for One-shot Semantic Part Segmentation" (CVPR 2021): the
outputs of the modulated convs from 8 px up (after noise and activation; the 4x4 conv and the ToRGBs left
out), each resized to a common size, bilinear with align_corners=True when upsampling and area when
downsampling, concatenated, not normalised.

The full map is large: a 256 px rosinality generator gives 4864 channels, 1.3 GB per image in float32, and
holding such maps is where DatasetGAN-style pipelines run out of memory. So there are three ways to read it,
and all three compute the same numbers:
- `pixel_features`: the whole map, written layer by layer into one preallocated tensor (float16 halves it);
- `iter_feature_tiles`: the map window by window, never all of it, for segmenting big images;
- `sample_pixel_features`: only chosen pixels, which is all an MLP head trains on.

Tiles and pixels are computed from per-axis "taps": every resize used here is separable, so output row y is
a weighted sum of a few input rows (2 for bilinear, 1 for nearest, a bin's worth for area), and likewise for
columns. The taps copy PyTorch's own index and weight formulas, so the results equal `F.interpolate`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from partseg.gan.sources import (
    FeatureSource,
    HookedSource,
    StyleGANSource,
    default_layers,
    hooked_source,
    stylegan_source,
)

__all__ = ["MODES", "FeatureSource", "HookedSource", "StyleGANSource", "default_layers", "feature_channels",
           "hooked_source", "iter_feature_tiles", "pixel_features", "sample_pixel_features", "stylegan_source"]

MODES = ("bilinear", "nearest")


def feature_channels(source: FeatureSource) -> int:
    """Length of one pixel's feature vector: the channels of the chosen layers, summed."""
    return sum(source.channels[n] for n in source.layers)


# ----------------------------------------------------------------------------------------------------------
# The whole map


def pixel_features(source: FeatureSource, latents: torch.Tensor, size: int | None = None, mode: str = "bilinear",
                   align_corners: bool = True, dtype: torch.dtype = torch.float32,
                   grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, features [N, C, size, size]) with C = feature_channels(source), layers in source order.

    size: default the largest layer resolution. Layers smaller than size are upsampled with `mode`, larger
    ones area-averaged. Each resized layer is cast to `dtype` as it is written into the preallocated output,
    so the peak is the output plus one layer, never a float32 copy of the whole map.
    grad: False runs without autograd (the usual case); True keeps the graph, e.g. for GAN inversion.
    """
    check_mode(mode)
    with _grad_context(grad):
        img, acts = source.activations(latents)
        size = size or _largest(source)
        out = torch.empty(img.shape[0], feature_channels(source), size, size, dtype=dtype, device=img.device)
        c0 = 0
        for name in source.layers:
            act = take_activation(acts, name, source)
            out[:, c0:c0 + act.shape[1]] = _resize(act, size, mode, align_corners)
            c0 += act.shape[1]
            del act
    return img, out


def _resize(x: torch.Tensor, size: int, mode: str, align_corners: bool) -> torch.Tensor:
    res = x.shape[-1]
    if res == size:
        return x
    if res > size:
        return F.interpolate(x, size=(size, size), mode="area")
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=align_corners)


# ----------------------------------------------------------------------------------------------------------
# Tiles and pixels, through per-axis taps


def iter_feature_tiles(source: FeatureSource, latents: torch.Tensor, tile: int = 64, size: int | None = None,
                       mode: str = "bilinear", align_corners: bool = True, dtype: torch.dtype = torch.float32,
                       grad: bool = False) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (y0, x0, features [N, C, th, tw]) window by window, row-major, equal to the crop
    `pixel_features(...)[1][:, :, y0:y0 + th, x0:x0 + tw]`, without ever holding the whole map.

    The generator runs once; each tile then reads only the input rows and columns its pixels depend on.
    Edge tiles are smaller when tile does not divide size.
    """
    check_mode(mode)
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    with _grad_context(grad):
        img, acts = source.activations(latents)
    size = size or _largest(source)
    layers = [take_activation(acts, name, source) for name in source.layers]
    del acts
    taps = _taps_per_resolution(source, size, mode, align_corners)
    n, c_total = img.shape[0], feature_channels(source)
    for y0 in range(0, size, tile):
        for x0 in range(0, size, tile):
            rows, cols = slice(y0, min(y0 + tile, size)), slice(x0, min(x0 + tile, size))
            with _grad_context(grad):  # not around the yield: the caller's code must keep its own grad mode
                out = torch.empty(n, c_total, rows.stop - y0, cols.stop - x0, dtype=dtype, device=img.device)
                c0 = 0
                for act in layers:
                    if act.shape[-1] == size:  # already at the output size: the tile is a crop
                        piece = act[:, :, rows, cols]
                    else:
                        idx, w = taps[act.shape[-1]]
                        piece = _resample_window(act, idx[rows], w[rows], idx[cols], w[cols])
                    out[:, c0:c0 + act.shape[1]] = piece
                    c0 += act.shape[1]
            yield y0, x0, out


def sample_pixel_features(source: FeatureSource, latents: torch.Tensor, n_pixels: int | None = None,
                          coords: torch.Tensor | None = None, size: int | None = None, mode: str = "bilinear",
                          align_corners: bool = True, dtype: torch.dtype = torch.float32,
                          generator: torch.Generator | None = None,
                          grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(coords [N, P, 2] long (y, x), features [N, P, C]) at some pixels of the size x size map.

    Give n_pixels (drawn uniformly without replacement per image, from `generator`) or coords ([N, P, 2] or
    [P, 2] for every image). Equal to gathering from `pixel_features`, without building it: what an MLP head
    trains on.
    """
    check_mode(mode)
    if (n_pixels is None) == (coords is None):
        raise ValueError("give exactly one of n_pixels and coords")
    with _grad_context(grad):
        img, acts = source.activations(latents)
        n, device = img.shape[0], img.device
        size = size or _largest(source)
        if coords is None:
            if not 0 < n_pixels <= size * size:
                raise ValueError(f"n_pixels must be in [1, {size * size}], got {n_pixels}")
            flat = torch.multinomial(torch.ones(n, size * size), n_pixels, replacement=False, generator=generator)
            coords = torch.stack([flat // size, flat % size], dim=-1)
        coords = coords.long()
        if coords.ndim == 2:
            coords = coords[None].expand(n, -1, -1)
        if coords.ndim != 3 or coords.shape[0] != n or coords.shape[2] != 2:
            raise ValueError(f"coords must be [N, P, 2] or [P, 2] with N = {n}, got {list(coords.shape)}")
        if coords.numel() and (coords.min() < 0 or coords.max() >= size):
            raise ValueError(f"coords must lie in [0, {size})")
        coords = coords.to(device)

        taps = _taps_per_resolution(source, size, mode, align_corners)
        out = torch.empty(n, coords.shape[1], feature_channels(source), dtype=dtype, device=device)
        batch = torch.arange(n, device=device)[:, None]
        c0 = 0
        for name in source.layers:
            act = take_activation(acts, name, source)
            idx, w = (t.to(device) for t in taps[act.shape[-1]])
            iy, wy = idx[coords[..., 0]], w[coords[..., 0]].to(act.dtype)  # [N, P, K]
            ix, wx = idx[coords[..., 1]], w[coords[..., 1]].to(act.dtype)
            feat = 0
            for a in range(iy.shape[-1]):
                for b in range(ix.shape[-1]):
                    # batch, iy, ix are split by a slice, so their broadcast dims come first: [N, P, c]
                    feat = feat + act[batch, :, iy[..., a], ix[..., b]] * (wy[..., a] * wx[..., b])[..., None]
            out[:, :, c0:c0 + act.shape[1]] = feat
            c0 += act.shape[1]
            del act
    return coords, out


def axis_taps(n_in: int, n_out: int, mode: str, align_corners: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Resizing one axis from n_in to n_out as taps: output i = sum_k w[i, k] * input[idx[i, k]].

    The formulas (float32 arithmetic included) are PyTorch's, so taps reproduce F.interpolate: bilinear and
    nearest when upsampling, area (adaptive average pooling bins) when downsampling.
    """
    i = torch.arange(n_out)
    if n_in == n_out:
        return i[:, None], torch.ones(n_out, 1)
    if n_in > n_out:  # area: bin [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)), zero-weight padding
        start, end = (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out
        idx = start[:, None] + torch.arange(int((end - start).max()))
        inside = idx < end[:, None]
        return torch.where(inside, idx, start[:, None]), inside / (end - start)[:, None]
    f32 = torch.float32
    if mode == "nearest":
        scale = torch.tensor(n_in, dtype=f32) / n_out
        return (i.to(f32) * scale).floor().long().clamp(max=n_in - 1)[:, None], torch.ones(n_out, 1)
    if align_corners:
        scale = torch.tensor(n_in - 1, dtype=f32) / (n_out - 1) if n_out > 1 else torch.tensor(0.0)
        src = i.to(f32) * scale
    else:
        src = ((i.to(f32) + 0.5) * (torch.tensor(n_in, dtype=f32) / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    lam = (src - i0.to(f32)).clamp(0, 1)
    return torch.stack([i0, (i0 + 1).clamp(max=n_in - 1)], 1), torch.stack([1 - lam, lam], 1)


def _taps_per_resolution(source: FeatureSource, size: int, mode: str,
                         align_corners: bool) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    return {r: axis_taps(r, size, mode, align_corners) for r in set(source.resolutions.values())}


def _resample_window(act: torch.Tensor, iy: torch.Tensor, wy: torch.Tensor, ix: torch.Tensor,
                     wx: torch.Tensor) -> torch.Tensor:
    """One tile of one layer: crop the input to the rows and columns the taps touch, then Wy @ crop @ Wx^T.

    Wy and Wx are the taps as small dense matrices (mostly zeros): two matmuls are much faster on a CPU than
    gathering and weighting rows and columns one tap at a time.
    """
    y_lo, y_hi, x_lo, x_hi = int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1
    x = act[:, :, y_lo:y_hi, x_lo:x_hi]
    wy = torch.zeros(len(iy), y_hi - y_lo).scatter_add_(1, iy - y_lo, wy).to(x.device, x.dtype)
    wx = torch.zeros(len(ix), x_hi - x_lo).scatter_add_(1, ix - x_lo, wx).to(x.device, x.dtype)
    return torch.matmul(torch.matmul(wy, x), wx.T)


# ----------------------------------------------------------------------------------------------------------
# Small checks


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _grad_context(grad: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if grad else torch.no_grad()


def _largest(source: FeatureSource) -> int:
    return max(source.resolutions[n] for n in source.layers)


def take_activation(acts: dict[str, torch.Tensor], name: str, source: FeatureSource) -> torch.Tensor:
    """Remove a layer's activation from `acts` (so it can be freed once used) and check its shape."""
    act = acts.pop(name)
    c, r = source.channels[name], source.resolutions[name]
    if act.ndim != 4 or tuple(act.shape[1:]) != (c, r, r):
        raise ValueError(f"layer {name!r}: expected [N, {c}, {r}, {r}], got {list(act.shape)}")
    return act
