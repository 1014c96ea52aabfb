"""The one image decoder (partseg.images) and the shared conversions: every reader of image files and uploads
gets the same rules (allow-listed formats, header size check before decoding, EXIF orientation, RGB uint8)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from partseg.images import (
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    ImageError,
    ImageTooLarge,
    centre_box,
    centre_square,
    decode_image,
    from_uint8,
    image_size,
    read_image,
    to_uint8,
)
from partseg.weights_io import weights_digest


def test_exif_orientation_is_applied_and_sizes_agree(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(img).save(path, quality=95, exif=exif)
    out = read_image(path)
    assert out.shape == (40, 20, 3) and image_size(path) == (40, 20)  # header size follows the rotation too
    assert out[:20, :, 0].mean() > 200 and out[20:, :, 0].mean() < 60  # the red half is now on top
    assert out.flags.writeable
    np.testing.assert_array_equal(decode_image(path.read_bytes()), out)


def test_files_follow_the_upload_rules(tmp_path):
    eps = tmp_path / "x.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    with pytest.raises(ImageError, match=r"x\.png: the file is not an image in a supported format"):
        read_image(eps)  # never handed to Ghostscript, whatever the name says
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(big)
    with pytest.raises(ImageTooLarge, match="900 pixels; the limit is 899"):
        read_image(big, max_pixels=899)
    with pytest.raises(ImageTooLarge):
        image_size(big, max_pixels=899)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.png")


def test_suffixes_are_those_of_the_allowed_formats():
    registered = Image.registered_extensions()
    assert {registered[s] for s in IMAGE_SUFFIXES} == set(IMAGE_FORMATS)


def test_uint8_conversions_are_exact_inverses():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(1, 16, 16, 3).contiguous()
    x = from_uint8(u)
    assert x.shape == (1, 3, 16, 16) and x.min() == -1 and x.max() == 1
    assert np.array_equal(to_uint8(x), u.numpy())
    assert np.array_equal(to_uint8(torch.tensor([-3.0, 3.0]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)),
                          np.array([[[[0, 0, 0], [255, 255, 255]]]], np.uint8))  # clipped


def test_centre_square():
    assert centre_box(40, 72) == (0, 16, 40)
    img = np.zeros((40, 72, 3), np.uint8)
    img[:, 16:56] = 200
    out = centre_square(img, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8 and (out == 200).all()


def test_weights_digest_is_sha256_of_header_then_float32_tensors():
    t = {"b": torch.tensor([1, 2], dtype=torch.int64), "a": torch.tensor([0.5], dtype=torch.float16)}
    h = hashlib.sha256(b"hdr")
    for k in ("a", "b"):
        h.update(k.encode())
        h.update(t[k].to(torch.float32).numpy().tobytes())
    assert weights_digest("hdr", t) == h.hexdigest()[:16]
