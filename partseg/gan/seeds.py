"""What a sample's seed means: its z and, in 'random' noise mode, our StyleGAN2's per-layer noise maps.

Sample i of a run with seed S uses seed S + i for its z and its noise, so any single sample can be regenerated
later without the others. Used by the generator interface and by sampling (which imports the interface).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from partseg.gan.stylegan2 import Generator


def z_for_seed(seed: int, z_shape: int | Sequence[int]) -> torch.Tensor:
    """z [1, *z_shape] of sample `seed`: the draw every generator's sample `seed` uses."""
    shape = (z_shape,) if isinstance(z_shape, int) else tuple(z_shape)
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))


def noise_for_seed(G: Generator, seed: int) -> list[torch.Tensor]:
    """The per-layer noise maps that sample `seed` uses in 'random' noise mode."""
    gen = torch.Generator().manual_seed(seed + 0x5EED)
    res = G.synthesis.layer_resolutions()
    return [torch.randn(1, 1, res[n], res[n], generator=gen) for n in G.synthesis.layer_names]


def noise_for_samples(G: Generator, seeds: list[int], noise_mode: str) -> list[torch.Tensor] | None:
    """The explicit per-layer noise of a batch of samples: per-seed maps in 'random' mode, else None (the
    synthesis network then uses its stored maps ('const') or none)."""
    if noise_mode != "random":
        return None
    dev = G.mean_w.device
    per = [noise_for_seed(G, s) for s in seeds]
    return [torch.cat([p[i] for p in per]).to(dev) for i in range(len(per[0]))]


@torch.no_grad()
def render_ws(G: Generator, ws: torch.Tensor, seeds: list[int], noise_mode: str) -> torch.Tensor:
    """Render ws with per-sample noise ('random' noise comes from each sample's seed)."""
    noise = noise_for_samples(G, seeds, noise_mode)
    return G.synthesis(ws.to(G.mean_w.device), noise_mode=noise_mode, noise=noise).cpu()
