"""Auto-shot distillation: train a UNet on generated images labelled by a few-shot head.

Pairs are made on the fly (latents -> image + features -> head labels), so no data set is stored; pairs for
step s come from a generator seeded by (seed, rank, s), so a resumed run draws the pairs an uninterrupted one
would have. Pixels where the head is unsure (max softmax below `confidence`) are ignored in the loss: this is
not in the paper; `benchmarks/label_efficiency.py` reports its effect. The paper's augmentation (flip, scale
0.5-2, rotation +-10 deg, translation up to 50%) plus colour jitter is applied to image and labels together.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .augment import AugmentConfig, augment_pair
from .fewshot import FewShotHead
from .gan.stylegan2 import Generator
from .labels import IGNORE
from .seg_train import SegTrainConfig, fit_segmenter
from .unet import UNet, UNetConfig


@dataclass
class DistillConfig:
    steps: int = 3000
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    confidence: float = 0.5  # ignore pixels whose head max-softmax is below this (0 disables)
    truncation: float = 1.0
    noise_mode: str = "const"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    augment: bool = True
    seed: int = 0
    val_every: int = 250


@torch.no_grad()
def make_pairs(G: Generator, head: FewShotHead, n: int, gen: torch.Generator, confidence: float = 0.0,
               truncation: float = 1.0, noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
    """n generated images [n, 3, R, R] with the head's labels [n, R, R] (255 where the head is unsure)."""
    dev = G.mean_w.device
    z = torch.randn(n, G.z_dim, generator=gen).to(dev)
    ws = G.ws_from_z(z, truncation)
    img, logp = head.predict_ws(G, ws, noise_mode=noise_mode)
    if logp.shape[-1] != img.shape[-1]:
        logp = torch.nn.functional.interpolate(logp, size=img.shape[-2:], mode="bilinear", align_corners=False)
    conf, labels = logp.exp().max(1)
    if confidence:
        labels[conf < confidence] = IGNORE
    return img.clamp(-1, 1).cpu(), labels.cpu()


def pair_stream(G: Generator, head: FewShotHead, cfg: DistillConfig,
                rank: int = 0) -> Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """start step -> batches of (augmented image, labels); batch s depends only on (seed, rank, s)."""
    aug = AugmentConfig()

    def make(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = start
        while True:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank * 7919 + step)
            x, y = make_pairs(G, head, cfg.batch, gen, cfg.confidence, cfg.truncation, cfg.noise_mode)
            if cfg.augment:
                x, y = augment_pair(x, y, aug, gen)
            yield x, y
            step += 1

    return make


def distill(G: Generator, head: FewShotHead, cfg: DistillConfig, out: str | os.PathLike,
            validate: Callable[[UNet], float] | None = None, progress: bool = True,
            stop_at_step: int | None = None) -> tuple[UNet, dict]:
    """Train (or resume) a UNet in folder `out` on pairs from G and head; returns (model, summary)."""
    head.check_generator(G)
    torch.manual_seed(cfg.seed)
    model = UNet(UNetConfig(num_classes=len(head.labels), channels=cfg.channels))
    scfg = SegTrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=min(100, cfg.steps // 10),
                          ckpt_every=max(1, min(250, cfg.steps)), log_every=25, seed=cfg.seed)
    meta = {"distill_config": str(asdict(cfg)), "gan_fingerprint": head.meta["gan_fingerprint"],
            "input": "RGB in [-1, 1] (x / 127.5 - 1), any height and width", "train_resolution": str(G.resolution)}
    res = fit_segmenter(model, pair_stream(G, head, cfg), scfg, Path(out), labels=head.labels, progress=progress,
                        stop_at_step=stop_at_step, desc="distill", validate=validate, val_every=cfg.val_every,
                        extra_meta=meta)
    return model, res
