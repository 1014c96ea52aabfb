"""The shipped built-in generator, its default annotation set, and the label oracle that made it."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file

from partseg.data.dataset import load_dataset, read_image, read_mask
from partseg.eval.oracle import DEFAULT_ORACLE, load_oracle, predict_labels
from partseg.gan import load_generator
from partseg.gan.checkpoints import builtin_annotations, builtin_path
from partseg.gan.sampling import sample


def test_shipped_generator_loads_small_and_generates_finite_images():
    assert builtin_path("faces64").stat().st_size <= 20 * 2**20
    G = load_generator("builtin:faces64")
    assert G.resolution == 64
    img = G(torch.randn(4, G.z_dim))
    assert img.shape == (4, 3, 64, 64) and torch.isfinite(img).all()
    assert img.std() > 0.1  # not a constant picture


def test_default_annotations_regenerate_and_match_the_oracle():
    root = builtin_annotations("faces64")
    labels, items = load_dataset(root)
    assert len(items) == 10 and labels.names[0] == "background"
    index = json.loads((root / "samples.json").read_text())
    lat = load_file(str(root / index["latents"]))
    G = load_generator("builtin:faces64")
    # the recorded latents regenerate the stored images exactly (to PNG rounding)
    s = sample(G, 10, seed=int(lat["seeds"][0]), truncation=index["truncation"], noise_mode=index["noise_mode"])
    assert torch.allclose(s.ws, lat["ws"], atol=1e-6)
    stored = np.stack([read_image(img) for _, img, _ in items])
    regenerated = ((s.images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(stored.astype(int) - regenerated.astype(int)).max() <= 1
    # the oracle's labels of the regenerated samples are the shipped masks (the PNGs' 8-bit rounding alone
    # moves about 1% of the oracle's labels, so the check runs on the generator's output, as the set was made)
    assert DEFAULT_ORACLE.exists()
    pred, _ = predict_labels(load_oracle(), s.images)
    masks = np.stack([read_mask(m, labels) for _, _, m in items])
    assert (pred.numpy() == masks).mean() > 0.999
    present = set(np.unique(masks))
    assert {0, 1, 3, 5, 6} <= present  # background, skin, eye, nose, mouth appear in the set
