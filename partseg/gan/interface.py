"""The generator interface of the few-shot pipeline: what annotating, head training, prediction and distillation
need from a GAN, so that any convolutional generator can stand in for our StyleGAN2.

A `FewShotGAN` samples latents for seeds, gives a feature source for latents (plus noise, where the generator
has any), and knows its resolution, its image range and a stable fingerprint of weights and configuration.
Inversion is an optional capability: our StyleGAN2 has it; other generators are refused by inversion with a
message that says how their users segment real images instead (a distilled UNet).

Latents are whatever the generator's features are computed from: W+ [N, num_ws, w_dim] for StyleGAN2, z of
any shape (e.g. [N, 100, 1, 1] for a DCGAN) otherwise. samples.json / latents.safetensors store them as 'ws'.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn

from partseg.gan.hooked import HookedGenerator
from partseg.gan.seeds import noise_for_samples, render_ws, z_for_seed
from partseg.gan.stylegan2 import Generator
from partseg.weights_io import weights_digest

PY_PREFIX = "py:"


class InversionUnsupported(ValueError):
    """Inversion was asked of a generator that has no inversion."""


class FewShotGAN:
    """Base of the adapters; every pipeline stage talks to a generator through these members only."""

    resolution: int
    z_shape: tuple[int, ...]  # one sample's z
    latent_shape: tuple[int, ...]  # one sample's latents (what features are computed from)
    image_range: tuple[float, float] = (-1.0, 1.0)
    can_invert: bool = False
    name: str = "generator"

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def z_for_seed(self, seed: int) -> torch.Tensor:
        """z [1, *z_shape] of sample `seed` (the same draw as our StyleGAN2's samples)."""
        return z_for_seed(seed, self.z_shape)

    def random_z(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, *self.z_shape, generator=gen)

    def latents_from_z(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        raise NotImplementedError

    def source(self, layers: str | Sequence[str] | None, noise_mode: str = "const", seeds: list[int] | None = None,
               noise: list[torch.Tensor] | None = None):
        """A partseg.features source. seeds: per-sample noise of 'random' mode; noise: explicit maps (inversion)."""
        raise NotImplementedError

    def render(self, latents: torch.Tensor, seeds: list[int], noise_mode: str = "const") -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] of latents (noise per seed where the generator has any)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def inversion_generator(self) -> Generator:
        raise InversionUnsupported(
            f"{self.name} cannot be inverted: GAN inversion needs our StyleGAN2 (its W space and noise maps). "
            f"Segment real images with a distilled UNet instead: `partseg distill --gan ... --head HEAD` then "
            f"`partseg predict IMAGES --unet RUN`; annotate generated samples (which carry their latents) only")

    def check_latents(self, latents: torch.Tensor, where: str) -> None:
        if tuple(latents.shape[1:]) != tuple(self.latent_shape):
            raise ValueError(f"{where} has shape {list(latents.shape)}, expected [N, "
                             f"{', '.join(map(str, self.latent_shape))}] for {self.name} (sampled from another GAN?)")


class StyleGAN2GAN(FewShotGAN):
    """Our StyleGAN2 (own, rosinality and NVIDIA checkpoints all load into it); latents are W+."""

    can_invert = True

    def __init__(self, G: Generator, name: str = "StyleGAN2"):
        self.G, self.name = G, name
        self.resolution, self.z_shape, self.latent_shape = G.resolution, (G.z_dim,), (G.num_ws, G.w_dim)

    @property
    def device(self) -> torch.device:
        return self.G.mean_w.device

    def latents_from_z(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        return self.G.ws_from_z(z.to(self.device), truncation)

    def source(self, layers, noise_mode="const", seeds=None, noise=None):
        from partseg.gan.sources import stylegan_source

        if noise is None and seeds is not None:
            noise = noise_for_samples(self.G, seeds, noise_mode)
        return stylegan_source(self.G, layers, noise_mode=noise_mode, noise=noise)

    @torch.no_grad()
    def render(self, latents, seeds, noise_mode="const"):
        return render_ws(self.G, latents, seeds, noise_mode)

    def fingerprint(self) -> str:
        from partseg.gan.checkpoints import generator_fingerprint

        return generator_fingerprint(self.G)

    def inversion_generator(self) -> Generator:
        return self.G


class HookedGAN(FewShotGAN):
    """Any module z [N, *z_shape] -> image [N, C, H, W], its features read with forward hooks on named layers.

    No noise and no mapping network: latents are z, and truncation scales z towards 0 (the usual trick for
    generators without a W space). The module is put in eval mode (batch norm uses its running statistics)."""

    def __init__(self, module: nn.Module, z_shape: Sequence[int], layers: Sequence[str] | None = None,
                 name: str = "hooked generator",
                 forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.module = module.eval().requires_grad_(False)
        self._call = forward or (lambda m, z: m(z))
        self.z_shape = self.latent_shape = tuple(int(d) for d in z_shape)
        self.layers, self.name = list(layers) if layers else None, name
        self.image_range = tuple(getattr(module, "image_range", (-1.0, 1.0)))
        with torch.no_grad():
            img = self._forward(torch.zeros(1, *self.z_shape, device=self.device))
        if img.shape[-1] != img.shape[-2]:
            raise ValueError(f"{name}: images must be square, got {list(img.shape[-2:])}")
        self.resolution = int(img.shape[-1])
        self._hooked: dict[tuple[str, ...], HookedGenerator] = {}

    @property
    def device(self) -> torch.device:
        first = next(iter([*self.module.parameters(), *self.module.buffers()]), None)
        return first.device if first is not None else torch.device("cpu")

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        img = self._call(self.module, z)
        if not isinstance(img, torch.Tensor) or img.ndim != 4 or img.shape[1] not in (1, 3):
            got = list(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"{self.name} must return images [N, 3 (or 1), H, W], got {got}")
        return img

    def _to_unit(self, img: torch.Tensor) -> torch.Tensor:
        lo, hi = self.image_range
        img = img if (lo, hi) == (-1.0, 1.0) else (img - lo) / (hi - lo) * 2 - 1
        return img.expand(-1, 3, -1, -1) if img.shape[1] == 1 else img

    def latents_from_z(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        return z.to(self.device) * truncation

    def _resolve_layers(self, layers: str | Sequence[str] | None) -> list[str]:
        if layers is None or layers in ("paper", "all"):
            if not self.layers:
                raise ValueError(f"{self.name}: name the layers to read features from (--layers a,b,c: names as "
                                 f"in module.named_modules())")
            return self.layers
        return [n.strip() for n in layers.split(",") if n.strip()] if isinstance(layers, str) else list(layers)

    def source(self, layers, noise_mode="const", seeds=None, noise=None):
        from partseg.gan.sources import hooked_source

        if noise is not None:
            raise ValueError(f"{self.name} has no noise maps")
        names = tuple(self._resolve_layers(layers))
        if names not in self._hooked:
            hg = HookedGenerator(self.module, names, self.z_shape[0],
                                 forward=lambda m, z: self._to_unit(self._forward(z.view(len(z), *self.z_shape))))
            self._hooked[names] = hg
        return hooked_source(self._hooked[names])

    @torch.no_grad()
    def render(self, latents, seeds, noise_mode="const"):
        return self._to_unit(self._forward(latents.to(self.device))).cpu()

    def fingerprint(self) -> str:
        """Hash of the module's class, z shape and every parameter and buffer (batch-norm statistics included)."""
        return weights_digest(json.dumps({"class": type(self.module).__qualname__, "z_shape": self.z_shape,
                                          "image_range": list(self.image_range)}), self.module.state_dict())


GeneratorLike = Generator | HookedGenerator | FewShotGAN  # what the pipeline's functions accept


def as_fewshot_gan(G: GeneratorLike) -> FewShotGAN:
    """A FewShotGAN for G: itself, our StyleGAN2 wrapped, or a HookedGenerator wrapped."""
    if isinstance(G, FewShotGAN):
        return G
    if isinstance(G, Generator):
        return StyleGAN2GAN(G)
    if isinstance(G, HookedGenerator):
        return HookedGAN(G.module, _find_z_shape(G.module, G.z_dim, "HookedGenerator", G.forward), G.layers,
                         forward=G.forward)
    raise TypeError(f"expected a generator (partseg StyleGAN2, HookedGenerator or FewShotGAN), got "
                    f"{type(G).__name__}")


def load_fewshot_gan(spec: str | os.PathLike, device: str | torch.device = "cpu", layers: Sequence[str] | None = None,
                     z_dim: int | None = None) -> FewShotGAN:
    """'py:package.module:callable' (a user's generator; layers name its feature layers) or any checkpoint
    `load_generator` reads (StyleGAN2; layers and z_dim do not apply)."""
    text = str(spec)
    if not text.startswith(PY_PREFIX):
        if layers or z_dim:
            raise ValueError(f"--layers and --z-dim apply to 'py:module:callable' generators, not to {text}")
        from partseg.gan.checkpoints import load_generator

        return StyleGAN2GAN(load_generator(spec, device=device), name=text)
    module = _call_factory(text).to(device)
    z_dim = z_dim or infer_z_dim(module, text)
    return HookedGAN(module, _find_z_shape(module, z_dim, text), list(layers) if layers else None, name=text)


def _call_factory(spec: str) -> nn.Module:
    target = spec[len(PY_PREFIX):]
    mod_name, sep, attr = target.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"--gan {spec}: expected py:package.module:callable (a function returning an nn.Module "
                         f"z -> image)")
    if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m` would: the user's own modules
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"--gan {spec}: cannot import module {mod_name!r} ({e})") from None
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"--gan {spec}: module {mod_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"--gan {spec}: {attr!r} is not callable")
    module = fn()
    if not isinstance(module, nn.Module):
        raise ValueError(f"--gan {spec}: {attr}() returned {type(module).__name__}, expected a torch nn.Module "
                         f"(z -> image)")
    return module


def infer_z_dim(module: nn.Module, where: str) -> int:
    """z_dim from the first layer with weights (Linear in_features, conv in_channels), else an error."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, nn.ConvTranspose2d | nn.Conv2d):
            return m.in_channels
    raise ValueError(f"--gan {where}: cannot tell the latent size from the module; pass --z-dim")


def _find_z_shape(module: nn.Module, z_dim: int, where: str,
                  forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> tuple[int, ...]:
    """z as [N, z_dim] or, for generators that start with a transposed conv, [N, z_dim, 1, 1]."""
    device = next(iter([*module.parameters(), *module.buffers()]), torch.zeros(())).device
    errors = []
    for shape in ((z_dim,), (z_dim, 1, 1)):
        was = [(m, m.training) for m in module.modules()]
        try:
            module.eval()
            with torch.no_grad():
                (forward or (lambda m, z: m(z)))(module, torch.zeros(1, *shape, device=device))
            return shape
        except Exception as e:  # noqa: BLE001 - any failure of the user's forward: try the next shape
            errors.append(f"z {[1, *shape]}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        finally:
            for m, training in was:
                m.training = training
    raise ValueError(f"--gan {where}: the module runs on neither z shape (--z-dim {z_dim}): {'; '.join(errors)}")
