"""StyleGAN2 (Karras et al. 2020): the generator and the equalised layers it shares with the discriminator
(`partseg.gan.discriminator`).

Parameters are stored "equalised" (unit-variance weights, the He scale applied at run time), as both public
PyTorch implementations do, so their checkpoints copy across value for value. Block and layer names follow
the resolution they work at (`synthesis.blocks.b16.conv0`), which is also how features are named.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from partseg.gan.ops import bias_lrelu, fir_kernel, upfirdn2d

NOISE_MODES = ("const", "random", "none")


# ----------------------------------------------------------------------------------------------------------
# Configuration


def channel_table(resolution: int, channel_base: int = 16384, channel_max: int = 512) -> dict[int, int]:
    """Channels per resolution as min(channel_base / res, channel_max) (the stylegan2-ada convention)."""
    return {2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


def rosinality_channel_table(resolution: int, channel_multiplier: int = 2) -> dict[int, int]:
    """The channel table of the public rosinality/stylegan2-pytorch models (512 up to 32 px, then halving)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    m = channel_multiplier
    return {r: c if r <= 32 else c * m for r, c in base.items() if r <= resolution}


@dataclass
class GeneratorConfig:
    resolution: int = 64
    z_dim: int = 512
    w_dim: int = 512
    n_mlp: int = 8
    channels: dict[int, int] = field(default_factory=dict)  # empty -> channel_table(resolution)
    mapping_lr_mul: float = 0.01
    conv_clamp: float | None = None  # stylegan2-ada clamps activations to +-256; rosinality does not clamp
    img_channels: int = 3

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution)
        if log2 != int(log2) or not 8 <= self.resolution <= 1024:
            raise ValueError(f"resolution must be a power of two in [8, 1024], got {self.resolution}")
        if not self.channels:
            self.channels = channel_table(self.resolution)
        self.channels = {int(k): int(v) for k, v in self.channels.items()}
        missing = [r for r in self.resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channel table has no entry for resolutions {missing}")

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * int(math.log2(self.resolution)) - 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generator config fields: {sorted(unknown)}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------
# Equalised layers


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight ~ N(0, 1/lr_mul^2), scaled by lr_mul/sqrt(in)."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return bias_lrelu(F.linear(x, self.weight * self.weight_gain), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    """Conv layer with equalised learning rate, optional FIR-blurred 2x downsampling (discriminator)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activate: bool = True,
                 down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_ch * kernel * kernel)
        self.activate, self.down, self.kernel = activate, down, kernel
        if down:
            self.register_buffer("resample_filter", fir_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down:
            p = 4 - 2 + self.kernel - 1  # blur taps - factor + conv taps - 1
            x = upfirdn2d(x, self.resample_filter, pad=((p + 1) // 2, p // 2))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        if self.activate:
            return bias_lrelu(x, self.bias)
        return x if self.bias is None else x + self.bias.reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------------------
# Generator


class MappingNetwork(nn.Module):
    """z -> w: normalise z's second moment, then n_mlp equalised linear layers with leaky ReLU."""

    def __init__(self, z_dim: int, w_dim: int, n_mlp: int, lr_mul: float = 0.01):
        super().__init__()
        dims = [z_dim] + [w_dim] * n_mlp
        self.layers = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activate=True) for i in range(n_mlp)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ demodulation), optional 2x upsampling, noise, bias and leaky ReLU.

    Modulation is applied to the activations rather than the weights (x * s, shared conv, * demod), which is
    mathematically the per-sample modulated weight and lets one ordinary conv serve the whole batch.
    """

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.weight_gain = 1 / math.sqrt(in_ch * 9)
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        if up:
            self.register_buffer("resample_filter", fir_kernel(gain=4.0), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        s = self.affine(w)  # [N, in]
        weight = self.weight * self.weight_gain
        demod = torch.rsqrt((weight[None] * s[:, None, :, None, None]).square().sum(dim=(2, 3, 4)) + 1e-8)
        x = x * s[:, :, None, None].to(x.dtype)
        if self.up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            x = upfirdn2d(x, self.resample_filter, pad=(1, 1))
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=1)
        x = x * demod[:, :, None, None].to(x.dtype)
        if noise is None:
            if noise_mode == "const":
                noise = self.noise_const[None, None]
            elif noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        x = bias_lrelu(x, self.bias)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, no demodulation."""

    def __init__(self, in_ch: int, w_dim: int, img_channels: int = 3, conv_clamp: float | None = None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_ch)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w) * self.weight_gain
        x = F.conv2d(x * s[:, :, None, None].to(x.dtype), self.weight.to(x.dtype))
        x = x + self.bias.reshape(1, -1, 1, 1).to(x.dtype)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """One resolution: (const input at 4 px | upsampling conv0), conv1, ToRGB into the skip image."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, up=True, conv_clamp=conv_clamp)
            self.register_buffer("resample_filter", fir_kernel(gain=4.0), persistent=False)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_ch, w_dim, img_channels, conv_clamp)

    @property
    def layer_names(self) -> list[str]:
        return ["conv1"] if self.resolution == 4 else ["conv0", "conv1"]


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, 3, R, R]; optionally every layer's activation on the way."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.resolution, self.w_dim, self.num_ws = cfg.resolution, cfg.w_dim, cfg.num_ws
        blocks = {}
        for res in cfg.resolutions:
            in_ch = cfg.channels[res // 2] if res > 4 else cfg.channels[4]
            blocks[f"b{res}"] = SynthesisBlock(in_ch, cfg.channels[res], cfg.w_dim, res, cfg.img_channels,
                                               cfg.conv_clamp)
        self.blocks = nn.ModuleDict(blocks)

    @property
    def layer_names(self) -> list[str]:
        """Names of the modulated conv layers in forward order: 'b4.conv1', 'b8.conv0', 'b8.conv1', ..."""
        return [f"{name}.{ln}" for name, blk in self.blocks.items() for ln in blk.layer_names]

    @property
    def torgb_names(self) -> list[str]:
        return [f"{name}.torgb" for name in self.blocks]

    def layer_resolutions(self) -> dict[str, int]:
        return {n: int(n.split(".")[0][1:]) for n in self.layer_names + self.torgb_names}

    def layer_channels(self) -> dict[str, int]:
        out = {n: self.cfg.channels[r] for n, r in self.layer_resolutions().items()}
        out.update({n: self.cfg.img_channels for n in self.torgb_names})
        return out

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        noise: Sequence[torch.Tensor | None] | None = None,
        return_activations: bool | Sequence[str] = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Render images from per-layer latents.

        ws: [N, num_ws, w_dim] (W+), or [N, w_dim] (W, broadcast to every layer).
        noise_mode: 'const' uses the stored noise buffers (deterministic), 'random' draws new noise,
            'none' adds none. `noise`, a list with one tensor (or None) per layer, overrides it, e.g. for
            inversion, where the noise maps are optimised.
        return_activations: True for every layer, or a list of names (layer_names / torgb_names); then a
            (image, {name: activation}) pair is returned.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}] or [N, {self.w_dim}], "
                             f"got {list(ws.shape)}")
        n_layers = len(self.layer_names)
        if noise is not None and len(noise) != n_layers:
            raise ValueError(f"noise must hold {n_layers} entries (one per layer), got {len(noise)}")
        if return_activations is True:
            wanted = set(self.layer_names + self.torgb_names)
        else:
            wanted = set(return_activations or ())
        acts: dict[str, torch.Tensor] = {}

        x = img = None
        w_idx, layer_idx = 0, 0
        for name, blk in self.blocks.items():
            if blk.resolution == 4:
                x = blk.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
            for ln in blk.layer_names:
                layer = getattr(blk, ln)
                nz = noise[layer_idx] if noise is not None else None
                x = layer(x, ws[:, w_idx], noise_mode=noise_mode, noise=nz)
                if f"{name}.{ln}" in wanted:
                    acts[f"{name}.{ln}"] = x
                w_idx += 1
                layer_idx += 1
            y = blk.torgb(x, ws[:, w_idx])  # ToRGB shares its latent index with the next block's first conv
            if f"{name}.torgb" in wanted:
                acts[f"{name}.torgb"] = y
            img = y if img is None else upfirdn2d(img, blk.resample_filter, up=2, pad=(2, 1)) + y
        return (img, acts) if return_activations else img


class Generator(nn.Module):
    """StyleGAN2 generator: `mapping` (z -> w) and `synthesis` (ws -> image), plus the W mean for truncation."""

    def __init__(self, cfg: GeneratorConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or GeneratorConfig(**kwargs)
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.n_mlp, cfg.mapping_lr_mul)
        self.synthesis = SynthesisNetwork(cfg)
        self.register_buffer("mean_w", torch.zeros(cfg.w_dim))

    z_dim = property(lambda self: self.cfg.z_dim)
    w_dim = property(lambda self: self.cfg.w_dim)
    num_ws = property(lambda self: self.cfg.num_ws)
    resolution = property(lambda self: self.cfg.resolution)

    def truncate(self, w: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
        """Pull w (or ws) towards mean_w: mean + psi (w - mean); with ws, only the first `cutoff` layers."""
        if psi == 1:
            return w
        mean = self.mean_w.to(w.dtype)
        t = mean + psi * (w - mean)
        if cutoff is None or w.ndim == 2:
            return t
        return torch.cat([t[:, :cutoff], w[:, cutoff:]], dim=1)

    def ws_from_z(self, z: torch.Tensor, truncation: float = 1.0, z2: torch.Tensor | None = None,
                  inject_index: int | None = None) -> torch.Tensor:
        """z [N, z_dim] -> ws [N, num_ws, w_dim], with truncation and optional style mixing.

        Style mixing uses w(z) for layers [0, inject_index) and w(z2) for the rest.
        """
        w = self.truncate(self.mapping(z), truncation)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if z2 is not None:
            if inject_index is None or not 0 < inject_index < self.num_ws:
                raise ValueError(f"style mixing needs 0 < inject_index < {self.num_ws}, got {inject_index}")
            ws[:, inject_index:] = self.truncate(self.mapping(z2), truncation)[:, None]
        return ws

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise_mode: str = "const",
                z2: torch.Tensor | None = None, inject_index: int | None = None) -> torch.Tensor:
        return self.synthesis(self.ws_from_z(z, truncation, z2, inject_index), noise_mode=noise_mode)

    @torch.no_grad()
    def compute_mean_w(self, n: int = 4096, seed: int = 0, batch: int = 1024) -> torch.Tensor:
        """Set mean_w to the mean of mapping(z) over n random z (used by truncation)."""
        gen = torch.Generator().manual_seed(seed)
        dev = self.mean_w.device
        total = torch.zeros(self.w_dim, dtype=torch.float64, device=dev)
        for i in range(0, n, batch):
            z = torch.randn(min(batch, n - i), self.z_dim, generator=gen).to(dev)
            total += self.mapping(z).double().sum(0)
        self.mean_w.copy_((total / n).float())
        return self.mean_w
