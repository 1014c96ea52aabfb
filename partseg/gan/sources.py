"""Feature sources: which activations of a generator are read as features, their shapes, and one forward pass.

A source is what `partseg.features` turns into per-pixel vectors. It lives with the generators because choosing
layers and running the hooked forward pass is generator knowledge; resizing and stacking is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from partseg.gan.hooked import HookedGenerator


class FeatureSource(Protocol):
    """What the feature functions need from a generator; `layers` fixes the channel order."""

    layers: list[str]
    channels: dict[str, int]
    resolutions: dict[str, int]

    def activations(self, latents: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def default_layers(G: nn.Module, selection: str = "paper", include_torgb: bool = False) -> list[str]:
    """Layer names of our StyleGAN2 in forward order.

    "paper": every modulated conv except the 4x4 `b4.conv1`, as the paper's code reads them; "all": every
    modulated conv. include_torgb adds the ToRGB outputs of the same blocks, after their convs.
    """
    synthesis = getattr(G, "synthesis", G)
    if selection not in ("paper", "all"):
        raise ValueError(f"selection must be 'paper' or 'all', got {selection!r}")
    res = synthesis.layer_resolutions()
    return [n for n in _forward_order(synthesis)
            if (include_torgb or not n.endswith("torgb")) and (selection == "all" or res[n] > 4)]


def _forward_order(synthesis: nn.Module) -> list[str]:
    """All feature names, each block's convs followed by its ToRGB."""
    blocks = {}
    for name in synthesis.layer_names + synthesis.torgb_names:
        blocks.setdefault(name.split(".")[0], []).append(name)
    return [n for names in blocks.values() for n in names]


@dataclass
class StyleGANSource:
    """Our StyleGAN2. Latents are ws [N, num_ws, w_dim] (or [N, w_dim]); noise as in SynthesisNetwork.forward
    (`noise`, one map per conv layer, overrides `noise_mode`: inversion optimises these)."""

    synthesis: nn.Module
    layers: list[str]
    noise_mode: str = "const"
    noise: Sequence[torch.Tensor | None] | None = None

    @property
    def channels(self) -> dict[str, int]:
        ch = self.synthesis.layer_channels()
        return {n: ch[n] for n in self.layers}

    @property
    def resolutions(self) -> dict[str, int]:
        res = self.synthesis.layer_resolutions()
        return {n: res[n] for n in self.layers}

    def activations(self, latents: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.synthesis(latents, noise_mode=self.noise_mode, noise=self.noise, return_activations=self.layers)


def stylegan_source(G: nn.Module, layers: str | Sequence[str] | None = None, include_torgb: bool = False,
                    noise_mode: str = "const", noise: Sequence[torch.Tensor | None] | None = None) -> StyleGANSource:
    """Features of our StyleGAN2 (a Generator or its SynthesisNetwork).

    layers: None or "paper" (the paper's selection), "all", or a list of names from `layer_names` /
    `torgb_names` (or one comma-separated string of them), used in the order given.
    """
    synthesis = getattr(G, "synthesis", G)
    if isinstance(layers, str) and layers not in ("paper", "all"):  # "b64.conv1,b128.conv1" (a config field)
        layers = [n.strip() for n in layers.split(",") if n.strip()]
    if layers is None or isinstance(layers, str):
        names = default_layers(synthesis, layers or "paper", include_torgb)
    else:
        if include_torgb:
            raise ValueError("include_torgb applies to 'paper' and 'all'; with a list, name the ToRGB layers in it")
        names = list(layers)
        valid = _forward_order(synthesis)
        unknown = [n for n in names if n not in valid]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"bad layer list {names} (unknown: {unknown}); valid names: {valid}")
    return StyleGANSource(synthesis, names, noise_mode, noise)


@dataclass
class HookedSource:
    """A HookedGenerator: latents are z [N, z_dim]. Shapes come from one dry run."""

    generator: HookedGenerator
    layers: list[str]
    channels: dict[str, int]
    resolutions: dict[str, int]

    def activations(self, latents: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.generator.activations(latents)


def hooked_source(hg: HookedGenerator) -> HookedSource:
    """Features of any convolutional generator wrapped in a HookedGenerator (square maps only)."""
    shapes = hg.shapes()
    not_square = {n: s for n, s in shapes.items() if s[1] != s[2]}
    if not_square:
        raise ValueError(f"pixel features need square maps; these are not: {not_square}")
    return HookedSource(hg, list(hg.layers), {n: s[0] for n, s in shapes.items()}, {n: s[1] for n, s in shapes.items()})
