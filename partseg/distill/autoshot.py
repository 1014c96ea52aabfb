"""Auto-shot distillation: train a UNet on generated images labelled by a few-shot head.

Pairs are made on the fly (latents -> image + features -> head labels), so no data set is needed; pairs for
step s come from a generator seeded by (seed, rank, s), so a resumed run draws the pairs an uninterrupted one
would have. Pixels where the head is unsure (max softmax below `confidence`) are ignored in the loss: this is
not in the paper; `benchmarks/label_efficiency.py` reports its effect. The paper's augmentation (flip, scale
0.5-2, rotation +-10 deg, translation up to 50%) plus colour jitter is applied to image and labels together.

Pool (`pool=P`): rendering a pair (generator, features, head) costs more than a UNet step on it at 128 px on a
CPU, so with a pool the first ceil(P / n) steps render pairs as usual and keep them, and every later step draws
its n pairs from those P at random, each with fresh augmentation. Fewer distinct images; the demo uses it to fit
its time budget (BENCHMARKS.md "Auto-shot pair pool" measures what it costs in mIoU).

Several processes (`torchrun --nproc_per_node N -m partseg.cli distill ...`): `batch` is the global batch; each
of the N processes generates batch / N pairs per step from its own seed stream (rank r, step s), gradients are
averaged, and rank 0 alone validates and writes the run folder. The pairs depend on N, so a run resumed on
another number of processes continues with other (equally valid) batches.

Pair cache (`cache=DIR`): the generated pairs, before augmentation, are also written to DIR in the data-set
layout (partseg.data.dataset: images/NAME.png, masks/NAME.png with 255 = ignored, labels.json), named
`rankRR_stepSSSSSSS_III`, with `pair_cache.json` recording what they depend on (GAN, head, seed, confidence,
truncation, noise mode, pairs per process). A later run with the same DIR reads a step's pairs instead of
rendering them. Images are stored as 8-bit PNG, so a run with a cache trains on images quantised to uint8
(x = round((x + 1) * 127.5) / 127.5 - 1, at most 1/255 from the float image) whether it writes or reads the
cache: a cached re-run is then bit-identical to the run that wrote the cache; labels are exact either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from partseg.atomic import atomic_write_text
from partseg.data.dataset import IMAGES, MASKS, read_image, read_mask, write_image, write_mask
from partseg.distill.augment import AugmentConfig, augment_pair
from partseg.distill.trainer import SegTrainConfig, fit_segmenter
from partseg.distill.unet import UNet, UNetConfig
from partseg.distributed import Dist
from partseg.fewshot.learner import CLASS_WEIGHTS, FewShotHead, class_weights
from partseg.gan.interface import GeneratorLike, as_fewshot_gan
from partseg.images import from_uint8, to_uint8_tensor
from partseg.labels import IGNORE, LABELS_FILE
from partseg.weights_io import weights_digest

NO_AUGMENT = AugmentConfig(flip=0, scale=(1, 1), rotate=0, translate=0, brightness=0, contrast=0, saturation=0)
CACHE_FORMAT = "partseg.paircache"
CACHE_FILE = "pair_cache.json"


@dataclass
class DistillConfig:
    steps: int = 3000
    batch: int = 16  # pairs per step in total; under torchrun each of N processes makes batch / N
    lr: float = 2e-3
    weight_decay: float = 1e-4
    confidence: float = 0.5  # ignore pixels whose head max-softmax is below this (0 disables)
    dice_weight: float = 0.0  # adds this times a soft Dice loss (partseg.distill.trainer), for the small parts
    truncation: float = 1.0
    noise_mode: str = "const"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    augment: bool = True
    seed: int = 0
    pool: int = 0  # 0: fresh pairs every step (the paper); P: the first P pairs per process, reused from then on
    crop: int = 0  # 0: train on whole augmented images; C: on a random C x C window of each (cheaper steps)
    class_weights: str = "none"  # none | sqrt | inverse frequency of each class in the head's labels of a probe batch
    val_every: int = 250
    ckpt_every: int = 0  # steps between checkpoints (a killed run loses at most this many); 0: min(100, steps/10)

    # settings a resumed run may change; any other difference is refused (the model would match no command line)
    MAY_CHANGE = ("steps", "val_every", "ckpt_every")

    def __post_init__(self) -> None:
        if not 0 <= self.confidence <= 1:
            raise ValueError(f"confidence must be in [0, 1] (a max softmax), got {self.confidence}")
        for name in ("steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pool < 0:
            raise ValueError(f"pool must be >= 0 (0: fresh pairs every step), got {self.pool}")
        if self.crop and self.crop < 16:
            raise ValueError(f"crop must be 0 (whole images) or >= 16 pixels, got {self.crop}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weights!r}")
        if self.ckpt_every < 0:
            raise ValueError(f"ckpt_every must be >= 1 (or 0: automatic), got {self.ckpt_every}")

    @property
    def checkpoint_interval(self) -> int:
        return min(self.ckpt_every or min(100, max(1, self.steps // 10)), self.steps)


@torch.no_grad()
def make_pairs(G: GeneratorLike, head: FewShotHead, n: int, gen: torch.Generator,
               confidence: float = 0.0, truncation: float = 1.0,
               noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
    """n generated images [n, 3, R, R] with the head's labels [n, R, R] (255 where the head is unsure)."""
    G = as_fewshot_gan(G)
    z = G.random_z(n, gen)
    return _label_latents(G, head, z, confidence, truncation, noise_mode)


