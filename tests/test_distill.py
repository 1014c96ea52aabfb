"""Auto-shot distillation on a tiny GAN: pairs obey the confidence filter, training resumes exactly."""

from __future__ import annotations

import torch

from partseg.dataset import write_sample_set
from partseg.distill import DistillConfig, distill, make_pairs
from partseg.fewshot import FewShotConfig, load_shots, train_head
from partseg.gan.sampling import sample
from partseg.labels import IGNORE, Labels
from partseg.seg_train import segmentation_loss

LABELS = Labels(["dark", "bright"], [(0, 0, 0), (255, 255, 255)])


def _head(tiny_G, tmp_path):
    s = sample(tiny_G, 2, seed=0)
    write_sample_set(tmp_path / "shots", s, LABELS, masks=(s.images.mean(1) > s.images.mean()).byte().numpy())
    return train_head(tiny_G, load_shots(tmp_path / "shots"), FewShotConfig(head="mlp", steps=60, lr=3e-3),
                      progress=False)


def test_confidence_filter_marks_unsure_pixels(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    x, y_all = make_pairs(tiny_G, head, 3, torch.Generator().manual_seed(0), confidence=0.0)
    _, y_conf = make_pairs(tiny_G, head, 3, torch.Generator().manual_seed(0), confidence=0.99)
    assert x.shape == (3, 3, 32, 32) and not (y_all == IGNORE).any()
    ignored = y_conf == IGNORE
    assert 0 < ignored.float().mean() < 1
    assert torch.equal(y_conf[~ignored], y_all[~ignored])  # filtering only removes, never relabels


def test_ignored_pixels_do_not_contribute_to_the_loss():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = IGNORE
    segmentation_loss(logits, target).backward()
    assert (logits.grad[0, :, :2] == 0).all() and (logits.grad[0, :, 2:] != 0).any()


def test_short_distillation_learns_and_resumes(tiny_G, tmp_path):
    head = _head(tiny_G, tmp_path)
    cfg = DistillConfig(steps=80, batch=4, lr=5e-3, channels=[8, 16], confidence=0.0, augment=False, val_every=0)
    a, res = distill(tiny_G, head, cfg, tmp_path / "a", progress=False)
    # the UNet agrees with the head on fresh generated images well above chance
    x, y = make_pairs(tiny_G, head, 8, torch.Generator().manual_seed(99))
    majority = max(y.float().mean(), 1 - y.float().mean())
    assert (a(x).argmax(1) == y).float().mean() > majority + 0.05
    distill(tiny_G, head, cfg, tmp_path / "b", progress=False, stop_at_step=30)
    b, res_b = distill(tiny_G, head, cfg, tmp_path / "b", progress=False)
    assert res_b["start_step"] == 30
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
