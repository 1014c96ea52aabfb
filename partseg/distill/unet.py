"""A plain UNet for part segmentation: the label oracle, and the student that auto-shot distils into.

Encoder: two 3x3 conv-BN-ReLU per level, 2x max-pool between levels. Decoder: bilinear upsampling to the skip's
exact size, concatenation, two 3x3 convs. Upsampling to the skip's size (not by a fixed factor) lets any input
size through, odd ones included, which keeps ONNX export with dynamic height/width simple. BatchNorm folds into
the convs at export time. Input: RGB in [-1, 1]; output: per-class logits at the input size.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from partseg.labels import Labels
from partseg.weights_io import read_safetensors, write_safetensors


@dataclass
class UNetConfig:
    num_classes: int = 10
    in_channels: int = 3
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # one entry per level

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels needs >= 2 positive entries (levels), got {self.channels}")
        self.channels = [int(c) for c in self.channels]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(**d)


class ConvBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or UNetConfig(**kwargs)
        self.cfg = cfg
        ch = cfg.channels
        self.down = nn.ModuleList([ConvBlock(cfg.in_channels, ch[0])] +
                                  [ConvBlock(ch[i - 1], ch[i]) for i in range(1, len(ch))])
        self.up = nn.ModuleList([ConvBlock(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(len(ch) - 1))])
        self.head = nn.Conv2d(ch[0], cfg.num_classes, 1)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def fold_batchnorm(model: UNet) -> UNet:
    """A copy for inference with every BatchNorm folded into the conv before it (same outputs, fewer ops)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for block in [*folded.down, *folded.up]:
        for i in range(0, len(block) - 1):
            if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                block[i + 1] = nn.Identity()
    return folded


def unet_stride(cfg: UNetConfig) -> int:
    """Height and width that pass every pooling level evenly (other sizes work too: decoding follows skip sizes)."""
    return 2 ** (len(cfg.channels) - 1)


UNET_FORMAT = "partseg.unet"


def save_unet(model: UNet, path: str | os.PathLike, labels: Labels | None = None,
              extra: dict[str, str] | None = None) -> Path:
    """Weights as safetensors with the config (and class names/colours) in the metadata, written atomically."""
    meta = {"format": UNET_FORMAT, "format_version": "1", "config": json.dumps(model.cfg.to_dict())}
    if labels is not None:
        meta["labels"] = labels.to_json()
    meta.update(extra or {})
    return write_safetensors(path, model.state_dict(), meta)


def resolve_unet_file(path: str | os.PathLike) -> Path:
    """A UNet file, or a training run folder: its best.safetensors, else its last model.safetensors."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = next((p for p in (path / "best.safetensors", path / "model.safetensors") if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{path}: a folder without best.safetensors or model.safetensors")
    return found


def load_unet(path: str | os.PathLike, device: str | torch.device = "cpu", with_meta: bool = False
              ) -> tuple[UNet, Labels | None] | tuple[UNet, Labels | None, dict[str, str]]:
    """(UNet in eval mode, its labels if stored[, the file's metadata]); strict key and shape checks name the file."""
    meta, sd = read_safetensors(path, UNET_FORMAT, "UNet")
    model = UNet(UNetConfig.from_dict(json.loads(meta["config"])))
    own = model.state_dict()
    bad = sorted(set(own) ^ set(sd)) or [k for k in sd if sd[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: weights do not match the stored UNet config (keys/shapes: {bad[:6]})")
    model.load_state_dict(sd)
    labels = Labels.from_json(meta["labels"]) if "labels" in meta else None
    if with_meta:
        return model.eval().to(device), labels, meta
    return model.eval().to(device), labels
