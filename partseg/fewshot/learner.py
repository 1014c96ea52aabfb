"""Few-shot training: annotated generated samples (their latents + masks) -> a head on the GAN's pixel features.

The paper's loop: for each shot, regenerate the GAN features from its recorded latents (and noise), then fit
a head with Adam and cross-entropy. CNN heads see whole feature maps (one shot per step); MLP heads see random
pixels of all shots per step. When the maps do not fit the memory budget (`partseg.fewshot.memory`), steps read
crops or pixels from a cache of the generator's layers instead (`partseg.fewshot.crops`), and prediction runs
by tiles (`partseg.fewshot.tiled`). The head file records everything needed to use it again and to refuse misuse:
the GAN fingerprint, layers, feature size, resize mode, noise mode and labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from partseg.atomic import atomic_torch_save
from partseg.data.dataset import load_dataset, load_images, read_mask
from partseg.features import feature_channels, pixel_features
from partseg.fewshot.crops import CachedShots, masks_at, shot_loss, shot_source
from partseg.fewshot.heads import Ensemble, HeadConfig
from partseg.fewshot.invert import InversionConfig, invert
from partseg.fewshot.memory import budget_bytes, head_margin, plan_prediction, plan_training
from partseg.fewshot.tiled import predict_bounded
from partseg.gan.interface import FewShotGAN, GeneratorLike, as_fewshot_gan
from partseg.labels import IGNORE, Labels
from partseg.runs import clean_stale_tmp, load_checkpoint, refuse_other_settings
from partseg.weights_io import read_safetensors, write_safetensors

HEAD_FORMAT = "partseg.head"
HEAD_TRAIN_FORMAT = "partseg.head.train"


@dataclass
class FewShotConfig:
    head: str = "cnn"
    steps: int = 0  # 0 -> 600 for cnn, 1000 for mlp
    lr: float = 1e-3
    weight_decay: float = 1e-3
    ensemble: int = 1
    pixels_per_step: int = 2048  # mlp
    layers: str = "paper"
    size: int = 0  # feature map size; 0 -> the generator's resolution
    mode: str = "bilinear"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = 600 if self.head == "cnn" else 1000


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


def shot_features(G: GeneratorLike, shots: Shots, cfg: FewShotConfig,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[str]]:
    """[K, C, S, S] features of every shot, computed one shot at a time."""
    G = as_fewshot_gan(G)
    out = []
    for i in range(len(shots.names)):
        src = shot_source(G, shots, cfg, i)
        _, f = pixel_features(src, shots.ws[i:i + 1].to(G.device), size=cfg.size or None, mode=cfg.mode, dtype=dtype)
        out.append(f.cpu())
    return torch.cat(out), src.layers


class _WholeMaps:
    """Every shot's whole feature map in memory: the path of every result before the memory budget existed."""

    def __init__(self, G: FewShotGAN, shots: Shots, cfg: FewShotConfig):
        self.feats, self.layers = shot_features(G, shots, cfg)
        self.kind, self.pixels, self.masks = cfg.head, cfg.pixels_per_step, shots.masks
        self.size, self.channels = self.feats.shape[-1], self.feats.shape[1]
        self.flat_m = masks_at(shots.masks, self.size).reshape(-1)
        self.valid = (self.flat_m != IGNORE).nonzero()[:, 0]
        if len(self.valid) == 0:
            raise ValueError("the shots have no labelled pixels")
        if self.kind == "mlp":  # [K * S * S, C]: a copy of the maps, so only for the MLP
            self.flat_f = self.feats.permute(0, 2, 3, 1).reshape(-1, self.channels)

    def loss(self, member: torch.nn.Module, gen: torch.Generator) -> torch.Tensor:
        if self.kind == "cnn":
            i = int(torch.randint(len(self.feats), (1,), generator=gen))
            x, y = self.feats[i:i + 1], self.masks[i:i + 1]
            if torch.rand((), generator=gen) < 0.5:  # mirrored features and labels: a free second view
                x, y = x.flip(-1), y.flip(-1)
            return shot_loss(member(x), y)
        pick = self.valid[torch.randint(len(self.valid), (self.pixels,), generator=gen)]
        return F.cross_entropy(member(self.flat_f[pick]), self.flat_m[pick])