@torch.no_grad()
def _label_latents(G: GeneratorLike, head: FewShotHead, z: torch.Tensor, confidence: float,
                   truncation: float, noise_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    ws = as_fewshot_gan(G).latents_from_z(z, truncation)
    img, logp = head.predict_ws(G, ws, noise_mode=noise_mode)
    labels = []
    for lp in logp.split(1):  # one image at a time: a batch of image-size probabilities can be GBs at 1024 px
        if lp.shape[-1] != img.shape[-1]:
            lp = torch.nn.functional.interpolate(lp, size=img.shape[-2:], mode="bilinear", align_corners=False)
        conf, lab = lp.exp().max(1)
        if confidence:
            lab[conf < confidence] = IGNORE
        labels.append(lab)
    return img.clamp(-1, 1).cpu(), torch.cat(labels).cpu()


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3], as stored in the pair cache."""
    return to_uint8_tensor(images)


def dequantise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] (the inverse of `quantise` up to rounding)."""
    return from_uint8(images)


def head_digest(head: FewShotHead) -> str:
    """A short hash of a head's weights, classes and feature settings: cached labels belong to one head."""
    settings = json.dumps({k: head.meta.get(k) for k in ("layers", "size", "mode", "noise_mode")}, sort_keys=True,
                          default=str)
    return weights_digest(head.labels.to_json() + settings, head.ensemble.state_dict())


