"""Joint augmentation keeps images and labels aligned; outside pixels are ignored."""

from __future__ import annotations

import pytest
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


def test_a_crop_is_a_window_of_the_augmented_pair_with_its_labels():
    # identity affine; the image encodes each pixel's (row, column) as linear ramps, which bilinear sampling keeps
    # exact, so the crop's decoded positions must form one crop x crop window at a (sub-pixel) offset
    n, size, crop = 5, 32, 16
    rows = torch.arange(size, dtype=torch.float32)[:, None].expand(size, size)
    img = torch.stack([rows / size * 2 - 1, rows.T / size * 2 - 1, torch.zeros(size, size)]).expand(n, -1, -1, -1)
    lab = (torch.arange(size)[:, None] // 3).expand(n, size, size).clone()  # class = row band of 3
    cfg = AugmentConfig(scale=(1, 1), rotate=0, translate=0, flip=0, brightness=0, contrast=0, saturation=0)
    x, y = augment_pair(img, lab, cfg, torch.Generator().manual_seed(3), crop=crop)
    assert x.shape == (n, 3, crop, crop) and y.shape == (n, crop, crop)
    r, c = (x[:, 0] + 1) / 2 * size, (x[:, 1] + 1) / 2 * size  # decoded source row and column of each pixel
    steps = torch.arange(crop, dtype=torch.float32)
    offsets = []
    for i in range(n):
        assert torch.allclose(r[i] - r[i, 0, 0], steps[:, None].expand(crop, crop), atol=1e-3)
        assert torch.allclose(c[i] - c[i, 0, 0], steps[None, :].expand(crop, crop), atol=1e-3)
        assert 0 <= r[i].min() and r[i].max() <= size - 1 and 0 <= c[i].min() and c[i].max() <= size - 1
        offsets.append((round(r[i, 0, 0].item(), 2), round(c[i, 0, 0].item(), 2)))
        near = (r[i] - r[i].round()).abs() < 0.45  # away from a tie, nearest sampling picks the rounded row
        assert torch.equal(y[i][near], (r[i].round().long() // 3)[near])
    assert len(set(offsets)) == n  # the window moves
    with pytest.raises(ValueError, match="crop must be in 1..32"):
        augment_pair(img, lab, cfg, crop=33)
