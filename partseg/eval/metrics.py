"""Segmentation metrics from one confusion matrix: per-class IoU, mIoU, pixel accuracy.

Everything is accumulated as integer counts, so results over a data set do not depend on batch size, and
pixels labelled 255 (unlabelled) are ignored. A class absent from both prediction and ground truth has no IoU
(NaN) and is left out of the mean, rather than counted as a perfect 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from partseg.labels import IGNORE


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[K, K] int64 counts, rows = ground truth, columns = prediction; target 255 is skipped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth shape {tuple(target.shape)}")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    keep = t != IGNORE
    t, p = t[keep], p[keep]
    if len(t) and (t.max() >= num_classes or t.min() < 0):
        raise ValueError(f"ground truth holds class {int(t.max())}, but there are {num_classes} classes")
    if len(p) and (p.max() >= num_classes or p.min() < 0):
        raise ValueError(f"prediction holds class {int(p.max())}, but there are {num_classes} classes")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def _mean_present(iou: torch.Tensor) -> float:
    """Mean over the classes that have an IoU (not NaN); NaN if none has."""
    present = ~iou.isnan()
    return float(iou[present].mean()) if present.any() else float("nan")


@dataclass
class SegScores:
    confusion: torch.Tensor  # [K, K] counts

    @property
    def iou(self) -> torch.Tensor:
        """Per-class IoU = TP / (TP + FP + FN); NaN where the class appears in neither."""
        cm = self.confusion.double()
        tp = cm.diag()
        denom = cm.sum(0) + cm.sum(1) - tp
        return torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))

    @property
    def miou(self) -> float:
        return _mean_present(self.iou)

    @property
    def pixel_accuracy(self) -> float:
        cm = self.confusion.double()
        return float(cm.diag().sum() / cm.sum().clamp(min=1))

    def per_class(self, names: list[str]) -> dict[str, float]:
        return {n: float(v) for n, v in zip(names, self.iou.tolist(), strict=True)}

    def table(self, names: list[str]) -> str:
        """Markdown table: class, IoU, share of ground-truth pixels."""
        gt = self.confusion.sum(1).double()
        share = gt / gt.sum().clamp(min=1)
        rows = [f"| {n} | {v:.3f} | {s:.1%} |" for n, v, s in zip(names, self.iou.tolist(), share.tolist(),
                                                                  strict=True)]
        return "\n".join(["| class | IoU | pixels |", "| --- | ---: | ---: |", *rows,
                          f"| **mean** | **{self.miou:.3f}** | |"])


class ScoreAccumulator:
    """Add batches of predictions; read SegScores at the end."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion += confusion_matrix(pred.cpu(), target.cpu(), self.num_classes)

    def scores(self) -> SegScores:
        return SegScores(self.confusion.clone())


def _neighbour_classes(target: torch.Tensor, num_classes: int, radius: int) -> torch.Tensor:
    """[N, K, H, W] bool: class k occurs in the (2r+1)^2 window around each pixel (255 counts as no class)."""
    t = target.long()
    onehot = torch.zeros(t.shape[0], num_classes + 1, *t.shape[1:], dtype=torch.float32)
    onehot.scatter_(1, torch.where(t == IGNORE, num_classes, t).unsqueeze(1), 1.0)
    pooled = torch.nn.functional.max_pool2d(onehot[:, :num_classes], 2 * radius + 1, 1, radius)
    return pooled > 0


def boundary_pixels(target: torch.Tensor, num_classes: int, radius: int = 1) -> torch.Tensor:
    """[N, H, W] bool: pixels with another class within `radius` pixels (8-neighbourhood for radius 1).

    On parts one or two pixels wide every pixel is a boundary pixel; this says where errors can only be about
    sub-pixel geometry.
    """
    return _neighbour_classes(target, num_classes, radius).sum(1) > 1


class TolerantScoreAccumulator:
    """Per-class IoU that forgives boundaries misplaced by up to `radius` pixels, and nothing else.

    A predicted pixel of class c counts as right if c occurs in the ground truth within `radius` pixels; a
    ground-truth pixel of c counts as found if c is predicted within `radius` pixels. From that precision P and
    recall R, F = 2PR / (P + R) and the IoU-equivalent F / (2 - F), which is exactly IoU at radius 0. A part
    missed or invented away from any true one still costs in full; a thin part drawn a pixel too far does not.
    """

    def __init__(self, num_classes: int, radius: int = 1):
        self.num_classes, self.radius = num_classes, radius
        self.counts = torch.zeros(4, num_classes, dtype=torch.float64)  # pred ok, pred, true found, true

    def add(self, pred: torch.Tensor, target: torch.Tensor, chunk: int = 64) -> None:
        """pred, target [N, H, W]; taken `chunk` images at a time, which bounds the per-class maps' memory."""
        if pred.shape != target.shape or target.dim() != 3:
            raise ValueError(f"expected prediction and ground truth of one shape [N, H, W], got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        k, dims = self.num_classes, (0, 2, 3)
        for i in range(0, len(target), chunk):
            t = target[i:i + chunk].long()
            p = torch.where(t != IGNORE, pred[i:i + chunk].long(), IGNORE)
            is_p, is_t = _neighbour_classes(p, k, 0), _neighbour_classes(t, k, 0)
            near_p, near_t = _neighbour_classes(p, k, self.radius), _neighbour_classes(t, k, self.radius)
            self.counts += torch.stack([(is_p & near_t).sum(dims), is_p.sum(dims),
                                        (is_t & near_p).sum(dims), is_t.sum(dims)]).double()

    @property
    def iou(self) -> torch.Tensor:
        """Per class; NaN where the class is in neither prediction nor ground truth."""
        ok_p, n_p, ok_t, n_t = self.counts
        prec, rec = ok_p / n_p.clamp(min=1), ok_t / n_t.clamp(min=1)
        f = 2 * prec * rec / (prec + rec).clamp(min=1e-12)
        return torch.where((n_p + n_t) > 0, f / (2 - f), torch.full_like(f, float("nan")))

    @property
    def miou(self) -> float:
        return _mean_present(self.iou)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, D] and b [M, D] (as FID does).

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64 through symmetric eigen-
    decompositions, so no scipy is needed and small negative eigenvalues from rounding are clipped.
    """
    a, b = a.double(), b.double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected two feature sets [N, D] with one D and N >= 2, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    ev, vec = torch.linalg.eigh(s_a)
    root_a = vec @ torch.diag(ev.clamp(min=0).sqrt()) @ vec.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * cross)
