"""Few-shot training: annotated generated samples (their latents + masks) -> a head on the GAN's pixel features.

The paper's loop: for each shot, regenerate the GAN features from its recorded latents (and noise), then fit
a head with Adam and cross-entropy. CNN heads see whole feature maps (one shot per step); MLP heads see random
pixels of all shots per step. When the maps do not fit the memory budget (`partseg.fewshot.memory`), steps read
crops or pixels from a cache of the generator's layers instead (`partseg.fewshot.crops`), and prediction runs
by tiles (`partseg.fewshot.tiled`). The head file records everything needed to use it again and to refuse misuse:
the GAN fingerprint, layers, feature size, resize mode, noise mode and labels.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from partseg.atomic import atomic_torch_save
from partseg.features import feature_channels, pixel_features
from partseg.fewshot.crops import CachedShots, feature_size, masks_at, pixel_loss, shot_loss, shot_source
from partseg.fewshot.heads import Ensemble, HeadConfig
from partseg.fewshot.memory import budget_bytes, head_margin, plan_prediction, plan_training
from partseg.fewshot.shots import Shots, load_shots, shots_digest, shots_to_invert
from partseg.fewshot.tiled import predict_bounded
from partseg.gan.interface import FewShotGAN, GeneratorLike, as_fewshot_gan
from partseg.labels import IGNORE, Labels
from partseg.precision import AMP_MODES, resolve_amp
from partseg.runs import clean_stale_tmp, load_checkpoint, refuse_other_settings
from partseg.weights_io import read_safetensors, write_safetensors

HEAD_FORMAT = "partseg.head"
HEAD_TRAIN_FORMAT = "partseg.head.train"
CLASS_WEIGHTS = ("none", "sqrt", "inverse")

__all__ = ["FewShotConfig", "FewShotHead", "Shots", "as_uint8_labels", "channels_of", "class_weights", "load_shots",
           "recipe_dict", "shot_features", "shots_to_invert", "train_head"]


@dataclass
class FewShotConfig:
    """The head's recipe. Defaults are the best measured one (BENCHMARKS.md "few-shot recipes", issue #15)."""

    head: str = "mlp"
    steps: int = 0  # 0 -> 600 for cnn, 2000 for mlp
    lr: float = 0.0  # peak of the warm-up + cosine schedule; 0 -> 1e-3 for cnn, 3e-3 for mlp
    weight_decay: float = 1e-3
    ensemble: int = 1
    pixels_per_step: int = 2048  # mlp: as good as 4096 at half the time (BENCHMARKS.md)
    class_weights: str = "inverse"  # none | sqrt | inverse frequency of each class in the shots (small parts count)
    focal_gamma: float | None = None  # > 0: focal loss, 0: cross-entropy; None -> 2 for mlp (round 4), 0 for cnn
    amp: str = "auto"  # bf16 autocast of the head's training forward where the CPU has bf16 units (precision.py)
    layers: str = "paper"
    size: int = 0  # feature map size; 0 -> the generator's image size (feature_size)
    mode: str = "bilinear"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = 600 if self.head == "cnn" else 2000
        if not self.lr:
            self.lr = 1e-3 if self.head == "cnn" else 3e-3
        if self.focal_gamma is None:  # measured on the MLP only (fewshot_recipes round 4): the CNN keeps the paper's CE
            self.focal_gamma = 0.0 if self.head == "cnn" else 2.0
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weights!r}")
        g = self.focal_gamma
        if isinstance(g, bool) or not isinstance(g, int | float) or not (math.isfinite(g) and g >= 0):
            raise ValueError(f"focal_gamma must be a finite number >= 0, got {g!r}")
        self.focal_gamma = float(g)  # 2 and 2.0 are one recipe (cache keys)
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")


# options added after results were cached, at the value that reproduces the recipe from before they existed
_NEUTRAL = {"focal_gamma": 0.0}


