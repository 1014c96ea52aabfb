"""Joint image/label augmentation with tensor ops (runs wherever the batch lives, GPU included).

The paper's auto-shot augmentation: random horizontal flip, scale 0.5-2x, rotation +-10 deg and translation up
to 50% of the image size, applied to the image and its labels by one sampling grid so they stay aligned; plus
colour jitter on the image only. Labels are resampled by nearest neighbour (hard labels) or bilinearly (soft
class probabilities); pixels that come from outside the image are marked ignore (255) or given zero
probability everywhere, so the loss never learns a made-up border.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from partseg.labels import IGNORE


@dataclass
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip
    scale: tuple[float, float] = (0.5, 2.0)  # zoom factor range (log-uniform)
    rotate: float = 10.0  # degrees, +-
    translate: float = 0.5  # fraction of the image size, +- (the paper's 0-50%)
    brightness: float = 0.2  # colour jitter on the image only (0 disables each)
    contrast: float = 0.2
    saturation: float = 0.2


def random_affine(n: int, cfg: AugmentConfig, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """[n, 2, 3] affine matrices mapping output to input coordinates (normalised, align_corners=False)."""
    def u(lo: float, hi: float, shape=(n,)) -> torch.Tensor:
        return torch.rand(shape, generator=generator) * (hi - lo) + lo

    zoom = torch.exp(u(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    angle = u(-cfg.rotate, cfg.rotate) * math.pi / 180
    shift = u(-cfg.translate, cfg.translate, (n, 2)) * 2  # normalised coordinates span 2
    flip = torch.where(torch.rand(n, generator=generator) < cfg.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    return theta.to(device)


def colour_jitter(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast and saturation jitter on images in [-1, 1]."""
    n = x.shape[0]

    def factor(amount: float) -> torch.Tensor:
        return (1 + (torch.rand(n, generator=generator) * 2 - 1) * amount).to(x.device).view(n, 1, 1, 1)

    if cfg.brightness:
        x = (x + 1) * factor(cfg.brightness) - 1
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor(cfg.contrast) + mean
    if cfg.saturation:
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * factor(cfg.saturation) + grey
    return x.clamp(-1, 1)


def random_crop(theta: torch.Tensor, size: tuple[int, int], crop: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """theta followed by a random crop x crop window of its H x W output (sample a crop x crop grid with it).

    One sampling grid still does everything, so the crop costs nothing and only the kept pixels are sampled.
    """
    h, w = size
    if not 0 < crop <= min(h, w):
        raise ValueError(f"crop must be in 1..{min(h, w)} (the image's shorter side), got {crop}")
    n = theta.shape[0]
    sy, sx = crop / h, crop / w  # window size in the output's normalised coordinates (which span 2)
    oy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sy)
    ox = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sx)
    window = torch.zeros(n, 3, 3)
    window[:, 0, 0], window[:, 0, 2], window[:, 1, 1], window[:, 1, 2], window[:, 2, 2] = sx, ox, sy, oy, 1.0
    return theta @ window.to(theta)


def augment_pair(images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig | None = None,
                 generator: torch.Generator | None = None, crop: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images [N, 3, H, W] with labels [N, H, W] (class ids) or [N, K, H, W] (probabilities).

    crop > 0 returns a random crop x crop window of each augmented pair (cheaper training steps).
    """
    cfg = cfg or AugmentConfig()
    theta = random_affine(images.shape[0], cfg, generator, images.device)
    shape = list(images.shape)
    if crop:
        theta = random_crop(theta, (shape[2], shape[3]), crop, generator)
        shape = [shape[0], shape[1], crop, crop]
    grid = F.affine_grid(theta, shape, align_corners=False)
    # reflection: pixels at the image's own border blend with themselves, not with a made-up fill colour
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    inside = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="nearest", padding_mode="zeros",
                           align_corners=False)
    if labels.dtype.is_floating_point:
        lab = F.grid_sample(labels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        lab = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                            align_corners=False)[:, 0].round().long()
        lab[inside[:, 0] < 0.5] = IGNORE
    return colour_jitter(out, cfg, generator), lab
