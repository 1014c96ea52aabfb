"""`partseg eval`: compare predicted label PNGs with ground-truth masks; JSON report and a plot.

Predictions and ground truth are matched by file stem. Each may be a data-set folder (masks in `masks/`),
a `partseg predict` output (masks in `labels/`) or a plain folder of mask PNGs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from partseg.atomic import atomic_write_text
from partseg.data.dataset import read_mask
from partseg.eval.metrics import ScoreAccumulator, SegScores
from partseg.labels import Labels


def mask_files(root: str | os.PathLike) -> dict[str, Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"mask folder not found: {root}")
    for sub in ("masks", "labels"):
        if (root / sub).is_dir():
            root = root / sub
            break
    files = {p.stem: p for p in sorted(root.glob("*.png"))}
    if not files:
        raise ValueError(f"{root}: no mask PNGs found")
    return files


def evaluate_folders(pred: str | os.PathLike, gt: str | os.PathLike, labels: Labels) -> tuple[SegScores, dict]:
    """Scores over all images present in both; an image missing from the predictions is an error."""
    p_files, g_files = mask_files(pred), mask_files(gt)
    missing = sorted(g_files.keys() - p_files.keys())
    if missing:
        raise ValueError(f"{pred}: no prediction for {len(missing)} ground-truth masks: {', '.join(missing[:8])}")
    acc = ScoreAccumulator(len(labels))
    per_image = {}
    for name, g in g_files.items():
        gm, pm = read_mask(g, labels), read_mask(p_files[name], labels)
        if gm.shape != pm.shape:
            raise ValueError(f"{p_files[name]}: prediction is {pm.shape[1]}x{pm.shape[0]} but ground truth {g} is "
                             f"{gm.shape[1]}x{gm.shape[0]}")
        one = ScoreAccumulator(len(labels))
        one.add(torch.from_numpy(pm), torch.from_numpy(gm))
        acc.confusion += one.confusion
        per_image[name] = round(one.scores().miou, 4)
    return acc.scores(), per_image


def report(scores: SegScores, labels: Labels, per_image: dict | None = None) -> dict:
    iou = {n: (None if np.isnan(v) else round(v, 4)) for n, v in scores.per_class(list(labels.names)).items()}
    return {"miou": round(scores.miou, 4), "pixel_accuracy": round(scores.pixel_accuracy, 4), "iou": iou,
            "confusion": scores.confusion.tolist(), "classes": list(labels.names), "per_image_miou": per_image or {}}


def plot_scores(scores: SegScores, labels: Labels, path: str | os.PathLike) -> Path:
    """Per-class IoU bars next to the row-normalised confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(labels.names)
    cm = scores.confusion.double()
    norm = (cm / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.2]})
    iou = np.nan_to_num(scores.iou.numpy(), nan=0.0)
    ax1.barh(names[::-1], iou[::-1], color=[np.array(c) / 255 for c in labels.colors][::-1], edgecolor="black")
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("IoU")
    ax1.set_title(f"mIoU {scores.miou:.3f}, pixel accuracy {scores.pixel_accuracy:.3f}")
    im = ax2.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax2.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax2.set_yticks(range(len(names)), names)
    ax2.set_xlabel("predicted")
    ax2.set_ylabel("ground truth")
    ax2.set_title("confusion (rows sum to 1)")
    fig.colorbar(im, ax=ax2, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_and_write(pred: str | os.PathLike, gt: str | os.PathLike, labels: Labels,
                       out: str | os.PathLike) -> dict:
    scores, per_image = evaluate_folders(pred, gt, labels)
    rep = report(scores, labels, per_image)
    out = Path(out)
    atomic_write_text(json.dumps(rep, indent=1), out / "eval.json")
    plot_scores(scores, labels, out / "eval.png")
    return rep
