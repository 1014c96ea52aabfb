"""Pure-PyTorch resampling and activation ops for StyleGAN2.

Written from the definitions (zero-insertion upsampling, FIR filtering, decimation), so they run on any device
with no compiled extension. Slower than fused CUDA kernels, but exact and portable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_GAIN = math.sqrt(2.0)


def fir_kernel(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1), gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum to `gain`."""
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative crops), filter with `kernel`, then decimate.

    The same padding applies to both axes. `kernel` is applied as a true convolution (flipped), which for the
    symmetric kernels StyleGAN uses is the same as correlation.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[2], x.shape[3]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    k = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, k, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def bias_lrelu(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float = 0.2) -> torch.Tensor:
    """Add a per-channel bias, leaky ReLU, multiply by sqrt(2) to keep the signal's variance."""
    if bias is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + bias.reshape(shape).to(x.dtype)
    return F.leaky_relu(x, negative_slope) * LRELU_GAIN
