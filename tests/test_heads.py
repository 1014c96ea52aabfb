"""Contract tests over every head: forward, backward, no NaN, every parameter gets a gradient."""

from __future__ import annotations

import pytest
import torch

from partseg.fewshot.heads import CNNHead, Ensemble, HeadConfig, MLPHead, build_head


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("n", [1, 3])
def test_head_contract(kind, n):
    torch.manual_seed(0)
    cfg = HeadConfig(kind=kind, in_channels=12, num_classes=4)
    model = Ensemble(cfg, n).train()
    x = torch.randn(2, 12, 20, 20)
    y = model(x)
    assert y.shape == (2, 4, 20, 20) and torch.isfinite(y).all()
    torch.nn.functional.nll_loss(y.log_softmax(1) if n == 1 else y, torch.randint(0, 4, (2, 20, 20))).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_mlp_pixels_equal_map():
    torch.manual_seed(0)
    mlp = MLPHead(HeadConfig(kind="mlp", in_channels=6, num_classes=3)).eval()
    x = torch.randn(1, 6, 5, 7)
    per_pixel = mlp(x[0].permute(1, 2, 0).reshape(-1, 6))
    assert torch.allclose(per_pixel, mlp(x)[0].permute(1, 2, 0).reshape(-1, 3), atol=1e-5)


def test_cnn_is_the_papers_dilated_stack():
    head = build_head(HeadConfig(kind="cnn", in_channels=8, num_classes=5))
    assert isinstance(head, CNNHead)
    convs = [m for m in head.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs[1:-1]] == [2, 4, 8, 1, 2, 4, 8, 1]
    assert convs[0].out_channels == 128 and convs[-1].out_channels == 5
    # receptive field 1 + 2 * sum(dilations) = 61 px
    assert 1 + 2 * sum(c.dilation[0] for c in convs[1:-1]) == 61


def test_head_config_errors():
    with pytest.raises(ValueError, match="head kind"):
        HeadConfig(kind="svm", in_channels=3, num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        HeadConfig(kind="cnn", in_channels=3, num_classes=1)
