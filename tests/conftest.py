"""Shared fixtures: tiny configs so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from partseg.gan import Generator, GeneratorConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFORMANCE = SHARED / "conformance"

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_config(resolution: int = 32) -> GeneratorConfig:
    ch = {4: 32, 8: 32, 16: 16, 32: 16, 64: 8}
    return GeneratorConfig(resolution=resolution, z_dim=32, w_dim=32, n_mlp=2,
                           channels={r: c for r, c in ch.items() if r <= resolution})


@pytest.fixture
def tiny_G() -> Generator:
    torch.manual_seed(0)
    G = Generator(tiny_config())
    # non-zero noise strengths and biases so every parameter matters
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return G
