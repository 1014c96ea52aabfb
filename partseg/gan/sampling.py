"""Reproducible sampling: every image is fully described by its z, ws, noise mode and noise seed.

Sample i of a run with seed S uses seed S + i for its z and its noise, so any single sample can be
regenerated later without regenerating the others, and the exact latents are stored next to the PNGs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import atomic_path, atomic_write_text
from .stylegan2 import Generator

LATENTS_FILE = "latents.safetensors"
INDEX_FILE = "samples.json"


@dataclass
class Samples:
    images: torch.Tensor  # [N, 3, H, W] float, generator range
    z: torch.Tensor  # [N, z_dim] (other generators: [N, *z_shape])
    ws: torch.Tensor  # [N, num_ws, w_dim]: the latents the features come from (other generators: their z)
    seeds: list[int]
    truncation: float
    noise_mode: str


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
    from .interface import as_fewshot_gan

    G = as_fewshot_gan(G)
    seeds = list(range(seed, seed + n))
    z = torch.cat([G.z_for_seed(s) for s in seeds])
    ws = torch.cat([G.latents_from_z(z[i:i + batch], truncation).cpu() for i in range(0, n, batch)])
    imgs = [G.render(ws[i:i + batch], seeds[i:i + batch], noise_mode)
            for i in tqdm(range(0, n, batch), desc="sampling", unit="batch", disable=not progress)]
    return Samples(torch.cat(imgs), z, ws, seeds, truncation, noise_mode)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8 (clipped)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, cols: int | None = None) -> Image.Image:
    arr = to_uint8(images)
    n, h, w, _ = arr.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, a in enumerate(arr):
        grid[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = a
    return Image.fromarray(grid)


def save_png(img: Image.Image, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def sample_name(seed: int) -> str:
    return f"seed{seed:06d}"


def save_samples(s: Samples, out: str | os.PathLike, generator: str = "", subdir: str = "") -> list[Path]:
    """PNGs plus latents.safetensors (z, ws) and samples.json (file, seed, truncation, noise mode).

    subdir: put the PNGs in out/subdir (the data-set layout uses "images"); samples.json names them relative
    to out.
    """
    out = Path(out)
    (out / subdir).mkdir(parents=True, exist_ok=True)
    files = []
    for seed, a in zip(s.seeds, to_uint8(s.images), strict=True):
        path = out / subdir / f"{sample_name(seed)}.png"
        save_png(Image.fromarray(a), path)
        files.append(path)
    with atomic_path(out / LATENTS_FILE) as tmp:
        save_file({"z": s.z.contiguous(), "ws": s.ws.contiguous(), "seeds": torch.tensor(s.seeds)}, str(tmp))
    index = {"generator": generator, "truncation": s.truncation, "noise_mode": s.noise_mode,
             "latents": LATENTS_FILE,
             "samples": [{"file": f.relative_to(out).as_posix(), "seed": sd, "index": i}
                         for i, (f, sd) in enumerate(zip(files, s.seeds, strict=True))]}
    atomic_write_text(json.dumps(index, indent=1), out / INDEX_FILE)
    return files


def load_samples_record(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    folder = Path(folder)
    index_path = folder / INDEX_FILE
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} not found: not a folder written by `partseg gan sample`")
    index = json.loads(index_path.read_text())
    return index, load_file(str(folder / index.get("latents", LATENTS_FILE)))
