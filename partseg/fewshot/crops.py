"""Head training in bounded memory: each step's input from a cache of the shots' generator layers.

When the shots' whole feature maps do not fit the memory budget (`memory.plan_training`), every shot's layers are
kept at their own resolution (`tiled.compact_activations`, float16 when float32 would take over half the budget)
and each step computes only what it trains on:
- CNN: a random crop x crop square of one shot; its window is widened by the head's margin (30 px for the paper's
  CNN), and the loss covers the square only, so each of its logits is the one the whole map would give: a step
  is a whole-map step with the loss on a random square.
- MLP: the pixels the whole-map path would draw (same random stream), gathered through the layers' taps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from partseg.fewshot.memory import TrainPlan
from partseg.fewshot.tiled import compact_activations, feature_window, gather_pixels, layer_taps
from partseg.gan.interface import FewShotGAN
from partseg.labels import IGNORE

if TYPE_CHECKING:
    from partseg.fewshot.learner import FewShotConfig, Shots


def shot_source(G: FewShotGAN, shots: Shots, cfg: FewShotConfig, i: int):
    """The feature source that regenerates shot i: its recorded noise seed, or its inverted noise maps."""
    noise = None
    if shots.noise is not None and shots.noise[i] is not None:
        noise = [t.to(G.device) for t in shots.noise[i]]
    return G.source(cfg.layers, noise_mode=shots.noise_mode, seeds=[shots.seeds[i]], noise=noise)


def pixel_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
               gamma: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits [N, C, ...] (float32, whatever the autocast) against labels [N, ...], with optional
    class weights (a weighted mean, as F.cross_entropy's). gamma > 0: the focal loss (Lin et al. 2017), each pixel's
    term scaled by (1 - p_true) ** gamma so that pixels the head already gets right count less."""
    logits = logits.float()
    if gamma == 0:
        return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    valid = target != IGNORE
    t = torch.where(valid, target, torch.zeros_like(target))
    logp = F.log_softmax(logits, 1).gather(1, t.unsqueeze(1)).squeeze(1)
    w = valid.float() if weight is None else weight.float()[t] * valid
    term = -(1 - logp.exp()).pow(gamma) * logp
    return (w * term).sum() / w.sum().clamp_min(1e-12)


def shot_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
              gamma: float = 0.0) -> torch.Tensor:
    """pixel_loss of a map's logits [N, C, h, w], compared at the mask's size where the mask is finer."""
    if logits.shape[-2:] != target.shape[-2:]:  # masks finer than the features: compare at the mask's size
        logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    return pixel_loss(logits, target, weight, gamma)


def masks_at(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Masks [K, M, M] at the feature size (nearest keeps class indices intact)."""
    if masks.shape[-1] == size:
        return masks
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def feature_size(G: FewShotGAN, cfg: FewShotConfig) -> int:
    """The head's map size: cfg.size, else the generator's image size (the paper's choice), so shots' masks keep
    their detail and predictions match the images also where the feature layers stop below it (a DCGAN's last
    ReLU is at half its output size)."""
    return cfg.size or G.resolution


class CachedShots:
    """Every shot's layers at their own resolution (at most `size`), built one shot at a time."""

    def __init__(self, G: FewShotGAN, shots: Shots, cfg: FewShotConfig, plan: TrainPlan, margin: int):
        self.plan, self.margin, self.kind, self.pixels = plan, margin, cfg.head, cfg.pixels_per_step
        self.weight: torch.Tensor | None = None  # class weights of the loss, set by train_head
        self.gamma = cfg.focal_gamma
        self.cache, size = [], feature_size(G, cfg)
        for i in range(len(shots.names)):
            src = shot_source(G, shots, cfg, i)
            _, compact = compact_activations(src, shots.ws[i:i + 1].to(G.device), size, plan.cache_dtype)
            self.cache.append({k: v.cpu() for k, v in compact.items()})  # heads train on the CPU, as before
        self.layers, self.size = list(src.layers), size
        self.channels = sum(src.channels[n] for n in src.layers)
        self.taps = layer_taps(self.cache[0], size, cfg.mode)
        self.masks = shots.masks
        self.masks_f = masks_at(shots.masks, size)
        self.flat_m = self.masks_f.reshape(-1)
        self.valid = (self.flat_m != IGNORE).nonzero()[:, 0]
        if len(self.valid) == 0:
            raise ValueError("the shots have no labelled pixels")
        self.crop = min(plan.crop, size)

    def loss(self, member: nn.Module, gen: torch.Generator) -> torch.Tensor:
        return self._crop_loss(member, gen) if self.kind == "cnn" else self._pixel_loss(member, gen)

    def window(self, i: int, y0: int, x0: int) -> tuple[torch.Tensor, slice, slice]:
        """Features of shot i around the crop at (y0, x0), and where the crop lies in them."""
        s, c, m = self.size, self.crop, self.margin
        rows, cols = slice(max(0, y0 - m), min(s, y0 + c + m)), slice(max(0, x0 - m), min(s, x0 + c + m))
        x = feature_window(self.cache[i], self.taps, s, rows, cols)
        return x, slice(y0 - rows.start, y0 - rows.start + c), slice(x0 - cols.start, x0 - cols.start + c)

    def target(self, i: int, y0: int, x0: int) -> torch.Tensor:
        """The crop's labels: at the mask's own size when it is a multiple of the feature size, else at that size."""
        c, big = self.crop, self.masks.shape[-1]
        if big % self.size == 0:
            k = big // self.size
            return self.masks[i:i + 1, y0 * k:(y0 + c) * k, x0 * k:(x0 + c) * k]
        return self.masks_f[i:i + 1, y0:y0 + c, x0:x0 + c]

    def _crop_loss(self, member: nn.Module, gen: torch.Generator) -> torch.Tensor:
        i = int(torch.randint(len(self.cache), (1,), generator=gen))
        y0, x0 = (int(v) for v in torch.randint(self.size - self.crop + 1, (2,), generator=gen))
        flip = bool(torch.rand((), generator=gen) < 0.5)  # mirrored features and labels, as on whole maps
        x, inner_r, inner_c = self.window(i, y0, x0)
        logits = member(x.flip(-1)).flip(-1) if flip else member(x)
        logits, y = logits[:, :, inner_r, inner_c], self.target(i, y0, x0)
        if bool((y == IGNORE).all()):  # nothing labelled in this square: a step without a gradient
            return logits.sum() * 0
        return shot_loss(logits, y, self.weight, self.gamma)

    def _pixel_loss(self, member: nn.Module, gen: torch.Generator) -> torch.Tensor:
        pick = self.valid[torch.randint(len(self.valid), (self.pixels,), generator=gen)]
        area = self.size * self.size
        shot, rest = pick // area, pick % area
        ys, xs = rest // self.size, rest % self.size
        feats = torch.empty(len(pick), self.channels)
        for s in shot.unique().tolist():
            sel = (shot == s).nonzero()[:, 0]
            feats[sel] = gather_pixels(self.cache[s], self.taps, 0, ys[sel], xs[sel])
        return pixel_loss(member(feats), self.flat_m[pick], self.weight, self.gamma)
