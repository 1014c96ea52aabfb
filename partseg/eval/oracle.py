"""The label oracle: a supervised UNet trained on rendered faces with exact masks.

It stands in for a human annotator in benchmarks: it labels generated samples (which have no ground truth)
so that few-shot heads can be trained and scored without people. It is trained only on the renderer's images
and masks, from seeds disjoint from everything else (GAN training data, colour floor, evaluation sets).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from partseg.atomic import atomic_path
from partseg.data.faces import MODES, render_batch, render_face
from partseg.distill.trainer import SegTrainConfig, fit_segmenter
from partseg.distill.unet import UNet, UNetConfig, load_unet
from partseg.eval.metrics import ScoreAccumulator, SegScores
from partseg.images import from_uint8
from partseg.labels import FACES

ORACLE_TRAIN_SEED0 = 2_000_000  # oracle training faces: seeds 2_000_000 .. +n_train
ORACLE_EVAL_SEED0 = 9_000_000  # held-out faces for scoring: seeds 9_000_000 .. +n_eval
ORACLE_VAL_SEED0 = 8_000_000  # faces for choosing among checkpoints during training (never scored on)
DEFAULT_ORACLE = Path(__file__).resolve().parents[1] / "weights" / "oracle_faces64.safetensors"
ALIGNED_ORACLE = DEFAULT_ORACLE.with_name("oracle_faces128_aligned.safetensors")  # by benchmarks/oracle_aligned.py
ORACLES = {"wild": DEFAULT_ORACLE, "aligned": ALIGNED_ORACLE}  # render mode -> the oracle trained on it


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1], the range our generators produce."""
    return from_uint8(torch.as_tensor(np.asarray(images)))


class _RenderedStream(torch.utils.data.IterableDataset):
    """Batches of rendered faces: epoch e visits the n training seeds in a permutation seeded by e."""

    def __init__(self, n: int, size: int, batch: int, start_step: int, seed: int, mode: str = "wild"):
        self.n, self.size, self.batch, self.start, self.seed, self.mode = n, size, batch, start_step, seed, mode

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
            imgs, masks = zip(*(render_face(s, self.size, self.mode) for s in seeds), strict=True)
            yield to_input(np.stack(imgs)), torch.from_numpy(np.stack(masks)).long()
            step += nw


def oracle_batches(n_train: int, size: int, batch: int, seed: int = 0, workers: int = 2, mode: str = "wild"):
    """start step -> iterator of (images, masks); rendering happens in `workers` processes."""

    def make(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = _RenderedStream(n_train, size, batch, start, seed, mode)
        return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                                persistent_workers=workers > 0))

    return make


def render_cached(path: str | os.PathLike, n: int, size: int = 64, seed0: int = ORACLE_TRAIN_SEED0,
                  workers: int = 2, progress: bool = True, mode: str = "wild") -> tuple[np.ndarray, np.ndarray]:
    """Renders of seeds seed0 .. seed0+n-1 (images [n, s, s, 3], masks [n, s, s], uint8), kept in an .npz.

    Rendering costs more than a training step of the oracle, so long runs render every face once; the file is
    written atomically and re-read by a resumed run. A file made for other seeds or sizes is an error.
    """
    path = Path(path)
    if path.exists():
        with np.load(path) as z:
            images, masks, meta = z["images"], z["masks"], z["meta"]
        got = [int(v) for v in meta] + [0] * (4 - len(meta))  # files from before render modes: wild
        if got != [n, size, seed0, MODES.index(mode)]:
            raise ValueError(f"{path} holds renders for (n, size, seed0, mode) = {got[:3] + [MODES[got[3]]]}, not "
                             f"{[n, size, seed0, mode]}; delete it or choose another file")
        return images, masks
    chunks = [range(seed0 + i, seed0 + min(i + 250, n)) for i in range(0, n, 250)]
    parts = []
    with tqdm(total=n, desc="render", disable=not progress) as bar:
        if workers > 1:
            with get_context().Pool(workers) as pool:
                for out in pool.imap(_render_chunk, [(list(c), size, mode) for c in chunks]):
                    parts.append(out)
                    bar.update(len(out[0]))
        else:
            for c in chunks:
                parts.append(_render_chunk((list(c), size, mode)))
                bar.update(len(c))
    images = np.concatenate([a for a, _ in parts])
    masks = np.concatenate([b for _, b in parts])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images, masks=masks, meta=np.array([n, size, seed0, MODES.index(mode)]))
    return images, masks


def _render_chunk(args: tuple[list[int], int, str]) -> tuple[np.ndarray, np.ndarray]:
    seeds, size, mode = args
    return render_batch(seeds, size, mode)


