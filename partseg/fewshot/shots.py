"""Annotated shots: what a few-shot head learns from, read from a data-set folder and checked.

Generated samples carry their recorded latents (samples.json + latents.safetensors) and are regenerated exactly;
annotated real images (recorded as real, or a folder without samples.json) get a latent and noise by GAN
inversion. Every way the index can be wrong is reported with the file, the field and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from partseg.data.dataset import load_dataset, load_images, read_mask
from partseg.fewshot.invert import InversionConfig, invert
from partseg.gan.interface import FewShotGAN, GeneratorLike, as_fewshot_gan
from partseg.labels import Labels


@dataclass
class Shots:
    """Annotated samples: latents, masks, how to regenerate their features.

    Generated samples carry their recorded latents (and noise via seed + noise mode); annotated real images get
    latents and noise maps by GAN inversion (`noise[i]` then holds that shot's optimised noise)."""

    names: list[str]
    ws: torch.Tensor  # [K, num_ws, w_dim]
    seeds: list[int | None]
    noise_mode: str
    masks: torch.Tensor  # [K, H, W] long, 255 = ignore
    labels: Labels
    noise: list[list[torch.Tensor] | None] | None = None
    real: list[bool] | None = None

    def subset(self, idx: list[int]) -> Shots:
        """The shots at positions idx (e.g. the first k of an annotation set), with their noise and provenance."""
        pick = [self.noise[i] for i in idx] if self.noise is not None else None
        return Shots([self.names[i] for i in idx], self.ws[idx], [self.seeds[i] for i in idx], self.noise_mode,
                     self.masks[idx], self.labels, pick, [self.real[i] for i in idx] if self.real is not None else None)


def _read_index(root: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """samples.json and its latents, checked: errors name the file, the field and what was expected."""
    index_path = root / "samples.json"
    if not index_path.exists():
        return {"samples": []}, {}
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{index_path}: not valid JSON ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("samples"), list):
        raise ValueError(f"{index_path}: field 'samples' is missing; expected a list of samples")
    for i, s in enumerate(index["samples"]):
        if not isinstance(s, dict) or not isinstance(s.get("file"), str):
            raise ValueError(f"{index_path}: samples[{i}] has no 'file'; expected {{'file': NAME, 'seed': ..., "
                             f"'index': ...}}")
    if not index.get("latents"):
        return index, {}
    lat_path = root / index["latents"]
    if not lat_path.is_file():
        raise FileNotFoundError(f"{index_path}: field 'latents' names {lat_path}, which does not exist")
    try:
        lat = load_file(str(lat_path))
    except Exception as e:  # noqa: BLE001 - safetensors' errors do not name the file
        raise ValueError(f"{lat_path}: not a readable safetensors file ({e}); expected the latents written with "
                         f"the samples (tensor 'ws' [N, num_ws, w_dim])") from None
    ws = lat.get("ws")
    if ws is None or ws.ndim < 2:
        got = f"shape {list(ws.shape)}" if ws is not None else f"no such tensor (has {sorted(lat)})"
        raise ValueError(f"{lat_path}: field 'ws' is {got}; expected a tensor [N, ...] of latents (StyleGAN2: "
                         f"[N, num_ws, w_dim])")
    return index, lat


def _latent_row(s: dict, index_path: Path, lat: dict[str, torch.Tensor],
                G: FewShotGAN | None) -> torch.Tensor:
    """The recorded latent of generated sample `s`, with every way it can be wrong reported."""
    if "ws" not in lat:
        raise ValueError(f"{index_path}: sample {s['file']} has a latent 'index' but field 'latents' names no "
                         f"file; expected 'latents': 'latents.safetensors'")
    rows = lat["ws"].shape[0]
    i = s.get("index")
    if not isinstance(i, int) or not 0 <= i < rows:
        raise ValueError(f"{index_path}: sample {s['file']} has 'index' {i!r}, but the latents file has {rows} rows "
                         f"(field 'ws'); expected an index in 0..{rows - 1} (samples.json and latents.safetensors "
                         f"from different exports?)")
    if not isinstance(s.get("seed"), int):
        raise ValueError(f"{index_path}: sample {s['file']} has 'seed' {s.get('seed')!r}; expected an integer "
                         f"(its noise is regenerated from it)")
    if G is not None:
        G.check_latents(lat["ws"], f"{index_path}: field 'ws' of the latents")
    return lat["ws"][i]


def shots_to_invert(root: str | os.PathLike) -> int:
    """How many annotated images of a shots folder have no recorded latent (and so need GAN inversion)."""
    root = Path(root)
    _, items = load_dataset(root)
    index, _ = _read_index(root)
    by_name = {Path(s["file"]).stem: s for s in index["samples"]}
    return sum(_needs_inversion(by_name.get(name)) for name, _, _ in items)


def _needs_inversion(s: dict | None) -> bool:
    """A shot without a recorded latent: not in samples.json, recorded as real, or without a latent index."""
    return s is None or bool(s.get("real")) or s.get("index") is None


def load_shots(root: str | os.PathLike, G: GeneratorLike | None = None,
               inversion: InversionConfig | None = None, progress: bool = False) -> Shots:
    """A data-set folder of annotated samples. Generated ones need their latents (samples.json +
    latents.safetensors); real ones (recorded as real, or a folder without samples.json) are inverted into G
    (a generator without inversion refuses them)."""
    root = Path(root)
    G = as_fewshot_gan(G) if G is not None else None
    labels, items = load_dataset(root)
    index_path = root / "samples.json"
    index, lat = _read_index(root)
    by_name = {Path(s["file"]).stem: s for s in index["samples"]}
    names, ws, seeds, masks, real, to_invert = [], [], [], [], [], []
    for name, img_path, mask_path in items:
        s = by_name.get(name)
        if index_path.exists() and s is None:
            raise ValueError(f"{img_path}: image is not listed in {index_path} (neither a generated sample with a "
                             f"latent nor a real image)")
        names.append(name)
        masks.append(torch.from_numpy(read_mask(mask_path, labels, img_path)).long())
        is_real = _needs_inversion(s)
        real.append(is_real)
        ws.append(None if is_real else _latent_row(s, index_path, lat, G))
        seeds.append(None if is_real else int(s["seed"]))
        if is_real:
            to_invert.append(len(names) - 1)
    if not names:
        raise ValueError(f"{root}: no annotated images")
    noise: list = [None] * len(names)
    if to_invert:
        if G is None:
            raise ValueError(f"{root}: {len(to_invert)} annotated real images need GAN inversion; pass the generator")
        try:
            inverter = G.inversion_generator()
        except ValueError as e:
            raise type(e)(f"{root}: {len(to_invert)} annotated images have no recorded latent (real images?), "
                          f"e.g. {items[to_invert[0]][1]}; {e}") from None
        images = load_images([items[i][1] for i in to_invert], G.resolution)
        inv = invert(inverter, images, inversion, progress=progress)
        for j, i in enumerate(to_invert):
            ws[i] = inv.ws[j].cpu()
            noise[i] = [t[j:j + 1].cpu() for t in inv.noise]
    return Shots(names, torch.stack(ws), seeds, index.get("noise_mode") or "const", torch.stack(masks), labels,
                 noise if to_invert else None, real)


def shots_digest(shots: Shots) -> str:
    """A short hash of what the head learns from (latents, noise, masks, labels): a resumed run must see the same."""
    h = hashlib.sha256(json.dumps([shots.names, shots.seeds, shots.noise_mode, shots.labels.to_json()]).encode())
    for t in [shots.ws, shots.masks, *(n for ns in (shots.noise or []) if ns for n in ns)]:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
