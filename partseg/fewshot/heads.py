"""Few-shot heads: pixel features [N, C, H, W] -> part logits [N, K, H, W].

- `cnn`: the paper's dilated CNN ("dilated_CNN_61"): a 1x1 conv C->128, then 3x3 convs with dilations
  2, 4, 8, 1, 2, 4, 8, 1 narrowing to 32 channels, then 1x1 to K, leaky ReLU between; 61 px receptive field,
  so a label can use context (a nose is skin between the eyes and the mouth), not only the pixel's vector.
- `mlp`: a per-pixel MLP (as DatasetGAN/ReGAN's MLP variant), written with 1x1 convs so the same module
  classifies sampled pixels [P, C] and whole maps. It trains on sampled pixels, which is what keeps memory
  bounded at high resolution.
An `Ensemble` averages the softmax of several heads trained from different seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("cnn", "mlp")


@dataclass
class HeadConfig:
    kind: str = "cnn"
    in_channels: int = 0
    num_classes: int = 0
    hidden: list[int] = field(default_factory=list)  # mlp: hidden widths (default [256, 128]); cnn: unused
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {self.kind!r}")
        if self.in_channels < 1 or self.num_classes < 2:
            raise ValueError(f"head needs in_channels >= 1 and num_classes >= 2, got {self.in_channels}, "
                             f"{self.num_classes}")
        if self.kind == "mlp" and not self.hidden:
            self.hidden = [256, 128]

    def to_dict(self) -> dict:
        return asdict(self)


class CNNHead(nn.Module):
    """The paper's dilated CNN over the whole feature map."""

    DILATIONS = (2, 4, 8, 1, 2, 4, 8, 1)
    WIDTHS = (64, 64, 64, 64, 64, 64, 32, 32)

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, 128, 1), nn.LeakyReLU(0.2)]
        c = 128
        for d, w in zip(self.DILATIONS, self.WIDTHS, strict=True):
            layers += [nn.Conv2d(c, w, 3, padding=d, dilation=d), nn.LeakyReLU(0.2)]
            c = w
        if cfg.dropout:
            layers.append(nn.Dropout2d(cfg.dropout))
        layers.append(nn.Conv2d(c, cfg.num_classes, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats.float())


class MLPHead(nn.Module):
    """A per-pixel MLP; accepts [N, C, H, W] maps or [P, C] pixel vectors."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c = cfg.in_channels
        for w in cfg.hidden:
            layers += [nn.Conv2d(c, w, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            c = w
        layers.append(nn.Conv2d(c, cfg.num_classes, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim == 2:  # [P, C] -> [1, C, P, 1] -> [P, K]
            return self.net(feats.float().T[None, :, :, None])[0, :, :, 0].T
        return self.net(feats.float())


def build_head(cfg: HeadConfig) -> nn.Module:
    return CNNHead(cfg) if cfg.kind == "cnn" else MLPHead(cfg)


class Ensemble(nn.Module):
    """Several heads of the same config; `forward` returns log of the mean softmax (so argmax and NLL work)."""

    def __init__(self, cfg: HeadConfig, n: int = 1):
        super().__init__()
        if n < 1:
            raise ValueError(f"ensemble size must be >= 1, got {n}")
        self.cfg = cfg
        self.members = nn.ModuleList(build_head(cfg) for _ in range(n))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](feats)
        probs = torch.stack([F.softmax(m(feats), dim=1 if feats.ndim == 4 else -1) for m in self.members])
        return probs.mean(0).clamp_min(1e-8).log()
