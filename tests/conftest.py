"""Shared fixtures: tiny configs so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from partseg.gan import Generator, GeneratorConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFORMANCE = SHARED / "conformance"

torch.set_num_threads(min(2, torch.get_num_threads()))


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The console entry point in-process (its one-line error handling included): (exit code, stdout + stderr)."""
    import sys

    from partseg.cli import main

    monkeypatch.setattr(sys, "argv", ["partseg", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def tiny_config(resolution: int = 32) -> GeneratorConfig:
    ch = {4: 32, 8: 32, 16: 16, 32: 16, 64: 8}
    return GeneratorConfig(resolution=resolution, z_dim=32, w_dim=32, n_mlp=2,
                           channels={r: c for r, c in ch.items() if r <= resolution})


def write_small_unet(path: Path) -> Path:
    """A small UNet (channels [8, 16, 32, 64], stride 8, trained size 64, FACES labels) with non-trivial BatchNorm
    statistics, so folding them into the convs at export time is exercised."""
    from partseg.distill.unet import UNet, UNetConfig, save_unet
    from partseg.labels import FACES

    torch.manual_seed(0)
    model = UNet(UNetConfig(num_classes=len(FACES), channels=[8, 16, 32, 64]))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64) * 0.7 + 0.1)
    return save_unet(model.eval(), path, FACES, extra={"train_resolution": "64"})


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory) -> Path:
    return write_small_unet(tmp_path_factory.mktemp("unet") / "model.safetensors")


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


# The HTTP-service fixtures (serve_built, serve_server, serve_reference), session-scoped so that every
# tests/test_serve*.py module shares one real server.
from tests.serve_support import serve_built, serve_reference, serve_server  # noqa: E402, F401
