"""Oracle training pipeline on a few rendered faces: runs, learns something, scores, reloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from partseg.data.faces import render_batch
from partseg.distill.trainer import SegTrainConfig
from partseg.eval.oracle import (
    cached_batches,
    evaluate_on_renders,
    load_oracle,
    oracle_batches,
    render_cached,
    segmenter_scores,
    to_input,
    train_oracle,
)
from partseg.labels import FACES


def test_rendered_stream_is_a_function_of_the_step():
    make = oracle_batches(n_train=20, size=32, batch=3, workers=0)
    a = [next(make(0)) for _ in range(1)][0]
    it = make(0)
    next(it)
    b1 = next(it)
    b2 = next(make(1))
    assert a[0].shape == (3, 3, 32, 32) and a[1].shape == (3, 32, 32)
    assert torch.equal(b1[0], b2[0]) and torch.equal(b1[1], b2[1])  # resuming at step 1 gives step 1's batch


def test_tiny_oracle_trains_and_reloads(tmp_path):
    torch.manual_seed(0)
    cfg = SegTrainConfig(steps=30, lr=5e-3, warmup=5, ckpt_every=30, log_every=10)
    model, res = train_oracle(tmp_path, n_train=40, size=32, batch=4, channels=[8, 16], cfg=cfg, workers=0,
                              progress=False)
    assert res["step"] == 30
    scores = evaluate_on_renders(model, n=8, size=32)
    assert scores.confusion.sum() == 8 * 32 * 32
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]  # it learns
    again = load_oracle(tmp_path / "model.safetensors", flip=False)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(again(x), model.eval()(x))
    assert again.num_classes == len(FACES)
    averaged = load_oracle(tmp_path / "model.safetensors")  # the benchmarks' oracle: mirror-averaged logits
    assert torch.allclose(averaged(x), (model(x) + model(x.flip(-1)).flip(-1)) / 2, atol=1e-6)
    assert torch.allclose(averaged(x.flip(-1)), averaged(x).flip(-1), atol=1e-5)  # left-right symmetric


def test_render_cache_and_flipped_batches(tmp_path):
    path = tmp_path / "cache.npz"
    images, masks = render_cached(path, n=6, size=32, seed0=123, workers=1, progress=False)
    ref_i, ref_m = render_batch(range(123, 129), 32)
    assert np.array_equal(images, ref_i) and np.array_equal(masks, ref_m)
    again = render_cached(path, n=6, size=32, seed0=123, progress=False)  # re-read, not re-rendered
    assert np.array_equal(again[0], images)
    with pytest.raises(ValueError, match="cache.npz.*delete it"):
        render_cached(path, n=7, size=32, seed0=123, progress=False)

    make = cached_batches(images, masks, batch=16, seed=1)
    it = make(0)
    next(it)
    x1, y1 = next(it)
    x2, y2 = next(make(1))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # a resumed run sees the same batch at the same step
    flipped = 0
    for x, y in zip(x1, y1, strict=True):  # every item is a stored face, as is or mirrored with its mask
        for i in range(6):
            plain = torch.equal(x, to_input(images[i:i + 1])[0]) and torch.equal(y, torch.from_numpy(masks[i]).long())
            mirror = (torch.equal(x, to_input(images[i:i + 1, :, ::-1].copy())[0])
                      and torch.equal(y, torch.from_numpy(masks[i, :, ::-1].copy()).long()))
            if plain or mirror:
                flipped += mirror and not plain
                break
        else:
            raise AssertionError("a batch item is neither a stored face nor its mirror image")
    assert 0 < flipped < 16
    assert images.flags.writeable and np.array_equal(images, ref_i)  # drawing batches never edits the cache


def test_fine_tune_from_weights(tmp_path):
    cfg = SegTrainConfig(steps=2, warmup=1, ckpt_every=2, log_every=1)
    first, _ = train_oracle(tmp_path / "a", n_train=8, size=32, batch=2, channels=[8, 16], cfg=cfg, workers=0,
                            progress=False)
    zero = SegTrainConfig(steps=1, lr=0.0, warmup=1, ckpt_every=1, log_every=1)
    tuned, _ = train_oracle(tmp_path / "b", n_train=8, size=32, batch=2, channels=[8, 16], cfg=zero, workers=0,
                            progress=False, init=tmp_path / "a" / "model.safetensors")
    start = dict(first.named_parameters())
    for name, p in tuned.named_parameters():  # lr 0: the start weights are kept (BatchNorm statistics move)
        assert torch.equal(p, start[name]), name
    with pytest.raises(ValueError, match="pass matching --channels"):
        train_oracle(tmp_path / "c", n_train=8, size=32, batch=2, channels=[8, 32], cfg=zero, workers=0,
                     progress=False, init=tmp_path / "a" / "model.safetensors")


def test_segmenter_scores_against_masks():
    """A segmenter that reads the true mask off a side channel scores 1; one that says `skin` everywhere does not."""
    imgs, masks = render_batch(range(3), 32)
    truth = torch.from_numpy(masks).long()

    class Perfect(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(truth[: len(x)], len(FACES)).permute(0, 3, 1, 2).float()

    class Skin(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(x), len(FACES), *x.shape[2:])
            out[:, FACES.index("skin")] = 1
            return out

    x = to_input(imgs)
    assert segmenter_scores(Perfect(), x, masks).miou == 1.0
    assert segmenter_scores(Skin(), x, truth).miou < 0.2


def test_render_cache_knows_the_render_mode(tmp_path):
    path = tmp_path / "aligned.npz"
    images, masks = render_cached(path, n=3, size=32, seed0=5, workers=1, progress=False, mode="aligned")
    ref_i, ref_m = render_batch(range(5, 8), 32, "aligned")
    assert np.array_equal(images, ref_i) and np.array_equal(masks, ref_m)
    with pytest.raises(ValueError, match=r"mode\) = \[3, 32, 5, 'aligned'\].*delete it"):
        render_cached(path, n=3, size=32, seed0=5, progress=False)  # asked for wild faces