def recipe_dict(cfg: FewShotConfig) -> dict:
    """The recipe as a dict for keys and digests, without options at their neutral value, so caches and
    checkpoints keyed before an option existed stay valid."""
    return {k: v for k, v in asdict(cfg).items() if not (k in _NEUTRAL and v == _NEUTRAL[k])}


def warmup_cosine(steps: int, warmup: float = 0.05, floor: float = 0.02):
    """lr factor per step: linear warm-up over the first 5 % of the steps, then cosine down to `floor`."""
    w = max(1, round(steps * warmup))

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / w
        t = (step - w) / max(1, steps - w)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


def class_weights(masks: torch.Tensor, num_classes: int, kind: str) -> torch.Tensor | None:
    """Loss weights from the shots' labelled pixels: inverse frequency (or its square root), mean 1 over the classes
    present; a class absent from the shots gets weight 0 rather than an infinite one. None for 'none'."""
    if kind == "none":
        return None
    count = torch.bincount(masks[masks != IGNORE].flatten(), minlength=num_classes)[:num_classes].double()
    w = torch.where(count > 0, count.sum() / count.clamp_min(1), torch.zeros_like(count))
    if kind == "sqrt":
        w = w.sqrt()
    present = count > 0
    return (w / w[present].mean()).float() if bool(present.any()) else None


def shot_features(G: GeneratorLike, shots: Shots, cfg: FewShotConfig,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[str]]:
    """[K, C, S, S] features of every shot, computed one shot at a time."""
    G = as_fewshot_gan(G)
    out = []
    for i in range(len(shots.names)):
        src = shot_source(G, shots, cfg, i)
        _, f = pixel_features(src, shots.ws[i:i + 1].to(G.device), size=feature_size(G, cfg), mode=cfg.mode,
                              dtype=dtype)
        out.append(f.cpu())
    return torch.cat(out), src.layers


class _WholeMaps:
    """Every shot's whole feature map in memory: the path of every result before the memory budget existed."""

    def __init__(self, G: FewShotGAN, shots: Shots, cfg: FewShotConfig):
        self.feats, self.layers = shot_features(G, shots, cfg)
        self.kind, self.pixels, self.masks = cfg.head, cfg.pixels_per_step, shots.masks
        self.weight: torch.Tensor | None = None  # class weights of the loss, set by train_head
        self.gamma = cfg.focal_gamma
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
            return shot_loss(member(x), y, self.weight, self.gamma)
        pick = self.valid[torch.randint(len(self.valid), (self.pixels,), generator=gen)]
        return pixel_loss(member(self.flat_f[pick]), self.flat_m[pick], self.weight, self.gamma)


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
    data.weight = class_weights(shots.masks, len(shots.labels), cfg.class_weights)
    use_amp = resolve_amp(cfg.amp, torch.device("cpu"))  # heads train on the CPU (crops.CachedShots)
    size, layers = data.size, data.layers
    hcfg = HeadConfig(kind=cfg.head, in_channels=data.channels, num_classes=len(shots.labels))
    torch.manual_seed(cfg.seed)
    ens = Ensemble(hcfg, cfg.ensemble)
    gen = torch.Generator().manual_seed(cfg.seed)
    settings = {**recipe_dict(cfg), "shots": shots_digest(shots), "gan_fingerprint": G.fingerprint()}
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
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps))
        first = 0
        if ckpt and m_i == start_member and ckpt["opt"] is not None:
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
            torch.set_rng_state(ckpt["rng"])
            first = start_step
        for step in range(first, cfg.steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_amp):
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
            "train_seconds": round(time.time() - t0, 1), "precision": "bf16" if use_amp else "fp32"}
    if not plan.full:
        meta["memory_plan"] = plan.describe()
    return FewShotHead(ens.eval(), shots.labels, meta)


def _train_plan(G: FewShotGAN, shots: Shots, cfg: FewShotConfig, memory: float | str | None):
    """The memory plan (whole maps, or crops / pixels from a cache) and the head's margin."""
    src = shot_source(G, shots, cfg, 0)
    size = feature_size(G, cfg)
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
