"""`partseg demo` runs end to end on whatever the built-in default is in this install."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from partseg.demo import run_demo
from partseg.gan.checkpoints import DEFAULT_GAN


# the default (the aligned world's generator, whose head needs more steps before any pixel is confident), and the
# first edition's wild 64 px generator, which stays loadable
@pytest.mark.parametrize("gan, head_steps", [(DEFAULT_GAN, 100), ("builtin:faces64", 30)])
def test_demo_runs_and_writes_its_outputs(tmp_path, gan, head_steps):
    res = run_demo(tmp_path, gan=gan, n=4, head_steps=head_steps, n_test=2, inversion_steps=10, distill_steps=3,
                   distill_batch=2)
    assert res["channels"] > 0
    if res["generator"].startswith("builtin:"):  # a shipped generator: the few-shot stages ran and were scored
        assert 0 <= res["miou_inversion"] <= 1 and 0 <= res["miou_unet"] <= 1
        for pred in ("pred_unet", "pred_inversion"):
            assert (tmp_path / pred / "eval.png").exists() and len(list((tmp_path / pred / "overlays").glob("*"))) == 2
        assert (tmp_path / "unet.onnx").is_file() and (tmp_path / "unet" / "model.safetensors").is_file()
        size = Image.open(next((tmp_path / "test" / "images").glob("*.png"))).width
        zoom = 3 if size <= 64 else 2
        overview = Image.open(tmp_path / "overview.png")
        assert overview.size == (4 * size * zoom, 2 * size * zoom)  # 2 faces x (image, truth, UNet, inversion)
        if res["test_mode"] == "aligned":  # an aligned generator: the UNet is also scored on unaligned renders
            assert 0 <= res["miou_unet_wild"] <= 1
            assert Image.open(tmp_path / "overview_wild.png").size == (3 * size * zoom, 2 * size * zoom)
    index = json.loads((tmp_path / "samples" / "samples.json").read_text())
    assert len(index["samples"]) == 4
    panel = Image.open(tmp_path / "features.png")
    assert panel.width == 3 * panel.height  # image | PCA | clusters
    colours = np.asarray(panel.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 10  # not a blank picture
