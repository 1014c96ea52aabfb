"""Activations from any convolutional generator, read with forward hooks on named submodules.

Our StyleGAN2 hands its activations back itself; other generators (a DCGAN, a port of someone else's model)
do not. HookedGenerator records the outputs of the submodules you name during one forward pass, so that
partseg.features serves both alike. The hooks exist only while `activations` runs and are removed even when
the forward pass raises: nothing stays attached to the wrapped module.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn


class HookedGenerator:
    """Wraps `module` (z [N, z_dim] -> image [N, C, H, W]) and reads the outputs of the submodules `layers`.

    layers: names as in `module.named_modules()`, e.g. "body.2"; features are concatenated in this order.
    forward: how to call the module, `forward(module, z) -> image`; default `module(z)`. Use it for
        generators that need more arguments (a class label, a truncation value).
    """

    def __init__(self, module: nn.Module, layers: Sequence[str], z_dim: int,
                 forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None):
        if isinstance(layers, str) or not layers:
            raise ValueError("layers must be a non-empty list of submodule names")
        modules = dict(module.named_modules())
        unknown = [n for n in layers if n not in modules or n == ""]
        if unknown:
            valid = [n for n in modules if n]
            close = sorted({m for n in unknown for m in difflib.get_close_matches(n, valid, n=3)})
            hint = f"; close matches: {close}" if close else ""
            raise ValueError(f"unknown layer names {unknown}{hint}; the module has {len(valid)} named submodules, "
                             f"e.g. {valid[:8]}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layer names repeat: {list(layers)}")
        self.module, self.layers, self.z_dim = module, list(layers), z_dim
        self.forward = forward or (lambda m, z: m(z))
        self._modules = {n: modules[n] for n in self.layers}
        self._shapes: dict[str, tuple[int, int, int]] | None = None

    def activations(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One forward pass: (image, {layer: activation [N, C, H, W]}), in `layers` order."""
        acts: dict[str, torch.Tensor] = {}

        def hook_for(name: str):
            def hook(mod: nn.Module, inputs: tuple, output: object) -> None:
                if name in acts:
                    raise RuntimeError(f"layer {name!r} ran more than once in one forward pass (a module used "
                                       f"twice, like a shared activation?); hook a module that runs once")
                if not isinstance(output, torch.Tensor) or output.ndim != 4:
                    got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                    raise ValueError(f"layer {name!r} outputs {got}; features need a 4-D [N, C, H, W] map, "
                                     f"so hook a convolutional layer")
                acts[name] = output
            return hook

        handles = []
        try:
            for name, mod in self._modules.items():
                handles.append(mod.register_forward_hook(hook_for(name)))
            img = self.forward(self.module, z)
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in self.layers if n not in acts]
        if missing:
            raise RuntimeError(f"layers {missing} did not run during the forward pass")
        if not isinstance(img, torch.Tensor) or img.ndim != 4:
            raise ValueError(f"the generator must return an image [N, C, H, W], got "
                             f"{list(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__}")
        return img, {n: acts[n] for n in self.layers}

    def shapes(self) -> dict[str, tuple[int, int, int]]:
        """(channels, height, width) per layer, from one dry run on z = 0 in eval mode (then cached).

        Eval mode so that the dry run leaves batch-norm statistics alone; each submodule's mode is restored.
        """
        if self._shapes is None:
            modes = [(m, m.training) for m in self.module.modules()]
            first = next(itertools.chain(self.module.parameters(), self.module.buffers()), None)
            device = first.device if first is not None else torch.device("cpu")
            try:
                self.module.eval()
                with torch.no_grad():
                    _, acts = self.activations(torch.zeros(1, self.z_dim, device=device))
            finally:
                for m, training in modes:
                    m.training = training
            self._shapes = {n: tuple(a.shape[1:]) for n, a in acts.items()}
        return self._shapes
