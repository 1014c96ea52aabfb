"""Key remapping for rosinality/stylegan2-pytorch generator state dicts.

The architecture is read from the tensor shapes (style dim, n_mlp, channel table, resolution), then every
key is renamed and reshaped into ours; any key left over or missing is an error, never silently dropped.
"""

from __future__ import annotations

import re

import torch

from partseg.gan.ops import fir_kernel
from partseg.gan.state import CheckpointFormatError
from partseg.gan.stylegan2 import GeneratorConfig


def looks_like_rosinality(sd: dict) -> bool:
    return "input.input" in sd and "conv1.conv.weight" in sd and "style.1.weight" in sd


def rosinality_config(sd: dict[str, torch.Tensor]) -> GeneratorConfig:
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    if n_mlp == 0:
        raise CheckpointFormatError("no mapping layers 'style.N.weight' found")
    w_dim, z_dim = sd["style.1.weight"].shape
    n_torgb = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    resolution = 4 * 2**n_torgb
    channels = {4: sd["input.input"].shape[1]}
    for j in range(n_torgb):
        channels[8 * 2**j] = sd[f"convs.{2 * j}.conv.weight"].shape[1]
    return GeneratorConfig(resolution=resolution, z_dim=z_dim, w_dim=w_dim, n_mlp=n_mlp, channels=channels)


def convert_rosinality(sd: dict[str, torch.Tensor],
                       latent_avg: torch.Tensor | None = None) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """rosinality g_ema state dict -> (our config, our state dict). Strict: every key must be used."""
    cfg = rosinality_config(sd)
    src = dict(sd)
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in src:
            raise CheckpointFormatError(f"rosinality checkpoint lacks key '{key}'")
        return src.pop(key)

    for i in range(cfg.n_mlp):
        out[f"mapping.layers.{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.layers.{i}.bias"] = take(f"style.{i + 1}.bias")
    out["synthesis.blocks.b4.const"] = take("input.input")[0]

    def styled_conv(src_prefix: str, dst_prefix: str) -> None:
        out[f"{dst_prefix}.weight"] = take(f"{src_prefix}.conv.weight")[0]
        out[f"{dst_prefix}.affine.weight"] = take(f"{src_prefix}.conv.modulation.weight")
        out[f"{dst_prefix}.affine.bias"] = take(f"{src_prefix}.conv.modulation.bias")
        out[f"{dst_prefix}.noise_strength"] = take(f"{src_prefix}.noise.weight").reshape(())
        out[f"{dst_prefix}.bias"] = take(f"{src_prefix}.activate.bias")
        _check_fir(src.pop(f"{src_prefix}.conv.blur.kernel", None), src_prefix)

    def to_rgb(src_prefix: str, dst_prefix: str) -> None:
        out[f"{dst_prefix}.weight"] = take(f"{src_prefix}.conv.weight")[0]
        out[f"{dst_prefix}.affine.weight"] = take(f"{src_prefix}.conv.modulation.weight")
        out[f"{dst_prefix}.affine.bias"] = take(f"{src_prefix}.conv.modulation.bias")
        out[f"{dst_prefix}.bias"] = take(f"{src_prefix}.bias").reshape(-1)
        _check_fir(src.pop(f"{src_prefix}.upsample.kernel", None), src_prefix)

    styled_conv("conv1", "synthesis.blocks.b4.conv1")
    to_rgb("to_rgb1", "synthesis.blocks.b4.torgb")
    layer_names = ["b4.conv1"]
    for j, res in enumerate(cfg.resolutions[1:]):
        styled_conv(f"convs.{2 * j}", f"synthesis.blocks.b{res}.conv0")
        styled_conv(f"convs.{2 * j + 1}", f"synthesis.blocks.b{res}.conv1")
        to_rgb(f"to_rgbs.{j}", f"synthesis.blocks.b{res}.torgb")
        layer_names += [f"b{res}.conv0", f"b{res}.conv1"]
    for k, name in enumerate(layer_names):
        out[f"synthesis.blocks.{name}.noise_const"] = take(f"noises.noise_{k}")[0, 0]
    if src:
        raise CheckpointFormatError(f"rosinality checkpoint has keys this converter does not know: "
                                    f"{sorted(src)[:10]}")
    if latent_avg is not None:
        out["mean_w"] = latent_avg.reshape(-1)
    return cfg, out


def _check_fir(kernel: torch.Tensor | None, where: str) -> None:
    """Only the standard [1,3,3,1] blur is implemented: refuse anything else rather than render wrongly."""
    if kernel is None:
        return
    ref = fir_kernel(gain=float(kernel.sum()))
    if kernel.shape != ref.shape or not torch.allclose(kernel.float(), ref, atol=1e-6):
        raise CheckpointFormatError(f"{where}: blur kernel is not the [1,3,3,1] FIR filter; not supported")
