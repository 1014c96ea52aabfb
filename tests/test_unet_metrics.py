"""UNet contract (any size, gradients everywhere, no NaN) and the metrics' arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from partseg.distill.unet import UNet, UNetConfig
from partseg.eval.metrics import (
    ScoreAccumulator,
    SegScores,
    TolerantScoreAccumulator,
    boundary_pixels,
    confusion_matrix,
)


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (64, 48)])
def test_unet_any_size_and_every_parameter_learns(size):
    torch.manual_seed(0)
    net = UNet(num_classes=5, channels=[8, 16, 32])
    x = torch.randn(2, 3, *size)
    y = net(x)
    assert y.shape == (2, 5, *size) and torch.isfinite(y).all()
    y.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad


def test_unet_config_checks():
    with pytest.raises(ValueError, match="num_classes"):
        UNetConfig(num_classes=1)
    with pytest.raises(ValueError, match="channels"):
        UNetConfig(channels=[8])
    assert UNetConfig.from_dict(UNetConfig(channels=[4, 8]).to_dict()).channels == [4, 8]


def test_confusion_and_scores_by_hand():
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pr = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = confusion_matrix(pr, gt, 4)
    assert cm.sum() == 7  # the 255 pixel is ignored
    s = SegScores(cm)
    # class 0: tp 1, fp 1 (a 2 predicted 0), fn 1 -> 1/3; class 1: tp 3, fp 1 -> 3/4; class 2: tp 1, fn 1 -> 1/2
    assert s.iou[:3].tolist() == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert math.isnan(s.iou[3])  # absent class: no IoU, not counted in the mean
    assert s.miou == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert s.pixel_accuracy == pytest.approx(5 / 7)
    acc = ScoreAccumulator(4)
    acc.add(pr[:1], gt[:1])
    acc.add(pr[1:], gt[1:])
    assert torch.equal(acc.scores().confusion, cm)  # batching does not change the counts
    assert "| **mean** |" in s.table(["a", "b", "c", "d"])


def test_metrics_reject_out_of_range_classes():
    with pytest.raises(ValueError, match="ground truth holds class 7"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, 0]), 4)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(4), torch.zeros(5), 4)



def test_boundary_pixels_and_one_pixel_tolerance():
    """A 2-pixel-wide bar: every bar pixel is a boundary pixel; a prediction shifted by one pixel is forgiven
    by the 1-pixel tolerance, one shifted by three is not, nor a bar left out; at radius 0 it is plain IoU."""
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    t[0, 3:5, 1:7] = 1
    t[0, 0, 0] = 255
    b = boundary_pixels(t, 2)
    assert b[0, 3:5, 1:7].all() and not b[0, 7, 7] and b[0, 2, 3] and not b[0, 0, 7]
    near = torch.zeros_like(t)
    near[0, 4:6, 1:7] = 1  # shifted down one pixel
    far = torch.zeros_like(t)
    far[0, 6:8, 1:7] = 1  # shifted down three
    missed = torch.zeros_like(t)
    for pred, forgiven in ((near, True), (far, False), (missed, False)):
        exact, tol, r0 = ScoreAccumulator(2), TolerantScoreAccumulator(2, 1), TolerantScoreAccumulator(2, 0)
        for acc in (exact, tol, r0):
            acc.add(pred, t)
        assert exact.scores().iou[1] < 1
        assert (tol.iou[1] == 1) == forgiven
        assert torch.allclose(r0.iou, exact.scores().iou)
    assert TolerantScoreAccumulator(2, 1).iou.isnan().all()
    g = torch.Generator().manual_seed(0)
    pred, truth = torch.randint(0, 3, (5, 9, 9), generator=g), torch.randint(0, 3, (5, 9, 9), generator=g)
    whole, chunked = TolerantScoreAccumulator(3, 1), TolerantScoreAccumulator(3, 1)
    whole.add(pred, truth)
    chunked.add(pred, truth, chunk=2)
    assert torch.equal(whole.counts, chunked.counts)
    with pytest.raises(ValueError, match="one shape"):
        TolerantScoreAccumulator(2).add(near[0], t[0])


def test_frechet_distance_matches_closed_forms():
    from partseg.eval.metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(5.25, abs=1e-6)  # same covariance: |shift|^2
    # diagonal covariances: sum over dims of (s_a - s_b)^2
    s = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    z = (a - a.mean(0)) / a.std(0)
    assert frechet_distance(z, z * s) == pytest.approx(float(((1 - s) ** 2).sum()), rel=1e-3)
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a, a[:, :2])


def test_oracle_bottleneck_features_are_per_image():
    from partseg.distill.unet import UNet, UNetConfig
    from partseg.eval.oracle import FlipAveraged, bottleneck_features

    net = UNet(UNetConfig(num_classes=3, channels=[4, 8, 12]))
    x = torch.randn(5, 3, 32, 32)
    f = bottleneck_features(FlipAveraged(net), x, batch=2)
    assert f.shape == (5, 12)
    assert torch.allclose(f[3], bottleneck_features(net, x[3:4])[0], atol=1e-5)  # independent of batch mates
