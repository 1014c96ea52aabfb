"""Every checkpoint loader refuses empty, truncated, text-renamed and code-carrying files (issue #17) with one line
that names the file, and never runs the code: each code-carrying file would create a marker file if it ran.

Loaders: generator (.safetensors, rosinality .pt, NVIDIA .pkl, run folder), head, UNet (library and runtime),
and the training checkpoints of `gan train`, `distill`/oracle (segmenter) and `partseg train` (head)."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from partseg.cli import main
from partseg.distill.trainer import SegTrainConfig, fit_segmenter
from partseg.distill.unet import UNet, UNetConfig, load_unet
from partseg.fewshot.heads import Ensemble, HeadConfig
from partseg.fewshot.learner import FewShotConfig, FewShotHead, Shots, train_head
from partseg.gan import load_generator, save_generator
from partseg.gan.train import TrainConfig, train
from partseg.labels import Labels
from partseg.runtime.segmenter import Segmenter
from tests.conftest import CONFORMANCE, tiny_config, write_small_unet
from tests.test_nvidia import _random_G, nvidia_structure, snapshot, write_pickle

LABELS = Labels(["a", "b"], [(0, 0, 0), (255, 255, 255)])
HOSTILE = ["empty", "truncated", "text", "pickle-os.system", "torch-zip-os.system"]


class _Evil:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return os.system, self.args


def _hostile(kind: str, valid: bytes, marker: Path, path: Path) -> Path:
    cmd = f"touch {marker}"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(valid[:len(valid) // 2])
    elif kind == "text":
        path.write_text("# Notes\nThis is a README renamed to look like a checkpoint.\n")
    elif kind == "pickle-os.system":
        path.write_bytes(pickle.dumps({"G_ema": _Evil(cmd), "g_ema": _Evil(cmd)}, protocol=2))
    else:
        torch.save({"format": "x", "g_ema": _Evil(cmd), "step": _Evil(cmd)}, path)
    return path


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, bytes]:
    """One valid file of each kind: what the truncated variants are cut from."""
    root = tmp_path_factory.mktemp("valid")
    G = _random_G(tiny_config())
    out = {"generator": save_generator(G, root / "g.safetensors").read_bytes(),
           "nvidia": write_pickle(snapshot(nvidia_structure(G, ""), ""), root / "g.pkl").read_bytes(),
           "unet": write_small_unet(root / "u.safetensors").read_bytes()}
    rosinality = CONFORMANCE / "rosinality-64-checkpoint.pt"
    if rosinality.is_file():
        out["rosinality"] = rosinality.read_bytes()
    else:  # any torch zip archive: truncation breaks the archive, whatever it held
        torch.save({"g_ema": {"input.input": torch.randn(1, 32, 4, 4)}}, root / "r.pt")
        out["rosinality"] = (root / "r.pt").read_bytes()
    head = FewShotHead(Ensemble(HeadConfig("cnn", 8, 2)), LABELS, {"gan_fingerprint": "0" * 16})
    out["head"] = head.save(root / "h.safetensors").read_bytes()
    torch.save({"format": "partseg.gan.train", "step": 1, "G": {"w": torch.randn(256, 64)}}, root / "c.pt")
    out["training"] = (root / "c.pt").read_bytes()
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    return root


def _seg_resume(path: Path) -> None:
    fit_segmenter(UNet(UNetConfig(num_classes=2, channels=[4, 8])), lambda s: iter(()),
                  SegTrainConfig(steps=1), path.parent, progress=False)


def _head_resume(path: Path) -> None:
    G = _random_G(tiny_config())
    shots = Shots(["s"], torch.zeros(1, G.num_ws, G.w_dim), [0], "const", torch.zeros(1, 32, 32, dtype=torch.long),
                  LABELS)
    train_head(G, shots, FewShotConfig(head="mlp", steps=1), progress=False, checkpoint=path)


# name -> (file name, which valid file it is cut from, load(path))
LOADERS = {
    "generator .safetensors": ("g.safetensors", "generator", load_generator),
    "rosinality .pt": ("g.pt", "rosinality", load_generator),
    "nvidia .pkl": ("g.pkl", "nvidia", load_generator),
    "generator run folder": ("checkpoint.pt", "training", lambda p: load_generator(p.parent)),
    "head": ("h.safetensors", "head", FewShotHead.load),
    "unet": ("u.safetensors", "unet", load_unet),
    "runtime unet": ("u.safetensors", "unet", lambda p: Segmenter.load(p, backend="torch")),
    "segmenter training checkpoint": ("checkpoint.pt", "training", _seg_resume),
    "head training checkpoint": ("h.safetensors.ckpt.pt", "training", _head_resume),
}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("loader", list(LOADERS))
def test_loader_refuses_hostile_file(loader, kind, valid, tmp_path):
    name, base, load = LOADERS[loader]
    marker = tmp_path / "code_ran"
    (tmp_path / "run").mkdir()
    path = _hostile(kind, valid[base], marker, tmp_path / "run" / name)
    with pytest.raises(ValueError) as e:
        load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert not marker.exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_gan_training_resume_refuses_hostile_checkpoint(kind, valid, images, tmp_path):
    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    run.mkdir()
    path = _hostile(kind, valid["training"], marker, run / "checkpoint.pt")
    cfg = TrainConfig(data=str(images), resolution=32, batch=2, z_dim=16, w_dim=16, channel_base=256,
                      channel_max=16, workers=0, kimg=0.002)
    with pytest.raises(ValueError) as e:
        train(cfg, run, progress=False)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "delete it to start the run over" in str(e.value)
    assert not marker.exists()


def test_cli_error_is_one_line_and_runs_nothing(tmp_path, monkeypatch, capsys, valid):
    marker = tmp_path / "code_ran"
    path = _hostile("torch-zip-os.system", b"", marker, tmp_path / "evil.pt")
    monkeypatch.setattr(sys, "argv", ["partseg", "gan", "info", str(path)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and err.startswith(f"error: {path}: ")
    assert not marker.exists()
