"""Oracle training pipeline on a few rendered faces: runs, learns something, scores, reloads."""

from __future__ import annotations

import json

import torch

from partseg.labels import FACES
from partseg.oracle import evaluate_on_renders, load_oracle, oracle_batches, train_oracle
from partseg.seg_train import SegTrainConfig


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
    again = load_oracle(tmp_path / "model.safetensors")
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(again(x), model.eval()(x))
    assert again.num_classes == len(FACES)
