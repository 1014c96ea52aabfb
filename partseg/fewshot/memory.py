"""How much memory the few-shot stages may use, and how they fit in it.

Whole feature maps are the simple path and the one every earlier result used, so a stage takes it whenever the
maps fit in the budget. Otherwise head training reads feature crops (CNN, with the head's receptive-field margin)
or sampled pixels (MLP) from a per-shot cache of the generator's layers at their own resolution (a few hundred MB
per shot instead of GBs), and prediction runs one sample, then one tile at a time.

The budget is in GB (1024^3 bytes) and covers feature maps, caches and head activations, not the generator's
weights or Python itself. "auto" (the default) is half the memory the system reports available.
The estimates below are deliberately simple (tensor sizes with a margin); BENCHMARKS.md has measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

GB = 1024 ** 3
FALLBACK_BUDGET = 4 * GB  # when /proc/meminfo cannot be read
MIN_TILE = 8
# float32 maps a head holds per pixel on top of its input, beyond the input's own channels: the CNN's widest
# layers (128, then 64s) with what autograd keeps for the backward pass; inference keeps two at a time.
TRAIN_WORK_CHANNELS = 2400
PREDICT_WORK_CHANNELS = 300
# A training step holds its input twice: the first conv's weight gradient works on a second copy of it
# (measured: a 10-shot 1024 px step peaked ~1.7 GB, one input, above the estimate that counted it once).
TRAIN_INPUT_COPIES = 2


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def budget_bytes(memory: float | str | None) -> int:
    """A budget in bytes from GB (a number or a numeric string) or None / 'auto' (half the available memory)."""
    if memory is None or (isinstance(memory, str) and memory.strip().lower() in ("", "auto")):
        avail = available_bytes()
        return avail // 2 if avail else FALLBACK_BUDGET
    try:
        gb = float(str(memory).strip().lower().removesuffix("gb").strip())
    except ValueError:
        raise ValueError(f"memory must be a number of GB (e.g. 6 or 0.5) or 'auto', got {memory!r}") from None
    if not gb > 0:
        raise ValueError(f"memory must be > 0 GB (or 'auto'), got {memory!r}")
    return int(gb * GB)


def head_margin(module: nn.Module) -> int:
    """Pixels of context a head reads on each side of an output pixel: (receptive field - 1) / 2.

    Summed over the convs of a plain stack (our heads): the paper's CNN has 3x3 convs dilated 2, 4, 8, 1, 2, 4,
    8, 1, so 30 (a 61 px receptive field); 1x1 convs and the MLP add nothing."""
    members = getattr(module, "members", None)
    if members is not None:
        return max(head_margin(m) for m in members)
    return sum(m.dilation[0] * (m.kernel_size[0] - 1) // 2 for m in module.modules() if isinstance(m, nn.Conv2d))


def channels(source) -> int:
    return sum(source.channels[n] for n in source.layers)


def activation_bytes(source, batch: int = 1) -> int:
    """One forward pass's feature layers in float32, with half again for what the generator holds meanwhile."""
    return int(1.5 * batch * sum(source.channels[n] * source.resolutions[n] ** 2 * 4 for n in source.layers))


def compact_bytes(source, size: int, itemsize: int) -> int:
    """One sample's feature layers kept at min(own resolution, size): what a shot cache holds."""
    return sum(source.channels[n] * min(source.resolutions[n], size) ** 2 * itemsize for n in source.layers)


@dataclass
class TrainPlan:
    full: bool  # whole feature maps of every shot, as before
    crop: int = 0  # cnn: side of the square of output pixels each step's loss covers
    cache_dtype: torch.dtype = torch.float32
    budget: int = 0

    def describe(self) -> dict:
        return {"crop": self.crop, "cache_dtype": str(self.cache_dtype).removeprefix("torch.")}


def plan_training(source, n_shots: int, size: int, kind: str, budget: int, margin: int,
                  pixels_per_step: int = 2048) -> TrainPlan:
    """Whole maps when they fit; else a shot cache (float32 when it takes at most half the budget, else
    float16) plus the largest crop (CNN) whose step fits in the rest."""
    c = channels(source)
    maps = n_shots * c * size * size * 4 * (2 if kind == "mlp" else 1)  # mlp also holds a [pixels, C] copy
    work = ((TRAIN_INPUT_COPIES - 1) * c + TRAIN_WORK_CHANNELS) * size * size * 4 if kind == "cnn" else 0
    if maps + work + activation_bytes(source) <= budget:
        return TrainPlan(True, budget=budget)
    cache32 = n_shots * compact_bytes(source, size, 4)
    dtype = torch.float32 if cache32 <= budget // 2 else torch.float16
    rest = budget - cache32 // (1 if dtype == torch.float32 else 2)
    if kind == "mlp":
        if rest < 4 * pixels_per_step * c * 4:
            raise ValueError(_too_small(budget, cache32 // 2 + 4 * pixels_per_step * c * 4, "MLP head training"))
        return TrainPlan(False, 0, dtype, budget)
    crop = size
    step = TRAIN_INPUT_COPIES * c + TRAIN_WORK_CHANNELS  # float32 values per pixel of the crop's window
    while crop >= MIN_TILE and step * min(crop + 2 * margin, size) ** 2 * 4 > rest:
        crop -= MIN_TILE
    if crop < MIN_TILE:
        need = cache32 // 2 + step * min(MIN_TILE + 2 * margin, size) ** 2 * 4
        raise ValueError(_too_small(budget, need, "CNN head training"))
    return TrainPlan(False, min(crop, size), dtype, budget)


@dataclass
class PredictPlan:
    full: bool  # the whole batch's feature maps at once, as before
    chunk: int = 1  # samples per generator pass
    tile: int = 0  # side of the output tiles; >= size: whole maps per chunk


def plan_prediction(source, n: int, size: int, margin: int, num_classes: int, budget: int,
                    tile: int | None = None) -> PredictPlan:
    """Whole maps for the batch when they fit; else as many whole maps per pass as fit; else one sample in
    tiles of the largest size that fits. tile: force tiles of this size, one sample per pass."""
    c = channels(source)
    out = n * num_classes * size * size * 4 * 2  # log-probabilities, plus a tile's copy
    per_sample = activation_bytes(source) + (c + PREDICT_WORK_CHANNELS) * size * size * 4
    if tile is not None:
        if tile < 1:
            raise ValueError(f"tile must be >= 1, got {tile}")
        return PredictPlan(False, 1, tile)
    if n * per_sample + out <= budget:
        return PredictPlan(True, n, size)
    chunk = (budget - out) // per_sample
    if chunk >= 1:
        return PredictPlan(False, int(min(chunk, n)), size)
    t = size - MIN_TILE
    while t >= MIN_TILE and activation_bytes(source) + (c + PREDICT_WORK_CHANNELS) * min(t + 2 * margin, size) ** 2 \
            * 4 + out > budget:
        t -= MIN_TILE
    if t < MIN_TILE:
        need = activation_bytes(source) + (c + PREDICT_WORK_CHANNELS) * min(MIN_TILE + 2 * margin, size) ** 2 * 4 + out
        raise ValueError(_too_small(budget, need, f"prediction of {n} samples"))
    return PredictPlan(False, 1, t)


def _too_small(budget: int, need: int, what: str) -> str:
    return (f"memory budget {budget / GB:.2f} GB is too small for {what}: it needs at least about "
            f"{need / GB:.2f} GB (raise --memory, or use fewer layers or a smaller feature size)")
