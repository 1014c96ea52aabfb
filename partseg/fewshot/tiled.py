"""Feature windows and pixels from a generator's layers kept at their own resolution, and tiled prediction.

A "compact" sample is its feature layers as the generator made them, layers above the feature size
area-averaged down to it (exactly as `pixel_features` does): for a 1024 px config-f StyleGAN2 at the paper's 512
px feature size that is 81 M numbers per sample instead of the 1.3 G of the full map. Any window of the full map,
or any set of its pixels, is then computed from the layers through the same per-axis taps as
`partseg.features.iter_feature_tiles`, so it equals the crop (or gather) of `pixel_features` up to float rounding.

Tiled prediction applies the head to each tile's window widened by the head's margin (`memory.head_margin`)
and keeps only the tile: every kept logit sees exactly the inputs it sees on the whole map (at the map's
border the window's border is the map's, so the zero padding agrees too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from partseg.features import axis_taps, check_mode, pixel_features, take_activation
from partseg.fewshot.memory import PredictPlan

Compact = dict[str, torch.Tensor]  # layer name -> [N, c, r, r] with r <= size


@torch.no_grad()
def compact_activations(source, latents: torch.Tensor, size: int, dtype: torch.dtype = torch.float32,
                        ) -> tuple[torch.Tensor, Compact]:
    """(image, layers at min(own resolution, size) in `dtype`) of one generator pass.

    float16 is used where it is exact enough (a training cache: ~1e-3 relative error in the features); a layer
    whose values overflow float16 stays float32."""
    img, acts = source.activations(latents)
    out = {}
    for name in source.layers:
        act = take_activation(acts, name, source)
        if act.shape[-1] > size:
            act = F.interpolate(act, size=(size, size), mode="area")
        low = act.to(dtype)
        out[name] = low if dtype == act.dtype or bool(torch.isfinite(low).all()) else act
        del act
    return img, out


def layer_taps(compact: Compact, size: int, mode: str) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    check_mode(mode)
    return {r: axis_taps(r, size, mode, True) for r in {a.shape[-1] for a in compact.values()}}


def feature_window(compact: Compact, taps: dict, size: int, rows: slice, cols: slice, index: int | slice = slice(None),
                   ) -> torch.Tensor:
    """float32 features [n, C, h, w] of the window rows x cols of the size x size map (samples `index`).

    Written layer by layer into one preallocated tensor: the peak is the window plus one layer's piece."""
    acts = [a[index] if isinstance(index, slice) else a[index:index + 1] for a in compact.values()]
    h, w = len(range(size)[rows]), len(range(size)[cols])
    out = torch.empty(acts[0].shape[0], sum(a.shape[1] for a in acts), h, w, device=acts[0].device)
    c0 = 0
    for act in acts:
        r = act.shape[-1]
        if r == size:
            out[:, c0:c0 + act.shape[1]] = act[:, :, rows, cols]
        else:
            idx, wt = taps[r]
            out[:, c0:c0 + act.shape[1]] = _window(act, idx[rows], wt[rows], idx[cols], wt[cols])
        c0 += act.shape[1]
    return out


def _window(act: torch.Tensor, iy: torch.Tensor, wy: torch.Tensor, ix: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """Wy @ crop @ Wx^T in float32 over the input rows and columns the taps touch."""
    y_lo, y_hi, x_lo, x_hi = int(iy.min()), int(iy.max()) + 1, int(ix.min()), int(ix.max()) + 1
    x = act[:, :, y_lo:y_hi, x_lo:x_hi].float()
    my = torch.zeros(len(iy), y_hi - y_lo).scatter_add_(1, iy - y_lo, wy).to(x.device)
    mx = torch.zeros(len(ix), x_hi - x_lo).scatter_add_(1, ix - x_lo, wx).to(x.device)
    return torch.matmul(torch.matmul(my, x), mx.T)


def gather_pixels(compact: Compact, taps: dict, index: int, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """float32 features [P, C] of sample `index` at pixels (ys, xs) of the full map."""
    cols = []
    for act in compact.values():
        a = act[index]
        idx, w = taps[a.shape[-1]]
        iy, wy, ix, wx = idx[ys].to(a.device), w[ys].to(a.device), idx[xs].to(a.device), w[xs].to(a.device)
        feat = 0
        for p in range(iy.shape[-1]):
            for q in range(ix.shape[-1]):
                feat = feat + a[:, iy[:, p], ix[:, q]].float() * (wy[:, p] * wx[:, q])[None]
        cols.append(feat.T)
    return torch.cat(cols, 1)


def tile_windows(size: int, tile: int, margin: int):
    """(rows, cols, inner rows, inner cols) per tile: the window to compute and where the tile lies in it."""
    for y0 in range(0, size, tile):
        for x0 in range(0, size, tile):
            y1, x1 = min(y0 + tile, size), min(x0 + tile, size)
            wy0, wx0 = max(0, y0 - margin), max(0, x0 - margin)
            rows, cols = slice(wy0, min(size, y1 + margin)), slice(wx0, min(size, x1 + margin))
            yield rows, cols, slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0), (slice(y0, y1), slice(x0, x1))


@torch.no_grad()
def predict_bounded(head: nn.Module, make_source, latents: torch.Tensor, size: int, mode: str, plan: PredictPlan,
                    margin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, log-probabilities [N, K, size, size]) in passes of plan.chunk samples, each by whole maps
    (plan.tile >= size) or by tiles widened by `margin`. make_source(i, j): the feature source of samples i:j."""
    images, logps = [], []
    for i in range(0, len(latents), plan.chunk):
        j = min(i + plan.chunk, len(latents))
        src = make_source(i, j)
        if plan.tile >= size:
            img, feats = pixel_features(src, latents[i:j], size=size, mode=mode)
            logp = F.log_softmax(head(feats), dim=1)
            del feats
        else:
            img, compact = compact_activations(src, latents[i:j], size)
            taps = layer_taps(compact, size, mode)
            logp = None
            for rows, cols, in_r, in_c, (out_r, out_c) in tile_windows(size, plan.tile, margin):
                lp = F.log_softmax(head(feature_window(compact, taps, size, rows, cols)), dim=1)
                if logp is None:
                    logp = lp.new_empty(j - i, lp.shape[1], size, size)
                logp[:, :, out_r, out_c] = lp[:, :, in_r, in_c]
            del compact
        images.append(img)
        logps.append(logp)
    return torch.cat(images), torch.cat(logps)
