"""The procedural faces domain: determinism, exact masks, class coverage, the data-set layout and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from partseg.cli import app
from partseg.data import faces
from partseg.data.dataset import load_dataset, read_image, read_mask, write_mask, write_synth_dataset
from partseg.data.faces import colour_floor, render_batch, render_face, render_params, sample_params
from partseg.labels import FACES, IGNORE, Labels


def test_deterministic_and_seed_dependent() -> None:
    a_img, a_mask = render_face(5)
    b_img, b_mask = render_face(5)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    c_img, c_mask = render_face(6)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_mask, c_mask)
    assert sample_params(5) == sample_params(5)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_sizes_and_types(size: int) -> None:
    img, mask = render_face(11, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert mask.max() < len(FACES)


def test_same_face_at_every_size() -> None:
    """The seed fixes the face, not the pixels: the 128 px mask, subsampled, agrees with the 64 px one."""
    m64 = render_face(3, 64)[1]
    m128 = render_face(3, 128)[1]
    assert (m128[::2, ::2] == m64).mean() > 0.9


def test_rejects_tiny_sizes() -> None:
    with pytest.raises(ValueError, match="size"):
        render_face(0, 16)


def test_render_batch() -> None:
    imgs, masks = render_batch([1, 2, 3], 32)
    assert imgs.shape == (3, 32, 32, 3) and masks.shape == (3, 32, 32)
    assert np.array_equal(masks[1], render_face(2, 32)[1])


def _mode_colour(img: np.ndarray, region: np.ndarray) -> np.ndarray:
    cols, counts = np.unique(img[region].reshape(-1, 3), axis=0, return_counts=True)
    return cols[counts.argmax()].astype(float)


def test_masks_label_the_pixels_they_cover() -> None:
    """With effects and anti-aliasing off (ss=1: one sample per pixel), each class region's most common colour
    is the colour its parameters give it: mask and image come from the same layers, and the nose has the skin's
    colour (no colour boundary)."""
    checked = set()
    for seed in range(12):
        p = sample_params(seed).without_effects()
        img, mask = render_params(p, 128, ss=1)
        expect = {faces.SKIN: p.skin, faces.NOSE: p.skin, faces.HAIR: p.hair_color, faces.EYEBROW: p.brow_color,
                  faces.NECK: np.array(p.skin) * p.neck_tone, faces.EAR: np.array(p.skin) * 0.97}
        if p.mouth_open == 0:
            expect[faces.MOUTH] = p.lip_color
        if p.clothes_pattern == "solid" and p.hat == "none" and not p.glasses:
            expect[faces.CLOTHES] = p.clothes_color
        for c, colour in expect.items():
            region = mask == c
            if region.sum() < 3:
                continue
            got = _mode_colour(img, region)
            assert np.abs(got - np.asarray(colour)).max() <= 1.0, (seed, FACES.names[c], got, colour)
            checked.add(c)
        eye, skin = mask == faces.EYE, mask == faces.SKIN
        if eye.sum() >= 4:  # sclera, iris, pupil and lashes: not the skin around them
            assert np.abs(img[eye].mean(0) - img[skin].mean(0)).sum() > 20, seed
    assert {faces.SKIN, faces.NOSE, faces.HAIR, faces.EYEBROW, faces.NECK, faces.MOUTH, faces.EAR} <= checked


def test_class_coverage() -> None:
    _, masks = render_batch(range(50), 64)
    present = np.stack([np.bincount(m.ravel(), minlength=len(FACES)) > 0 for m in masks])
    assert present.any(0).all(), [FACES.names[i] for i in np.flatnonzero(~present.any(0))]
    assert present[:, faces.SKIN].all() and present[:, faces.BACKGROUND].all()


def test_colour_alone_does_not_segment() -> None:
    r = colour_floor(n_fit=30, n_eval=8, size=32)
    assert set(r["iou"]) == set(FACES.names)
    assert r["miou"] < 0.35


# ---------------------------------------------------------------------------------------------- labels


def test_labels_json_round_trip(tmp_path) -> None:
    path = FACES.save(tmp_path)
    assert path.name == "labels.json"
    assert Labels.load(tmp_path) == FACES == Labels.from_json(FACES.to_json())
    d = json.loads(path.read_text())
    assert d["classes"][5] == {"index": 5, "name": "nose", "color": [255, 85, 0], "description": FACES.descriptions[5]}


@pytest.mark.parametrize("names, colors, match", [
    (["a", "A"], [(0, 0, 0), (1, 1, 1)], "duplicate class name"),
    (["a", "b"], [(0, 0, 0), (1, 1)], "3 integers"),
    (["a", "b"], [(0, 0, 0), (1, 1, 300)], "3 integers"),
    (["a"], [(0, 0, 0), (1, 1, 1)], "1 names but 2 colours"),
    ([f"c{i}" for i in range(256)], [(i, 0, 0) for i in range(256)], "at most 255"),
    (["a", "b"], [(9, 9, 9), (9, 9, 9)], "share the colour"),
    ([], [], "at least one"),
])
def test_labels_validation(names, colors, match) -> None:
    with pytest.raises(ValueError, match=match):
        Labels(names, colors)


def test_labels_from_json_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        Labels.from_json("{", "x.json")
    bad = FACES.to_dict()
    bad["classes"][1]["index"] = 7
    with pytest.raises(ValueError, match="index order"):
        Labels.from_dict(bad, "x.json")
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        Labels.load(tmp_path)


# ------------------------------------------------------------------------------------------- data set


def test_mask_png_round_trip(tmp_path) -> None:
    mask = np.arange(len(FACES), dtype=np.uint8).repeat(4).reshape(4, -1)
    mask[0, 0] = IGNORE
    write_mask(tmp_path / "m.png", mask, FACES)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        pal = im.getpalette()
    assert pal[3 * 5:3 * 5 + 3] == list(FACES.colors[5]) and pal[3 * 255:3 * 256] == [255, 255, 255]
    assert np.array_equal(read_mask(tmp_path / "m.png", FACES), mask)
    with pytest.raises(ValueError, match="not a class index"):
        write_mask(tmp_path / "bad.png", np.full((2, 2), 10, np.uint8), FACES)


def test_read_mask_errors(tmp_path) -> None:
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(rgb)
    with pytest.raises(ValueError, match=r"rgb\.png: mask mode is 'RGB'"):
        read_mask(rgb)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((4, 4), 12, np.uint8)).save(grey)
    assert read_mask(grey).max() == 12  # greyscale class indices are fine without labels
    with pytest.raises(ValueError, match=r"grey\.png: mask values \[12\] are not class indices"):
        read_mask(grey, FACES)
    with pytest.raises(ValueError, match=r"grey\.png: size mismatch: mask is 4x4 .*rgb8\.png is 8x8"):
        Image.new("RGB", (8, 8)).save(tmp_path / "rgb8.png")
        read_mask(grey, image_path=tmp_path / "rgb8.png")
    with pytest.raises(FileNotFoundError, match="mask not found"):
        read_mask(tmp_path / "nope.png")


def test_write_synth_dataset(tmp_path) -> None:
    out = write_synth_dataset(tmp_path / "ds", n=5, size=32, seed=40, workers=2, progress=False)
    labels, items = load_dataset(out)
    assert labels == FACES
    assert [n for n, _, _ in items] == [f"faces_{s:07d}" for s in range(40, 45)]
    name, ip, mp = items[2]
    img, mask = render_face(42, 32)
    assert np.array_equal(read_image(ip), img)
    assert np.array_equal(read_mask(mp, labels, ip), mask)
    # one worker writes the very same files
    write_synth_dataset(tmp_path / "one", n=5, size=32, seed=40, workers=1, progress=False)
    assert (tmp_path / "one" / "masks" / f"{name}.png").read_bytes() == mp.read_bytes()
    assert not list(out.rglob("*.tmp"))


def test_load_dataset_lists_unpaired_files(tmp_path) -> None:
    out = write_synth_dataset(tmp_path / "ds", n=3, size=32, seed=0, workers=1, progress=False)
    (out / "masks" / "faces_0000001.png").unlink()
    Image.new("P", (32, 32)).save(out / "masks" / "stray.png")
    with pytest.raises(ValueError, match=r"1 images without a mask in masks/: faces_0000001; "
                                         r"1 masks without an image in images/: stray"):
        load_dataset(out)
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        load_dataset(tmp_path)


def test_cli_data_synth(tmp_path) -> None:
    r = CliRunner().invoke(app, ["data", "synth", "--n", "4", "--size", "32", "--seed", "7", "--workers", "1",
                                 "--out", str(tmp_path / "ds")])
    assert r.exit_code == 0, r.output
    assert "wrote 4 images" in r.output and "images/minute" in r.output
    assert len(load_dataset(tmp_path / "ds")[1]) == 4
    assert (tmp_path / "ds" / "images" / "faces_0000010.png").is_file()
