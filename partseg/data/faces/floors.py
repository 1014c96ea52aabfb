"""How hard the domain is: what a classifier without any notion of parts scores on it."""

from __future__ import annotations

import numpy as np
import torch

from partseg.data.faces.render import render_face
from partseg.eval.metrics import ScoreAccumulator
from partseg.labels import FACES


def colour_floor(n_fit: int = 1000, n_eval: int = 200, size: int = 64, seed: int = 1_000_000,
                 mode: str = "wild") -> dict:
    """How far colour alone gets: a per-pixel nearest class-mean RGB classifier.

    Class means are fitted on the renders of seeds seed .. seed+n_fit-1 and scored on the next n_eval seeds
    (IoU over all held-out pixels). A domain where this scores high would let a few-shot head look good
    without understanding parts; the issue asks for mIoU well under 0.35.
    Returns {"iou": {name: IoU}, "miou", "pixel_acc", "means": {name: [r, g, b]}}.
    """
    k = len(FACES)
    sums, counts = np.zeros((k, 3)), np.zeros(k)
    for s in range(seed, seed + n_fit):
        img, m = render_face(s, size, mode)
        m = m.ravel()
        counts += np.bincount(m, minlength=k)[:k]
        for c in range(3):
            sums[:, c] += np.bincount(m, weights=img[..., c].ravel(), minlength=k)[:k]
    means = sums / np.maximum(counts, 1)[:, None]
    means[counts == 0] = 1e9  # a class never seen can never be predicted
    acc = ScoreAccumulator(k)
    for s in range(seed + n_fit, seed + n_fit + n_eval):
        img, m = render_face(s, size, mode)
        d = ((img.reshape(-1, 1, 3).astype(np.float64) - means[None]) ** 2).sum(-1)
        acc.add(torch.from_numpy(d.argmin(1)), torch.from_numpy(m.ravel()))
    scores = acc.scores()
    return {"iou": scores.per_class(list(FACES.names)), "miou": scores.miou, "pixel_acc": scores.pixel_accuracy,
            "means": {n: [round(float(v), 1) for v in mu]
                      for n, mu in zip(FACES.names, means, strict=True) if mu[0] < 1e8}}
