"""Supervised training of a segmenter on a stream of (image, target) batches, resumable.

Used for the label oracle (rendered images, exact masks) and for auto-shot distillation (generated images,
head labels). Targets are class indices [N, H, W] (255 = ignore) or class probabilities [N, K, H, W] (soft
labels). The batch stream is a function of the step it starts at, so a resumed run sees the data an
uninterrupted one would have seen; the run folder holds `checkpoint.pt` (atomic, weights_only-loadable),
`model.safetensors` and `log.jsonl`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .atomic import atomic_torch_save, atomic_write_text
from .labels import Labels
from .unet import UNet, save_unet

SEG_TRAIN_FORMAT = "partseg.segtrain"
Batches = Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # start step -> (x, target) batches


@dataclass
class SegTrainConfig:
    steps: int = 4000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100  # linear warm-up steps, then cosine decay to 1% of lr
    grad_clip: float = 1.0  # 0 disables
    ckpt_every: int = 250
    log_every: int = 25
    seed: int = 0

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against hard labels (ignoring 255) or against soft class probabilities."""
    if target.dtype.is_floating_point:
        return F.cross_entropy(logits, target)
    return F.cross_entropy(logits, target.long(), ignore_index=255)


def fit_segmenter(model: UNet, batches: Batches, cfg: SegTrainConfig, run: str | os.PathLike,
                  labels: Labels | None = None, device: str | torch.device = "cpu", progress: bool = True,
                  stop_at_step: int | None = None, desc: str = "train",
                  validate: Callable[[UNet], float] | None = None, val_every: int = 0,
                  extra_meta: dict[str, str] | None = None) -> dict:
    """Train `model` in place (resuming from `run` if it holds a checkpoint); returns a summary.

    validate: a score (higher is better, e.g. mIoU) computed every `val_every` steps and at the end; the best
    model so far is kept as run/best.safetensors next to the last one, run/model.safetensors.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    best = float("-inf")
    ckpt_path = run / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("format") != SEG_TRAIN_FORMAT:
            raise ValueError(f"{ckpt_path}: not a partseg segmenter training checkpoint")
        if ckpt["model_config"] != model.cfg.to_dict():
            raise ValueError(f"{run} holds a run of a different model ({ckpt['model_config']}); use a new folder")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step = int(ckpt["step"])
        best = float(ckpt.get("best", float("-inf")))
    log_lines = []
    if (run / "log.jsonl").exists():
        log_lines = [ln for ln in (run / "log.jsonl").read_text().splitlines()
                     if ln.strip() and _step_of(ln) <= step]
    atomic_write_text(json.dumps(asdict(cfg), indent=1), run / "train_config.json")

    def save() -> None:
        atomic_torch_save({"format": SEG_TRAIN_FORMAT, "step": step, "model_config": model.cfg.to_dict(),
                           "train_config": asdict(cfg), "model": model.state_dict(), "opt": opt.state_dict(),
                           "best": best}, ckpt_path)
        save_unet(model, run / "model.safetensors", labels, extra={"step": str(step), **(extra_meta or {})})
        atomic_write_text("".join(ln + "\n" for ln in log_lines), run / "log.jsonl")

    end = cfg.steps if stop_at_step is None else min(stop_at_step, cfg.steps)
    start = step
    stream = batches(step)
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress, dynamic_ncols=True)
    losses: list[float] = []
    t0 = time.time()
    while step < end:
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        x, target = next(stream)
        x, target = x.to(device, non_blocking=True), target.to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        loss = segmentation_loss(model(x), target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; the last good checkpoint is "
                                     f"{ckpt_path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            rec = {"step": step, "loss": round(sum(losses) / len(losses), 5), "lr": cfg.lr_at(step - 1),
                   "sec_per_step": round((time.time() - t0) / len(losses), 4)}
            log_lines.append(json.dumps(rec))
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            losses, t0 = [], time.time()
        if validate is not None and ((val_every and step % val_every == 0) or step == end):
            model.eval()
            score = float(validate(model))
            model.train()
            log_lines.append(json.dumps({"step": step, "val": round(score, 5)}))
            bar.set_postfix(loss=f"{sum(losses[-10:]) / max(len(losses[-10:]), 1):.4f}", val=f"{score:.4f}")
            if score > best:
                best = score
                save_unet(model, run / "best.safetensors", labels,
                          extra={"step": str(step), "val": str(score), **(extra_meta or {})})
        if step % cfg.ckpt_every == 0 or step == end:
            save()
    bar.close()
    model.eval()
    return {"run": str(run), "step": step, "start_step": start, "stopped_early": step < cfg.steps,
            "best": best if validate is not None else None}


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError):
        return 1 << 62  # a line torn by a kill: dropped
