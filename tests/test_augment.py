"""Joint augmentation keeps images and labels aligned; outside pixels are ignored."""

from __future__ import annotations

import torch

from partseg.distill.augment import AugmentConfig, augment_pair
from partseg.labels import IGNORE


def test_pixels_that_encode_their_label_still_agree_after_augmentation():
    # label = a coarse 4x4 grid of classes; the image's red channel encodes the class of each pixel
    n, size = 6, 64
    lab = (torch.arange(size) // 16)[None, :, None] * 4 + (torch.arange(size) // 16)[None, None, :]
    lab = lab.expand(n, -1, -1).clone()
    img = torch.zeros(n, 3, size, size)
    img[:, 0] = lab.float() / 15 * 2 - 1
    cfg = AugmentConfig(brightness=0, contrast=0, saturation=0)
    x, y = augment_pair(img, lab, cfg, torch.Generator().manual_seed(0))
    decoded = ((x[:, 0] + 1) / 2 * 15).round().long()
    # away from borders between classes (bilinear blends there) and from the outside region, they agree
    interior = (y != IGNORE) & (torch.nn.functional.max_pool2d(y.float()[:, None], 5, 1, 2)[:, 0] ==
                                -torch.nn.functional.max_pool2d(-y.float()[:, None], 5, 1, 2)[:, 0])
    assert interior.float().mean() > 0.1  # enough pixels checked (zoom and shift push much out of view)
    assert (decoded[interior] == y[interior]).all()


def test_outside_pixels_are_ignored_and_soft_labels_follow():
    img = torch.rand(4, 3, 32, 32) * 2 - 1
    lab = torch.zeros(4, 32, 32, dtype=torch.long)
    cfg = AugmentConfig(scale=(0.5, 0.5), rotate=0, translate=0, flip=0)  # shrink: a border appears
    _, y = augment_pair(img, lab, cfg, torch.Generator().manual_seed(1))
    assert (y[:, 0, 0] == IGNORE).all() and (y[:, 16, 16] == 0).all()
    soft = torch.zeros(4, 3, 32, 32)
    soft[:, 1] = 1
    _, ys = augment_pair(img, soft, cfg, torch.Generator().manual_seed(1))
    assert torch.allclose(ys[:, :, 16, 16], torch.tensor([0.0, 1.0, 0.0]).expand(4, 3))
    assert ys[:, :, 0, 0].abs().sum() == 0


def test_same_generator_same_augmentation():
    img, lab = torch.rand(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    a = augment_pair(img, lab, generator=torch.Generator().manual_seed(5))
    b = augment_pair(img, lab, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
