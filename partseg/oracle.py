"""The label oracle: a supervised UNet trained on rendered faces with exact masks.

It stands in for a human annotator in benchmarks: it labels generated samples (which have no ground truth)
so that few-shot heads can be trained and scored without people. It is trained only on the renderer's images
and masks, from seeds disjoint from everything else (GAN training data, colour floor, evaluation sets).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .faces import render_face
from .labels import FACES
from .metrics import ScoreAccumulator, SegScores
from .seg_train import SegTrainConfig, fit_segmenter
from .unet import UNet, UNetConfig, load_unet

ORACLE_TRAIN_SEED0 = 2_000_000  # oracle training faces: seeds 2_000_000 .. +n_train
ORACLE_EVAL_SEED0 = 9_000_000  # held-out faces for scoring: seeds 9_000_000 .. +n_eval
DEFAULT_ORACLE = Path(__file__).resolve().parents[1] / "benchmarks" / "weights" / "oracle_faces64.safetensors"


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1], the range our generators produce."""
    x = torch.as_tensor(np.asarray(images))
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


class _RenderedStream(torch.utils.data.IterableDataset):
    """Batches of rendered faces: epoch e visits the n training seeds in a permutation seeded by e."""

    def __init__(self, n: int, size: int, batch: int, start_step: int, seed: int):
        self.n, self.size, self.batch, self.start, self.seed = n, size, batch, start_step, seed

    def _permutation(self, epoch: int) -> np.ndarray:
        """The seed order of one epoch, computed once per epoch rather than once per image."""
        if getattr(self, "_perm_epoch", None) != epoch:
            self._perm = np.random.default_rng(self.seed * 7919 + epoch).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        step = self.start + wid
        while True:  # worker w renders steps w, w + nw, ...; the loader interleaves them back in order
            pos = step * self.batch
            seeds = []
            for p in range(pos, pos + self.batch):
                epoch, i = divmod(p, self.n)
                seeds.append(ORACLE_TRAIN_SEED0 + int(self._permutation(epoch)[i]))
            imgs, masks = zip(*(render_face(s, self.size) for s in seeds), strict=True)
            yield to_input(np.stack(imgs)), torch.from_numpy(np.stack(masks)).long()
            step += nw


def oracle_batches(n_train: int, size: int, batch: int, seed: int = 0, workers: int = 2):
    """start step -> iterator of (images, masks); rendering happens in `workers` processes."""

    def make(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = _RenderedStream(n_train, size, batch, start, seed)
        return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                                persistent_workers=workers > 0))

    return make


def train_oracle(run: str | os.PathLike, n_train: int = 10_000, size: int = 64, batch: int = 32,
                 channels: list[int] | None = None, cfg: SegTrainConfig | None = None, workers: int = 2,
                 progress: bool = True, stop_at_step: int | None = None) -> tuple[UNet, dict]:
    model = UNet(UNetConfig(num_classes=len(FACES), channels=channels or [32, 64, 128, 256]))
    cfg = cfg or SegTrainConfig()
    res = fit_segmenter(model, oracle_batches(n_train, size, batch, cfg.seed, workers), cfg, run, labels=FACES,
                        progress=progress, stop_at_step=stop_at_step, desc="oracle")
    return model, res


@torch.no_grad()
def predict_labels(model: UNet, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """images [N, 3, H, W] in [-1, 1] -> (labels [N, H, W] long, max softmax probability [N, H, W])."""
    model.eval()
    labels, conf = [], []
    for i in range(0, len(images), batch):
        p = model(images[i:i + batch].float()).softmax(1)
        c, lab = p.max(1)
        labels.append(lab)
        conf.append(c)
    return torch.cat(labels), torch.cat(conf)


def evaluate_on_renders(model: UNet, n: int = 1000, size: int = 64, seed0: int = ORACLE_EVAL_SEED0,
                        batch: int = 50, progress: bool = False) -> SegScores:
    """Scores of `model` on n held-out rendered faces (exact masks)."""
    acc = ScoreAccumulator(len(FACES))
    for i in tqdm(range(0, n, batch), desc="eval", disable=not progress):
        imgs, masks = zip(*(render_face(s, size) for s in range(seed0 + i, seed0 + min(i + batch, n))), strict=True)
        pred, _ = predict_labels(model, to_input(np.stack(imgs)))
        acc.add(pred, torch.from_numpy(np.stack(masks)))
    return acc.scores()


def load_oracle(path: str | os.PathLike | None = None) -> UNet:
    path = Path(path or DEFAULT_ORACLE)
    if not path.exists():
        raise FileNotFoundError(f"label oracle weights not found at {path}; train them with "
                                f"`python3 benchmarks/oracle.py`")
    model, _ = load_unet(path)
    return model