def shots_digest(shots: Shots) -> str:
    """A short hash of what the head learns from (latents, noise, masks, labels): a resumed run must see the same."""
    h = hashlib.sha256(json.dumps([shots.names, shots.seeds, shots.noise_mode, shots.labels.to_json()]).encode())
    for t in [shots.ws, shots.masks, *(n for ns in (shots.noise or []) if ns for n in ns)]:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_head(G: GeneratorLike, shots: Shots, cfg: FewShotConfig, progress: bool = True,
               checkpoint: str | os.PathLike | None = None, ckpt_every: int = 100,
               memory: float | str | None = None) -> FewShotHead:
    """Fit a head (or an ensemble, each member from its own seed) to the shots; deterministic on CPU.

    checkpoint: a file the training state is written to (atomically) every `ckpt_every` steps; if it exists,
    training resumes from it and ends with the weights an uninterrupted run would have. The caller removes it
    once the head is saved. A checkpoint of other settings or other shots is refused with the differences.
    memory: budget in GB for feature maps and caches (None / 'auto': half the available memory); whole maps
    when they fit, else crops (cnn) or pixels (mlp) from a cache of the shots' layers (partseg.fewshot.crops).
    """
    t0 = time.time()
    G = as_fewshot_gan(G)
    plan, margin = _train_plan(G, shots, cfg, memory)
    data = _WholeMaps(G, shots, cfg) if plan.full else CachedShots(G, shots, cfg, plan, margin)
    size, layers = data.size, data.layers
    hcfg = HeadConfig(kind=cfg.head, in_channels=data.channels, num_classes=len(shots.labels))
    torch.manual_seed(cfg.seed)
    ens = Ensemble(hcfg, cfg.ensemble)
    gen = torch.Generator().manual_seed(cfg.seed)
    settings = {**asdict(cfg), "shots": shots_digest(shots), "gan_fingerprint": G.fingerprint()}
    if not plan.full:  # crops or pixels from a cache: a resumed run must take the same path
        settings["memory_plan"] = plan.describe()
    ckpt = _resume_head(checkpoint, settings)
    start_member, start_step = (ckpt["member"], ckpt["step"]) if ckpt else (0, 0)
    if ckpt:
        ens.load_state_dict(ckpt["ensemble"])
        gen.set_state(ckpt["gen"])

    def save(member_i: int, next_step: int, opt=None, sched=None) -> None:
        atomic_torch_save({"format": HEAD_TRAIN_FORMAT, "settings": settings, "member": member_i, "step": next_step,
                           "ensemble": ens.state_dict(), "gen": gen.get_state(), "rng": torch.get_rng_state(),
                           "opt": opt and opt.state_dict(), "sched": sched and sched.state_dict()}, checkpoint)

    bar = tqdm(total=cfg.steps * len(ens.members), initial=start_member * cfg.steps + start_step,
               desc=f"train {cfg.head} head", disable=not progress)
    for m_i, member in enumerate(ens.members):
        if m_i < start_member:
            continue
        torch.manual_seed(cfg.seed * 1000 + m_i)
        member.train()
        opt = torch.optim.Adam(member.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr * 0.05)
        first = 0
        if ckpt and m_i == start_member and ckpt["opt"] is not None:
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
            torch.set_rng_state(ckpt["rng"])
            first = start_step
        for step in range(first, cfg.steps):
            loss = data.loss(member, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if checkpoint is not None and (step + 1) % ckpt_every == 0 and step + 1 < cfg.steps:
                save(m_i, step + 1, opt, sched)
        member.eval()
        if checkpoint is not None:  # this member is done: a resume starts the next one
            save(m_i + 1, 0)
    bar.close()
    meta = {"gan_fingerprint": G.fingerprint(), "layers": layers, "size": size, "mode": cfg.mode,
            "noise_mode": shots.noise_mode, "train_config": asdict(cfg), "shots": shots.names,
            "train_seconds": round(time.time() - t0, 1)}
    if not plan.full:
        meta["memory_plan"] = plan.describe()
    return FewShotHead(ens.eval(), shots.labels, meta)


def _train_plan(G: FewShotGAN, shots: Shots, cfg: FewShotConfig, memory: float | str | None):
    """The memory plan (whole maps, or crops / pixels from a cache) and the head's margin."""
    src = shot_source(G, shots, cfg, 0)
    size = cfg.size or max(src.resolutions[n] for n in src.layers)
    with torch.random.fork_rng(devices=[]):  # a throwaway head, only to read its margin: no RNG draws leak
        margin = head_margin(Ensemble(HeadConfig(kind=cfg.head, in_channels=1, num_classes=2)))
    return plan_training(src, len(shots.names), size, cfg.head, budget_bytes(memory), margin,
                         cfg.pixels_per_step), margin


def _resume_head(checkpoint: str | os.PathLike | None, settings: dict) -> dict | None:
    if checkpoint is None:
        return None
    checkpoint = Path(checkpoint)
    clean_stale_tmp(checkpoint.parent, [checkpoint.name])
    if not checkpoint.exists():
        return None
    ckpt = load_checkpoint(checkpoint, HEAD_TRAIN_FORMAT, "head training")
    refuse_other_settings(checkpoint, ckpt["settings"], settings,
                          hint=f"delete {checkpoint} to start over, or train with the settings and shots it has")
    return ckpt


class FewShotHead:
    """A trained head plus what it needs to be applied: which GAN, which layers, which feature size."""

    memory: float | str | None = None  # predict_ws's budget in GB when not given there (None: automatic)

    def __init__(self, ensemble: Ensemble, labels: Labels, meta: dict):
        self.ensemble, self.labels, self.meta = ensemble, labels, meta

    def check_generator(self, G: GeneratorLike, where: str = "head") -> None:
        fp = as_fewshot_gan(G).fingerprint()
        if fp != self.meta["gan_fingerprint"]:
            raise ValueError(f"{where} was trained on the features of another GAN (fingerprint "
                             f"{self.meta['gan_fingerprint']}, this one is {fp}); train a head for this GAN")

    @torch.no_grad()
    def predict_ws(self, G: GeneratorLike, ws: torch.Tensor, noise: list | None = None,
                   noise_mode: str | None = None, seeds: list[int] | None = None, memory: float | str | None = None,
                   tile: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [N, 3, H, W], log-probabilities [N, K, S, S]) for latents ws (noise: explicit maps, or
        seeds: each sample's own noise in 'random' mode; neither: the noise mode's default).

        memory: GB for feature maps (None: `self.memory`, else 'auto', half the available memory): the whole
        batch's maps when they fit, else fewer samples per pass, else tiles (`tile` forces tiles of that size).
        Tiles give the whole-map result up to float rounding (partseg.fewshot.tiled)."""
        G = as_fewshot_gan(G)
        mode_ = noise_mode or self.meta["noise_mode"]

        def source(i: int = 0, j: int | None = None):
            part = None if noise is None else [t[i:j] if t.shape[0] == len(ws) else t for t in noise]
            return G.source(self.meta["layers"], noise_mode=mode_, seeds=None if seeds is None else seeds[i:j],
                            noise=part)

        src, size, margin = source(), self.meta["size"], head_margin(self.ensemble)
        plan = plan_prediction(src, len(ws), size, margin, self.ensemble.cfg.num_classes,
                               budget_bytes(memory if memory is not None else self.memory), tile)
        if not plan.full:
            return predict_bounded(self.ensemble, source, ws, size, self.meta["mode"], plan, margin)
        img, feats = pixel_features(src, ws, size=size, mode=self.meta["mode"])
        return img, F.log_softmax(self.ensemble(feats), dim=1)

    def save(self, path: str | os.PathLike) -> Path:
        meta = {"format": HEAD_FORMAT, "format_version": "1", "head_config": json.dumps(self.ensemble.cfg.to_dict()),
                "ensemble": str(len(self.ensemble.members)), "labels": self.labels.to_json(),
                "meta": json.dumps(self.meta)}
        return write_safetensors(path, self.ensemble.state_dict(), meta)

    @classmethod
    def load(cls, path: str | os.PathLike, G: GeneratorLike | None = None) -> FewShotHead:
        """Load a head; with G, refuse it unless it was trained on this GAN's features."""
        meta, sd = read_safetensors(path, HEAD_FORMAT, "head")
        ens = Ensemble(HeadConfig(**json.loads(meta["head_config"])), int(meta["ensemble"]))
        ens.load_state_dict(sd)
        head = cls(ens.eval(), Labels.from_json(meta["labels"]), json.loads(meta["meta"]))
        if G is not None:
            head.check_generator(G, str(path))
        return head


def channels_of(G: GeneratorLike, cfg: FewShotConfig) -> int:
    return feature_channels(as_fewshot_gan(G).source(cfg.layers))


def as_uint8_labels(logp: torch.Tensor) -> np.ndarray:
    return logp.argmax(1).byte().cpu().numpy()