class PairCache:
    """Pre-augmentation pairs of (rank, step) in a data-set folder; a step counts as cached once all its files
    exist (each is written atomically, so a run killed mid-step just renders that step again)."""

    def __init__(self, root: str | os.PathLike, G: GeneratorLike, head: FewShotHead, cfg: DistillConfig,
                 per_process: int):
        self.root, self.labels, self.n = Path(root), head.labels, per_process
        key = {"format": CACHE_FORMAT, "format_version": 1, "gan_fingerprint": head.meta["gan_fingerprint"],
               "head": head_digest(head), "resolution": G.resolution, "seed": cfg.seed,
               "confidence": cfg.confidence, "truncation": cfg.truncation, "noise_mode": cfg.noise_mode,
               "pairs_per_process": per_process}
        manifest = self.root / CACHE_FILE
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{manifest}: not valid JSON ({e})") from None
            diff = [f"{k}: cache has {old.get(k)!r}, this run {v!r}" for k, v in key.items() if old.get(k) != v]
            if diff:
                raise ValueError(f"{self.root} caches pairs of other settings ({'; '.join(diff)}); use another "
                                 f"--cache folder")
            return
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"--cache must be a folder, got a file: {self.root}")
        if any(self.root.glob(f"{IMAGES}/*")) or any(self.root.glob(f"{MASKS}/*")) or \
                (self.root / LABELS_FILE).exists():
            raise ValueError(f"{self.root} holds files but no {CACHE_FILE}: not a pair cache; use a new or empty "
                             f"--cache folder")
        self.labels.save(self.root / LABELS_FILE)
        atomic_write_text(json.dumps({**key, "images": "8-bit RGB PNG, x = value / 127.5 - 1",
                                      "masks": f"class index PNG, {IGNORE} = ignored (head unsure)"}, indent=1),
                          manifest)

    def _paths(self, rank: int, step: int) -> list[tuple[Path, Path]]:
        names = [f"rank{rank:02d}_step{step:07d}_{i:03d}.png" for i in range(self.n)]
        return [(self.root / IMAGES / nm, self.root / MASKS / nm) for nm in names]

    def read(self, rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(uint8 images [n, H, W, 3], labels [n, H, W] long), or None if the step is not (fully) cached."""
        paths = self._paths(rank, step)
        if not all(i.is_file() and m.is_file() for i, m in paths):
            return None
        imgs = torch.stack([torch.from_numpy(read_image(i)) for i, _ in paths])
        masks = torch.stack([torch.from_numpy(read_mask(m)) for _, m in paths]).long()
        return imgs, masks

    def write(self, rank: int, step: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        for (ip, mp), img, lab in zip(self._paths(rank, step), images, labels, strict=True):
            write_image(ip, img.numpy())
            write_mask(mp, lab.to(torch.uint8).numpy(), self.labels)


def pair_stream(G: GeneratorLike, head: FewShotHead, cfg: DistillConfig, rank: int = 0, world: int = 1,
                cache: str | os.PathLike | None = None) -> Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """start step -> batches of batch / world (augmented image, labels); batch s depends only on (seed, rank, s).

    cache: a folder the pre-augmentation pairs are written to and read back from (module docstring); it is
    opened (and checked against these settings) now, not at the first batch.
    """
    if cfg.batch % world:
        raise ValueError(f"batch {cfg.batch} must be divisible by the number of processes ({world})")
    n = cfg.batch // world
    G = as_fewshot_gan(G)
    aug = AugmentConfig()
    store = PairCache(cache, G, head, cfg, n) if cache is not None else None

    pool_steps = -(-cfg.pool // n) if cfg.pool else 0  # the pool: the pairs of steps 0 .. pool_steps - 1
    pool: list[tuple[torch.Tensor, torch.Tensor]] = []
    stacked: list[torch.Tensor] = []

    def render(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if store is None:
            return make_pairs(G, head, n, gen, cfg.confidence, cfg.truncation, cfg.noise_mode)
        z = G.random_z(n, gen)  # drawn even when cached: augmentation continues `gen`
        got = store.read(rank, step)
        if got is None:
            x, y = _label_latents(G, head, z, cfg.confidence, cfg.truncation, cfg.noise_mode)
            got = quantise(x), y
            store.write(rank, step, *got)
        return dequantise(got[0]), got[1]

    def seeded(step: int) -> torch.Generator:
        return torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank * 7919 + step)

    def pooled(step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps inside the pool render (and keep) their pairs; later steps draw n of the kept pairs."""
        while len(pool) < min(step, pool_steps):  # a resumed run renders the pool it skipped
            pool.append(render(len(pool), seeded(len(pool))))
        if step < pool_steps:
            if step == len(pool):
                pool.append(render(step, gen))
            else:
                G.random_z(n, gen)  # what rendering would have drawn, so the augmentation below is the same
            return pool[step]
        if not stacked:
            stacked.extend((torch.cat([p[0] for p in pool]), torch.cat([p[1] for p in pool])))
        pick = torch.randint(len(stacked[0]), (n,), generator=gen)
        return stacked[0][pick], stacked[1][pick]

    def make(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = start
        while True:
            gen = seeded(step)
            x, y = pooled(step, gen) if pool_steps else render(step, gen)
            if cfg.augment or cfg.crop:  # without augmentation a crop is just a random window
                x, y = augment_pair(x, y, aug if cfg.augment else NO_AUGMENT, gen, crop=cfg.crop)
            if bool((y == IGNORE).all()):
                raise ValueError(_nothing_labelled(cfg, step, n))
            yield x, y
            step += 1

    return make


def _nothing_labelled(cfg: DistillConfig, step: int, n: int) -> str:
    why = (f"the head's max softmax is below --confidence {cfg.confidence} on every pixel"
           + (" (1.0 keeps only pixels the head is certain of, which a softmax almost never is)"
              if cfg.confidence >= 1 else " (a weak head is unsure everywhere)"))
    return (f"distillation step {step}: no pixel of the {n} generated images is labelled: {why}; lower "
            f"--confidence (default 0.5, 0 keeps every pixel) or train a stronger head (more shots or steps)")


def probe_class_weights(G: GeneratorLike, head: FewShotHead, cfg: DistillConfig, n: int = 32) -> list[float] | None:
    """Loss weights from the head's labels of n generated images (a fixed seed: a resumed run gets the same ones).

    Small parts are a few % of the pixels; weighting them up makes the UNet draw them within short schedules: with
    64 px windows sqrt weights lifted the demo's ears from 0 to 0.27 IoU (BENCHMARKS.md, benchmarks/demo_distill.py).
    """
    if cfg.class_weights == "none":
        return None
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 999_983)
    z = as_fewshot_gan(G).random_z(n, gen)
    # labelled 8 at a time: the same images as one batch, without its feature maps' peak memory
    y = torch.cat([_label_latents(G, head, z[i:i + 8], cfg.confidence, cfg.truncation, cfg.noise_mode)[1]
                   for i in range(0, n, 8)])
    w = class_weights(y, len(head.labels), cfg.class_weights)
    return None if w is None else [round(float(v), 6) for v in w]


def distill(G: GeneratorLike, head: FewShotHead, cfg: DistillConfig, out: str | os.PathLike,
            validate: Callable[[UNet], float] | None = None, progress: bool = True,
            stop_at_step: int | None = None, cache: str | os.PathLike | None = None) -> tuple[UNet, dict]:
    """Train (or resume) a UNet in folder `out` on pairs from G and head; returns (model, summary).

    The UNet trains on G's device (the head is moved there too). Under torch.distributed every process calls
    this with the same arguments; see the module docstring for the global batch and the cache.
    """
    G = as_fewshot_gan(G)
    head.check_generator(G)
    if cfg.crop > G.resolution:  # say so now, not after the pool is rendered
        raise ValueError(f"crop {cfg.crop} is larger than the generator's {G.resolution} px images; use at most "
                         f"{G.resolution} (or 0: whole images)")
    dd = Dist()
    device = G.device
    head.ensemble.to(device)
    torch.manual_seed(cfg.seed)
    model = UNet(UNetConfig(num_classes=len(head.labels), channels=cfg.channels))
    scfg = SegTrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=min(100, cfg.steps // 10),
                          ckpt_every=cfg.checkpoint_interval, log_every=25, seed=cfg.seed,
                          dice_weight=cfg.dice_weight, class_weight=probe_class_weights(G, head, cfg))
    meta = {"distill_config": str(asdict(cfg)), "gan_fingerprint": head.meta["gan_fingerprint"],
            "input": "RGB in [-1, 1] (x / 127.5 - 1), any height and width", "train_resolution": str(G.resolution),
            "processes": str(dd.world)}
    if cache is not None:
        meta["pair_cache"] = "uint8-quantised pairs cached in " + str(cache)
    if dd.rank == 0:  # rank 0 creates the cache folder before the others check it
        stream = pair_stream(G, head, cfg, rank=dd.rank, world=dd.world, cache=cache)
    if dd.on:
        dist.barrier()
    if dd.rank != 0:
        stream = pair_stream(G, head, cfg, rank=dd.rank, world=dd.world, cache=cache)
    settings = {**asdict(cfg), "head": head_digest(head), "gan_fingerprint": head.meta["gan_fingerprint"]}
    res = fit_segmenter(model, stream, scfg, Path(out), labels=head.labels, device=device, progress=progress,
                        stop_at_step=stop_at_step, desc="distill", validate=validate, val_every=cfg.val_every,
                        extra_meta=meta, settings=settings, may_change=DistillConfig.MAY_CHANGE)
    return model, res
