"""Records of generated samples: PNGs plus their exact latents (latents.safetensors) and samples.json, so any
sample can be regenerated, annotated and turned back into features later."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from partseg.atomic import atomic_path, atomic_write_text
from partseg.images import save_png, to_uint8

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
