"""Reproducible sampling: every image is fully described by its z, ws, noise mode and noise seed (what a seed
means is in `partseg.gan.seeds`, re-exported here), and the exact latents are stored next to the PNGs.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from partseg.data.samples import Samples
from partseg.gan.interface import as_fewshot_gan
from partseg.gan.seeds import noise_for_samples, noise_for_seed, render_ws, z_for_seed

__all__ = ["noise_for_samples", "noise_for_seed", "render_ws", "sample", "z_for_seed"]


@torch.no_grad()
def sample(G, n: int, seed: int = 0, truncation: float = 1.0, noise_mode: str = "const",
           batch: int = 16, progress: bool = False) -> Samples:
    """n samples of any generator (our StyleGAN2 or a partseg.gan.interface.FewShotGAN)."""
    G = as_fewshot_gan(G)
    seeds = list(range(seed, seed + n))
    z = torch.cat([G.z_for_seed(s) for s in seeds])
    ws = torch.cat([G.latents_from_z(z[i:i + batch], truncation).cpu() for i in range(0, n, batch)])
    imgs = [G.render(ws[i:i + batch], seeds[i:i + batch], noise_mode)
            for i in tqdm(range(0, n, batch), desc="sampling", unit="batch", disable=not progress)]
    return Samples(torch.cat(imgs), z, ws, seeds, truncation, noise_mode)


