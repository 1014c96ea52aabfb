"""Aligned portraits (issue #14): determinism, alignment of eyes, mask/image agreement, class coverage, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from partseg.cli import app
from partseg.data import faces
from partseg.data.dataset import load_dataset, read_mask
from partseg.data.faces import render_batch, render_face, render_params, sample_params
from partseg.data.faces.aligned import EYE_Y, IOD, IOD_JITTER, aligned_params, eye_distance, eye_midpoint, params_for
from partseg.labels import FACES


def test_deterministic_and_same_identity_as_wild() -> None:
    a = render_face(5, 64, "aligned")
    b = render_face(5, 64, "aligned")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], render_face(6, 64, "aligned")[1])
    wild, al = sample_params(5), aligned_params(5)
    assert (al.skin, al.hair_style, al.glasses, al.eye_w) == (wild.skin, wild.hair_style, wild.glasses, wild.eye_w)
    assert not np.array_equal(a[1], render_face(5, 64)[1])  # posed differently from the wild face


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        params_for(0, "frontal")


def test_eyes_land_where_alignment_puts_them() -> None:
    """The solved pose puts the eye midpoint at (centre, EYE_Y) and the eye distance within the jitter."""
    for seed in range(40):
        p = aligned_params(seed)
        mx, my = eye_midpoint(p)
        assert abs(mx) < 1e-6 and abs((my + 1) / 2 - EYE_Y) < 1e-6, seed
        assert abs(eye_distance(p) / 2 / IOD - 1) <= IOD_JITTER + 1e-6, seed
        assert abs(p.angle_deg) <= 3 and abs(p.yaw) <= 0.22


def test_eye_pixels_sit_at_the_aligned_height() -> None:
    """In the rendered masks, eye pixels cluster around EYE_Y and left/right of centre: the image agrees."""
    size = 128
    _, masks = render_batch(range(30), size, "aligned")
    rows, cols = [], []
    for m in masks:
        ys, xs = np.nonzero(m == faces.EYE)
        if len(ys) >= 10:
            rows.append(ys.mean() / size)
            cols.append(xs.mean() / size)
    assert len(rows) >= 25  # eyes are visible on nearly every aligned face
    assert abs(np.median(rows) - EYE_Y) < 0.03
    assert abs(np.median(cols) - 0.5) < 0.03


def test_masks_label_the_pixels_they_cover() -> None:
    for seed in range(6):
        p = aligned_params(seed).without_effects()
        img, mask = render_params(p, 128, ss=1)
        for c, colour in {faces.SKIN: p.skin, faces.HAIR: p.hair_color}.items():
            region = mask == c
            if region.sum() < 3:
                continue
            cols, counts = np.unique(img[region].reshape(-1, 3), axis=0, return_counts=True)
            assert np.abs(cols[counts.argmax()] - np.asarray(colour)).max() <= 1.0, (seed, FACES.names[c])


def test_class_coverage_and_face_fills_frame() -> None:
    _, masks = render_batch(range(60), 64, "aligned")
    present = np.stack([np.bincount(m.ravel(), minlength=len(FACES)) > 0 for m in masks])
    assert present.any(0).all(), [FACES.names[i] for i in np.flatnonzero(~present.any(0))]
    for c in (faces.SKIN, faces.NOSE, faces.MOUTH):
        assert present[:, c].mean() > 0.95, FACES.names[c]
    face = np.isin(masks, [faces.SKIN, faces.EYE, faces.EYEBROW, faces.NOSE, faces.MOUTH, faces.HAIR])
    assert face.mean() > 0.45  # face and hair fill most of the frame
    assert (masks == faces.BACKGROUND).mean() < 0.5  # varied but not dominant


def test_cli_data_synth_aligned(tmp_path) -> None:
    r = CliRunner().invoke(app, ["data", "synth", "--mode", "aligned", "--n", "3", "--size", "32", "--seed", "4",
                                 "--workers", "1", "--out", str(tmp_path / "ds")])
    assert r.exit_code == 0, r.output
    assert "aligned" in r.output
    files = load_dataset(tmp_path / "ds")[1]
    assert len(files) == 3
    assert np.array_equal(read_mask(tmp_path / "ds" / "masks" / "faces_0000005.png", FACES),
                          render_face(5, 32, "aligned")[1])
    bad = CliRunner().invoke(app, ["data", "synth", "--mode", "tilted", "--n", "1", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "--mode must be one of wild, aligned" in bad.output