def cached_batches(images: np.ndarray, masks: np.ndarray, batch: int, seed: int = 0, flip: bool = True):
    """start step -> iterator of (images, masks) drawn from arrays in memory.

    Step s draws its batch from a generator seeded by (seed, s), so a resumed run sees the batches an
    uninterrupted one would. flip: mirror half of the images left-right; the face classes have no left/right
    (both eyes are `eye`), so a mirrored face with its mirrored mask is another valid face.
    """

    def make(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = start
        while True:
            rng = np.random.default_rng([seed, step])
            idx = rng.integers(0, len(images), batch)
            x, y = images[idx], masks[idx]
            if flip:
                m = rng.random(batch) < 0.5
                x[m], y[m] = x[m, :, ::-1], y[m, :, ::-1]
            yield to_input(x), torch.from_numpy(np.ascontiguousarray(y)).long()
            step += 1

    return make


def train_oracle(run: str | os.PathLike, n_train: int = 10_000, size: int = 64, batch: int = 32,
                 channels: list[int] | None = None, cfg: SegTrainConfig | None = None, workers: int = 2,
                 progress: bool = True, stop_at_step: int | None = None, cache: str | os.PathLike | None = None,
                 init: str | os.PathLike | None = None, validate: Callable[[UNet], float] | None = None,
                 val_every: int = 0, mode: str = "wild") -> tuple[UNet, dict]:
    """Train (or resume) the oracle in `run`.

    cache: render the n_train faces once into this .npz and draw flip-augmented batches from memory; without
    it every batch is rendered afresh (no augmentation), in `workers` processes.
    init: weights to start from (a UNet .safetensors of the same channels) when `run` holds no checkpoint yet:
    fine-tuning a shipped oracle with a new schedule or loss instead of starting over.
    validate, val_every: passed to `fit_segmenter` (the best-scoring step is kept as run/best.safetensors).
    mode: render mode of the faces ("wild" or "aligned").
    """
    model = UNet(UNetConfig(num_classes=len(FACES), channels=channels or [32, 64, 128, 256]))
    cfg = cfg or SegTrainConfig()
    if init is not None and not (Path(run) / "checkpoint.pt").exists():
        start, _ = load_unet(init)
        if start.cfg.to_dict() != model.cfg.to_dict():
            raise ValueError(f"{init}: a UNet with config {start.cfg.to_dict()}, but this oracle is "
                             f"{model.cfg.to_dict()}; pass matching --channels")
        model.load_state_dict(start.state_dict())
    if cache is not None:
        images, masks = render_cached(cache, n_train, size, workers=workers, progress=progress, mode=mode)
        batches = cached_batches(images, masks, batch, cfg.seed)
    else:
        batches = oracle_batches(n_train, size, batch, cfg.seed, workers, mode)
    res = fit_segmenter(model, batches, cfg, run, labels=FACES, progress=progress, stop_at_step=stop_at_step,
                        desc="oracle", validate=validate, val_every=val_every)
    return model, res


@torch.no_grad()
def predict_labels(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """images [N, 3, H, W] in [-1, 1] -> (labels [N, H, W] long, max softmax probability [N, H, W])."""
    model.eval()
    labels, conf = [], []
    for i in range(0, len(images), batch):
        p = model(images[i:i + batch].float()).softmax(1)
        c, lab = p.max(1)
        labels.append(lab)
        conf.append(c)
    return torch.cat(labels), torch.cat(conf)


def segmenter_scores(model: torch.nn.Module, images: torch.Tensor, masks: np.ndarray | torch.Tensor) -> SegScores:
    """Scores of `model`'s labels for images [N, 3, H, W] in [-1, 1] against masks [N, H, W] (face classes)."""
    acc = ScoreAccumulator(len(FACES))
    acc.add(predict_labels(model, images)[0], torch.as_tensor(np.asarray(masks)).long())
    return acc.scores()


def evaluate_on_renders(model: torch.nn.Module, n: int = 1000, size: int = 64, seed0: int = ORACLE_EVAL_SEED0,
                        batch: int = 50, progress: bool = False, mode: str = "wild") -> SegScores:
    """Scores of `model` on n held-out rendered faces (exact masks)."""
    acc = ScoreAccumulator(len(FACES))
    for i in tqdm(range(0, n, batch), desc="eval", disable=not progress):
        seeds = range(seed0 + i, seed0 + min(i + batch, n))
        imgs, masks = zip(*(render_face(s, size, mode) for s in seeds), strict=True)
        pred, _ = predict_labels(model, to_input(np.stack(imgs)))
        acc.add(pred, torch.from_numpy(np.stack(masks)))
    return acc.scores()


@torch.no_grad()
def bottleneck_features(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The oracle's deepest encoder activations, averaged over space: [N, C] per image, for a Fréchet distance
    between generated samples and renders (an FID whose network knows the parts, not ImageNet)."""
    net = model.model if isinstance(model, FlipAveraged) else model
    out: list[torch.Tensor] = []
    hook = net.down[-1].register_forward_hook(lambda _m, _i, o: out.append(o.float().mean((2, 3))))
    try:
        net.eval()
        for i in range(0, len(images), batch):
            net(images[i:i + batch].float())
    finally:
        hook.remove()
    return torch.cat(out)


class FlipAveraged(torch.nn.Module):
    """A segmenter that averages its logits over the image and its mirror image.

    The face classes have no left/right, so the mirrored prediction mirrored back is a second opinion on the
    same pixels; averaging the two lifts the oracle's held-out mIoU by about 0.01 for twice the compute, which a
    benchmark labeller can afford.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(x.flip(-1)).flip(-1)) / 2


def load_oracle(path: str | os.PathLike | None = None, flip: bool = True) -> torch.nn.Module:
    """The label oracle in eval mode; flip: average over mirror images (`FlipAveraged`), as the benchmarks do."""
    path = Path(path or DEFAULT_ORACLE)
    if not path.exists():
        raise FileNotFoundError(f"label oracle weights not found at {path}; train them with "
                                f"`python3 benchmarks/oracle.py`")
    model, _ = load_unet(path)
    return FlipAveraged(model).eval() if flip else model
