"""Aligned portraits: the built-in world's FFHQ-style mode (issue #14).

Why a second mode: the paper's GAN learns from *aligned* faces (FFHQ: eyes level at a fixed height, fixed
inter-ocular distance, the face filling the frame) and is tested on faces aligned the same way; the unaligned
renders of `partseg.data.faces` are the "in the wild" case that the auto-shot UNet's augmentation is for. A small
GAN trained on 2 CPU cores can only learn every part when the parts always sit in about the same place.

How: the identity (face shape, colours, hair, glasses, hats, expression) is the wild face of the same seed,
drawn by `faces.sample_params`, so both modes share one parameter format and one painter. A second stream,
`default_rng([seed, ALIGNED_STREAM])`, then replaces the pose and tons down the scene: little yaw and tilt,
at most two background shapes, modest lighting, blur and noise. Scale and translation are *solved*, not drawn,
so that the eye midpoint lands at `EYE_Y` and the eye distance is `IOD` of the width (within +-`IOD_JITTER`).
"""

from __future__ import annotations

import math

import numpy as np

from partseg.data.faces.canvas import _Canvas, _cyl, placement
from partseg.data.faces.params import FaceParams, sample_params

ALIGNED_STREAM = 14  # second rng stream of a seed; changing it changes every aligned data set
EYE_Y = 0.42  # eye midpoint height, fraction of the image height from the top
IOD = 0.23  # distance between the eye centres, fraction of the image width
IOD_JITTER = 0.05  # relative spread of that distance (uniform)
MODES = ("wild", "aligned")


def eye_midpoint(p: FaceParams) -> tuple[float, float]:
    """Image position of the midpoint between the eye centres, canvas units (-1..1, y down)."""
    unit, t = placement(p)
    th = math.radians(p.angle_deg)
    c, s = math.cos(th), math.sin(th)
    fx = 0.5 * (_cyl(p, -p.eye_sep) + _cyl(p, p.eye_sep))
    dy = p.eye_y - _Canvas.PIVOT_Y
    qx, qy = c * fx - s * dy, s * fx + c * dy + _Canvas.PIVOT_Y
    return t[0] + unit * qx, t[1] + unit * qy


def eye_distance(p: FaceParams) -> float:
    """Image distance between the eye centres, canvas units (the image is 2 wide)."""
    return _Canvas.UNIT * p.scale * abs(_cyl(p, p.eye_sep) - _cyl(p, -p.eye_sep))


def aligned_params(seed: int) -> FaceParams:
    """The face of `seed`, posed and lit as an aligned portrait."""
    p = sample_params(seed)
    rng = np.random.default_rng([int(seed), ALIGNED_STREAM])
    u = rng.uniform
    p.angle_deg = float(np.clip(rng.normal(0, 1.5), -3, 3))
    p.yaw = float(np.clip(rng.normal(0, 0.1), -0.22, 0.22))
    # background: the wild face's two colours, a softer ramp, at most two shapes
    n_shapes = int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2]))
    p.bg_shapes = p.bg_shapes[:n_shapes]
    # effects, modest
    p.shading = u(0.1, 0.4)
    p.gradient = u(0, 0.15)
    p.exposure = u(0.88, 1.1)
    p.cast = (u(0.94, 1.06), u(0.96, 1.04), u(0.93, 1.07))
    p.blur = u(0.2, 0.5) if u() < 0.3 else 0.0
    p.noise = u(0, 3)
    # hats sit higher so they rarely cover the brows in the aligned crop
    p.hat_y = min(p.hat_y, u(-0.75, -0.6))
    # pose solved for alignment: scale from the eye distance, translation from the eye midpoint
    iod = 2 * IOD * (1 + u(-IOD_JITTER, IOD_JITTER))
    p.scale, p.tx, p.ty = 1.0, 0.0, 0.0
    p.scale = iod / eye_distance(p)
    mx, my = eye_midpoint(p)
    p.tx, p.ty = -mx / 2, (2 * EYE_Y - 1 - my) / 2
    return p


def params_for(seed: int, mode: str = "wild") -> FaceParams:
    """Face parameters of `seed` in a render mode: "wild" (unaligned, cluttered) or "aligned"."""
    if mode == "wild":
        return sample_params(seed)
    if mode == "aligned":
        return aligned_params(seed)
    raise ValueError(f"unknown render mode {mode!r}; expected one of {', '.join(MODES)}")

