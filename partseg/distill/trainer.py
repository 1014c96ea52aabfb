"""Supervised training of a segmenter on a stream of (image, target) batches, resumable.

Used for the label oracle (rendered images, exact masks) and for auto-shot distillation (generated images,
head labels). Targets are class indices [N, H, W] (255 = ignore) or class probabilities [N, K, H, W] (soft
labels). The batch stream is a function of the step it starts at, so a resumed run sees the data an
uninterrupted one would have seen; the run folder holds `checkpoint.pt` (atomic, weights_only-loadable),
`model.safetensors` and `log.jsonl`.

Under torch.distributed (e.g. torchrun) every process calls `fit_segmenter` with its own stream, its share of
the global batch. Gradients are averaged in one all-reduce per step (the GAN trainer's helper), so the global
batch is the sum of the per-process batches; BatchNorm normalises with each process's own batch statistics
(as plain DDP does) and its running statistics are averaged every step, so every replica holds the same
parameters and buffers (checked at each checkpoint and logged as a `ddp_sync` event). Only rank 0 validates and
writes files; every rank reads the checkpoint to resume, so the run folder must be one all processes see.
On CUDA and on CPUs with bf16 units the forward pass runs under bfloat16 autocast (`amp`; 1.9-2.5x faster on an
AVX512-BF16 EPYC, BENCHMARKS.md "seg-train-speed"); the loss and the weights stay float32.
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
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from partseg.atomic import atomic_torch_save, atomic_write_text
from partseg.distill.unet import UNet, save_unet
from partseg.distributed import Dist
from partseg.labels import IGNORE, Labels
from partseg.precision import resolve_amp
from partseg.runs import (
    StopOnSignal,
    clean_stale_tmp,
    load_checkpoint,
    read_log,
    refuse_other_settings,
    write_log,
    write_settings,
)

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
    amp: bool = True  # bfloat16 autocast of the forward pass on CUDA and on CPUs with bf16 units (precision.py)
    dice_weight: float = 0.0  # adds this times the soft Dice loss, which lifts small parts' IoU (hard labels)
    class_weight: list[float] | None = None  # cross-entropy weight per class (hard labels), e.g. inverse frequency

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.0,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against hard labels (ignoring 255, optionally class-weighted) or soft class probabilities.

    dice_weight > 0 adds a soft Dice term (hard labels only). Cross-entropy is dominated by the large classes;
    Dice weighs every class present in the batch equally, which is what mIoU rewards on parts a few pixels wide.
    """
    if target.dtype.is_floating_point:
        return F.cross_entropy(logits, target)
    target = target.long()
    loss = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice_loss(logits, target)
    return loss


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch's labels, pixels of the batch pooled."""
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1).float()
    prob = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2).float() * valid
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1 - dice[present].mean() if bool(present.any()) else logits.sum() * 0


