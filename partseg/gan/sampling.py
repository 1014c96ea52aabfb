"""Reproducible sampling: every image is fully described by its z, ws, noise mode and noise seed.

Sample i of a run with seed S uses seed S + i for its z and its noise, so any single sample can be
regenerated later without regenerating the others, and the exact latents are stored next to the PNGs.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from partseg.data.samples import Samples
from partseg.gan.stylegan2 import Generator


def z_for_seed(seed: int, z_dim: int) -> torch.Tensor:
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(seed))


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


@torch.no_grad()
def sample(G, n: int, seed: int = 0, truncation: float = 1.0, noise_mode: str = "const",
           batch: int = 16, progress: bool = False) -> Samples:
    """n samples of any generator (our StyleGAN2 or a partseg.gan.interface.FewShotGAN)."""
    from partseg.gan.interface import as_fewshot_gan

    G = as_fewshot_gan(G)
    seeds = list(range(seed, seed + n))
    z = torch.cat([G.z_for_seed(s) for s in seeds])
    ws = torch.cat([G.latents_from_z(z[i:i + batch], truncation).cpu() for i in range(0, n, batch)])
    imgs = [G.render(ws[i:i + batch], seeds[i:i + batch], noise_mode)
            for i in tqdm(range(0, n, batch), desc="sampling", unit="batch", disable=not progress)]
    return Samples(torch.cat(imgs), z, ws, seeds, truncation, noise_mode)


