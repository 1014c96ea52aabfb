"""The shipped built-in generators, their default annotation sets, and the label oracles that made them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from partseg.data.dataset import load_dataset, read_image, read_mask
from partseg.eval.oracle import ORACLES, load_oracle, predict_labels
from partseg.gan import load_generator
from partseg.gan.checkpoints import BUILTIN_MODES, BUILTINS, DEFAULT_GAN, builtin_annotations, builtin_path
from partseg.gan.sampling import sample
from partseg.labels import FACES

SIZES = {"faces64": 64, "faces128": 128}


def test_every_builtin_has_a_world_an_annotation_set_and_the_default_is_one_of_them():
    assert set(BUILTIN_MODES) == set(BUILTINS) == set(SIZES)
    assert DEFAULT_GAN.removeprefix("builtin:") in BUILTINS


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_shipped_generator_loads_small_and_generates_finite_images(name):
    assert builtin_path(name).stat().st_size <= 20 * 2**20
    G = load_generator(f"builtin:{name}")
    assert G.resolution == SIZES[name]
    img = G(torch.randn(4, G.z_dim))
    assert img.shape == (4, 3, G.resolution, G.resolution) and torch.isfinite(img).all()
    assert img.std() > 0.1  # not a constant picture


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_default_annotations_regenerate_and_match_the_oracle(name):
    root = builtin_annotations(name)
    labels, items = load_dataset(root)
    assert len(items) == 10 and labels.names[0] == "background"
    index = json.loads((root / "samples.json").read_text())
    lat = load_file(str(root / index["latents"]))
    G = load_generator(f"builtin:{name}")
    # the recorded latents regenerate the stored images exactly (to PNG rounding)
    s = sample(G, 10, seed=int(lat["seeds"][0]), truncation=index["truncation"], noise_mode=index["noise_mode"])
    assert torch.allclose(s.ws, lat["ws"], atol=1e-6)
    stored = np.stack([read_image(img) for _, img, _ in items])
    regenerated = ((s.images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(stored.astype(int) - regenerated.astype(int)).max() <= 1
    # the oracle of the generator's world labels the regenerated samples as shipped (the PNGs' 8-bit rounding
    # alone moves about 1% of the oracle's labels, so the check runs on the generator's output, as the set was made)
    oracle = ORACLES[BUILTIN_MODES[name]]
    assert oracle.exists()
    pred, _ = predict_labels(load_oracle(oracle), s.images)
    masks = np.stack([read_mask(m, labels) for _, _, m in items])
    assert (pred.numpy() == masks).mean() > 0.999
    present = {FACES.names[i] for i in np.unique(masks)}
    needed = {"background", "skin", "eye", "nose", "mouth"}
    if BUILTIN_MODES[name] == "aligned":  # the second edition's promise: every part of a face appears in the set
        needed |= {"hair", "eyebrow", "neck"}
    assert needed <= present, f"missing from builtin:{name}'s default annotation set: {needed - present}"
