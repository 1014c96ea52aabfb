"""Supervised segmenter training: learns, resumes exactly, takes soft targets, bf16 AMP where the hardware has it;
UNet files round-trip."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from partseg.distill.trainer import SegTrainConfig, fit_segmenter, segmentation_loss, soft_dice_loss
from partseg.distill.unet import UNet, load_unet, save_unet
from partseg.labels import FACES
from partseg.precision import cpu_has_bf16


def _toy_batches(start: int):
    """Squares on a background: class 1 where a bright square is, 0 elsewhere. Depends only on the step."""
    step = start
    while True:
        g = torch.Generator().manual_seed(step)
        x = torch.full((4, 3, 16, 16), -0.5)
        y = torch.zeros(4, 16, 16, dtype=torch.long)
        for i in range(4):
            r, c = torch.randint(0, 10, (2,), generator=g).tolist()
            x[i, :, r:r + 6, c:c + 6] = 0.8
            y[i, r:r + 6, c:c + 6] = 1
        yield x + 0.05 * torch.randn(x.shape, generator=g), y
        step += 1


def _model() -> UNet:
    torch.manual_seed(0)
    return UNet(num_classes=2, channels=[4, 8])


def test_fit_learns_and_resumes_exactly(tmp_path):
    cfg = SegTrainConfig(steps=40, lr=1e-2, warmup=5, ckpt_every=10, log_every=10)
    a = _model()
    fit_segmenter(a, _toy_batches, cfg, tmp_path / "a", progress=False)
    x, y = next(_toy_batches(10_000))
    acc = (a(x).argmax(1) == y).float().mean()
    assert acc > 0.9
    b = _model()
    res = fit_segmenter(b, _toy_batches, cfg, tmp_path / "b", progress=False, stop_at_step=17)
    assert res["stopped_early"] and res["step"] == 17
    b = _model()
    res = fit_segmenter(b, _toy_batches, cfg, tmp_path / "b", progress=False)
    assert res["start_step"] == 17 and res["step"] == 40
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_amp_is_bf16_where_the_cpu_has_bf16_units_and_float32_elsewhere(tmp_path):
    cfg = SegTrainConfig(steps=6, lr=1e-2, warmup=2, ckpt_every=6, log_every=3)
    assert cfg.amp
    a, b = _model(), _model()
    fit_segmenter(a, _toy_batches, cfg, tmp_path / "a", progress=False)
    fit_segmenter(b, _toy_batches, replace(cfg, amp=False), tmp_path / "b", progress=False)
    logged = [json.loads(ln)["precision"] for ln in (tmp_path / "a" / "log.jsonl").read_text().splitlines()
              if '"precision"' in ln]
    assert logged and set(logged) == {"bf16" if cpu_has_bf16() else "fp32"}
    if not cpu_has_bf16():  # amp=True on such a CPU is exactly the float32 path
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ckpt["train_config"]["amp"] is True and ckpt["world"] == 1


def test_soft_targets_and_ignore_index():
    logits = torch.randn(2, 3, 4, 4)
    hard = logits.argmax(1)
    soft = torch.nn.functional.one_hot(hard, 3).permute(0, 3, 1, 2).float()
    assert segmentation_loss(logits, soft) == pytest.approx(segmentation_loss(logits, hard).item(), rel=1e-5)
    ignored = torch.full_like(hard, 255)
    ignored[0, 0, 0] = hard[0, 0, 0]
    manual = -logits[0, :, 0, 0].log_softmax(0)[hard[0, 0, 0]]
    assert segmentation_loss(logits, ignored) == pytest.approx(manual.item(), rel=1e-5)


def test_soft_dice_term():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:4, 2:4] = 1  # a small class: 4 of 64 pixels
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 40
    assert soft_dice_loss(perfect, target) < 1e-3
    missed = perfect.clone()
    missed[:, :, 2:4, 2:4] = perfect[:, :, 0:2, 0:2]  # the small class predicted as background
    # CE counts the miss per pixel (small), Dice per class: missing a whole class costs half the mean
    assert soft_dice_loss(missed, target) > 0.45
    target[0, 0, 0] = 255  # ignored pixels do not count
    assert soft_dice_loss(perfect, target) < 1e-3
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    total = segmentation_loss(logits, target, dice_weight=0.5)
    assert total.item() == pytest.approx(segmentation_loss(logits, target).item()
                                         + 0.5 * soft_dice_loss(logits, target).item(), rel=1e-5)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_unet_file_round_trip_and_errors(tmp_path):
    m = UNet(num_classes=len(FACES), channels=[4, 8]).eval()
    save_unet(m, tmp_path / "u.safetensors", FACES)
    m2, labels = load_unet(tmp_path / "u.safetensors")
    x = torch.randn(1, 3, 20, 20)
    assert torch.equal(m(x), m2(x)) and labels == FACES
    with pytest.raises(FileNotFoundError, match="not found"):
        load_unet(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.safetensors: not a readable safetensors file"):
        load_unet(tmp_path / "bad.safetensors")