def fit_segmenter(model: UNet, batches: Batches, cfg: SegTrainConfig, run: str | os.PathLike,
                  labels: Labels | None = None, device: str | torch.device = "cpu", progress: bool = True,
                  stop_at_step: int | None = None, desc: str = "train",
                  validate: Callable[[UNet], float] | None = None, val_every: int = 0,
                  extra_meta: dict[str, str] | None = None, settings: dict | None = None,
                  may_change: tuple[str, ...] = ()) -> dict:
    """Train `model` in place (resuming from `run` if it holds a checkpoint); returns a summary.

    validate: a score (higher is better, e.g. mIoU) computed every `val_every` steps and at the end; the best
    model so far is kept as run/best.safetensors next to the last one, run/model.safetensors.
    settings: what defines the run (JSON-able); a run resumed with other settings is refused with the
    differences, except for the keys in `may_change`. Kept in the checkpoint and in run/run_config.json.
    SIGINT/SIGTERM finish the step, write a checkpoint and return (`stopped_early`).
    Under torch.distributed, call it on every process with that process's stream (see the module docstring).
    """
    run = Path(run)
    dd = Dist()
    is_main = dd.rank == 0
    device = torch.device(device)
    use_amp = resolve_amp("auto" if cfg.amp else "off", device)
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(run)  # half-written files of a run killed mid-write; the real ones are intact
    model.to(device, memory_format=torch.channels_last).train()  # NHWC convs: ~15% faster steps on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = None if cfg.class_weight is None else torch.tensor(cfg.class_weight, dtype=torch.float32, device=device)
    step = 0
    best = float("-inf")
    ckpt_path = run / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, SEG_TRAIN_FORMAT, "segmenter training", device)
        if settings is not None and ckpt.get("settings") is not None:
            refuse_other_settings(run, ckpt["settings"], settings, may_change)
        if ckpt["model_config"] != model.cfg.to_dict():
            raise ValueError(f"{run} holds a run of a different model ({ckpt['model_config']}); use a new folder")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step = int(ckpt["step"])
        best = float(ckpt.get("best", float("-inf")))
        if is_main and int(ckpt.get("world", dd.world)) != dd.world:
            tqdm.write(f"note: {run} was trained on {ckpt['world']} process(es), resuming on {dd.world}: the "
                       f"batches differ from an uninterrupted run's from here on")
    if dd.world > 1:
        _check_same_step(step, run, dd.rank, device)
        dd.broadcast_(model)  # identical replicas even if the caller seeded processes differently
    log_lines = []
    started_before = (run / "train_config.json").exists()  # written when a run starts, before any checkpoint
    if is_main:
        log_lines = read_log(run / "log.jsonl", step)  # drop entries written after the checkpoint resumed from
        atomic_write_text(json.dumps(asdict(cfg), indent=1), run / "train_config.json")
        if settings is not None:
            write_settings(run, settings)

    def save() -> None:
        if not is_main:
            return
        atomic_torch_save({"format": SEG_TRAIN_FORMAT, "step": step, "model_config": model.cfg.to_dict(),
                           "train_config": asdict(cfg), "model": model.state_dict(), "opt": opt.state_dict(),
                           "best": best, "world": dd.world, "settings": settings}, ckpt_path)
        save_unet(model, run / "model.safetensors", labels, extra={"step": str(step), **(extra_meta or {})})
        write_log(run / "log.jsonl", log_lines)

    end = cfg.steps if stop_at_step is None else min(stop_at_step, cfg.steps)
    start = step
    stream = batches(step)
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not (progress and is_main), dynamic_ncols=True)
    losses: list[float] = []
    t0 = time.time()
    if is_main and progress:
        lost = "" if step or not started_before else (" (the previous run of this folder stopped before its first "
                                                 f"checkpoint; checkpoints every {cfg.ckpt_every} steps)")
        tqdm.write(f"{'resuming' if step else 'starting'} {run} at step {step} of {cfg.steps}"
                   f"{' (' + str(dd.world) + ' processes)' if dd.world > 1 else ''}{lost}")
    with StopOnSignal() as stop, bar:  # the bar is closed (its line ended) on errors too
        while step < end:
            torch.manual_seed(cfg.seed * 1_000_003 + dd.rank * 7919 + step)
            x, target = next(stream)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            target = target.to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            loss = segmentation_loss(logits.float(), target, cfg.dice_weight, weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # after backward: BatchNorm's backward reads the running statistics this averages in place
            loss_value = _mean_loss_and_sync_stats(dd, loss, model)  # the same on every process
            if not math.isfinite(loss_value):
                raise FloatingPointError(_nan_message(loss_value, step, target, ckpt_path))
            if dd.world > 1:
                dd.average_grads(list(model.parameters()))
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss_value)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                rec = {"step": step, "loss": round(sum(losses) / len(losses), 5), "lr": cfg.lr_at(step - 1),
                       "sec_per_step": round((time.time() - t0) / len(losses), 4),
                       "precision": "bf16" if use_amp else "fp32"}
                log_lines.append(json.dumps(rec))
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                losses, t0 = [], time.time()
            if is_main and validate is not None and ((val_every and step % val_every == 0) or step == end):
                model.eval()
                score = float(validate(model))
                model.train()
                log_lines.append(json.dumps({"step": step, "val": round(score, 5)}))
                bar.set_postfix(loss=f"{sum(losses[-10:]) / max(len(losses[-10:]), 1):.4f}", val=f"{score:.4f}")
                if score > best:
                    best = score
                    save_unet(model, run / "best.safetensors", labels,
                              extra={"step": str(step), "val": str(score), **(extra_meta or {})})
            stop_now = dd.any(stop.requested, device)  # every process leaves the loop together
            if step % cfg.ckpt_every == 0 or step == end or stop_now:
                if dd.world > 1:  # never write a checkpoint of replicas that drifted apart
                    log_lines.append(json.dumps(dd.check_replicas(step, model)))
                save()
            if stop_now:
                break
    if dd.on:
        dist.barrier()  # every process returns once rank 0's files are written (a resume may follow)
    model.to(memory_format=torch.contiguous_format).eval()  # back to the usual layout: as a reloaded model computes
    return {"run": str(run), "rank": dd.rank, "world": dd.world, "step": step, "start_step": start,
            "stopped_early": step < cfg.steps, "best": best if validate is not None and is_main else None}


def _mean_loss_and_sync_stats(dd: Dist, loss: torch.Tensor, model: torch.nn.Module) -> float:
    """The loss averaged over processes; also averages BatchNorm running statistics, in the same all-reduce."""
    if dd.world == 1:
        return loss.item()
    bufs = [b for b in model.buffers() if b.is_floating_point()]
    flat = dd.mean(torch.cat([loss.detach().float().reshape(1)] + [b.detach().float().flatten() for b in bufs]))
    with torch.no_grad():
        for b, v in zip(bufs, flat[1:].split([b.numel() for b in bufs]), strict=True):
            b.copy_(v.view_as(b))
    return float(flat[0])


def _nan_message(value: float, step: int, target: torch.Tensor, ckpt_path: Path) -> str:
    """Why the loss is not finite, what to change, and the checkpoint to go back to only if there is one."""
    why = ""
    if not target.dtype.is_floating_point and bool((target == IGNORE).all()):
        why = " because every pixel of the batch is ignored (label 255): there was nothing to learn from"
    if ckpt_path.exists():
        where = f"; the run's last checkpoint, {ckpt_path}, is kept: a re-run resumes from it"
    else:
        where = "; no checkpoint was written yet"
    return f"loss became {value} at step {step}{why}{where}; lower the learning rate or check the training data"


def _check_same_step(step: int, run: Path, rank: int, device: torch.device) -> None:
    """Every process must resume from the same checkpoint, or the replicas would train different models."""
    t = torch.tensor([step], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    if int(t) != step:
        raise RuntimeError(f"process {rank} found {run} at step {step} but rank 0 at step {int(t)}; every "
                           f"process must see the same run folder")
