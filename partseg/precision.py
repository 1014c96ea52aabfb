"""Which float precision to train in: bfloat16 autocast where the hardware has bf16 units, float32 elsewhere.

Measured on an AMD EPYC with AVX512-BF16 (BENCHMARKS.md): bf16 autocast made the GAN's G/D passes 1.2-2.7x and
the segmentation UNet's training step 1.9-2.5x faster ("seg-train-speed"); without bf16 units it can be slower.
"""

from __future__ import annotations

from pathlib import Path

import torch

AMP_MODES = ("auto", "bf16", "off")


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_amp(mode: str, device: torch.device) -> bool:
    """auto: bf16 on CUDA and on CPUs with bf16 units; off elsewhere. bf16 / off force it."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "off":
        return False
    if mode == "bf16":
        return True
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
