"""Segmentation metrics from one confusion matrix: per-class IoU, mIoU, pixel accuracy.

Everything is accumulated as integer counts, so results over a data set do not depend on batch size, and
pixels labelled 255 (unlabelled) are ignored. A class absent from both prediction and ground truth has no IoU
(NaN) and is left out of the mean, rather than counted as a perfect 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = 255


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
        iou = self.iou
        return float(iou[~iou.isnan()].mean()) if (~iou.isnan()).any() else float("nan")

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
