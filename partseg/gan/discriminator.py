"""The residual StyleGAN2 discriminator (Karras et al. 2020), built from the generator's equalised layers; only
GAN training needs it."""

from __future__ import annotations

import math

import torch
from torch import nn

from partseg.gan.stylegan2 import EqualConv2d, EqualLinear, channel_table


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsamples) plus a 1x1 downsampling skip."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activate=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv1(self.conv0(x)) + self.skip(x)) * (1 / math.sqrt(2))


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator with a minibatch standard-deviation layer; image -> one logit."""

    def __init__(self, resolution: int, channels: dict[int, int] | None = None, img_channels: int = 3,
                 mbstd_group: int = 4):
        super().__init__()
        channels = {int(k): v for k, v in (channels or channel_table(resolution)).items()}
        self.resolution, self.channels, self.mbstd_group = resolution, channels, mbstd_group
        self.from_rgb = EqualConv2d(img_channels, channels[resolution], 1)
        res = [2**i for i in range(int(math.log2(resolution)), 2, -1)]
        self.blocks = nn.ModuleList(DiscriminatorBlock(channels[r], channels[r // 2]) for r in res)
        c4 = channels[4]
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, activate=True)
        self.out = EqualLinear(c4, 1)

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append the std over groups of samples, averaged to one feature map, so D can see diversity."""
        n, c, h, w = x.shape
        g = min(self.mbstd_group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w).float()
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [n/g]
        y = y.to(x.dtype).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.from_rgb(img)
        for blk in self.blocks:
            x = blk(x)
        x = self.conv(self.minibatch_stddev(x))
        return self.out(self.fc(x.flatten(1)))
