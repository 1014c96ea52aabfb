"""Face parameters: what decides one portrait, and how a seed draws them.

`sample_params(seed)` draws a `FaceParams` from `numpy.random.default_rng(seed)`; the order of its draws is part
of the data format (every data set of the built-in world depends on it), so new draws go at the end. Lengths are
in face units (head half-width about 1, y down, origin between the eyes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from partseg.data.faces.colours import IRIS_COLORS, LIP_TONES, Color, _any_color, _hair_color, _jit, _mix, _skin_color
from partseg.labels import FACES

BACKGROUND, SKIN, HAIR, EYE, EYEBROW, NOSE, MOUTH, EAR, NECK, CLOTHES = range(10)
assert FACES.names[NOSE] == "nose" and FACES.names[CLOTHES] == "clothes" and len(FACES) == 10

MIN_SIZE = 32
HAIR_STYLES = ("bald", "buzz", "short", "medium", "long")


@dataclass
class FaceParams:
    """Everything that decides one portrait. Lengths in face units, colours RGB 0-255, angles in radians
    unless named `_deg`. `without_effects()` turns off everything that is not the flat layer colours."""

    seed: int
    # pose
    angle_deg: float = 0.0  # in-plane head tilt about the neck
    scale: float = 1.0
    tx: float = 0.0  # translation, fraction of the image size
    ty: float = 0.0
    yaw: float = 0.0  # > 0: the face turns towards +x (features slide right, the right ear hides)
    # face shape
    face_w: float = 1.0
    top_h: float = 1.3
    jaw_h: float = 1.3
    jaw_k: float = 2.2  # superellipse exponent of the jaw: 2 round, 3+ square
    taper: float = 0.1  # narrowing of the jaw towards the chin
    # eyes
    eye_y: float = 0.0
    eye_sep: float = 0.42  # surface angle of each eye centre
    eye_w: float = 0.18
    eye_h: float = 0.085
    eye_open: float = 1.0  # < 0.3: closed (a lash line)
    eye_tilt: float = 0.0
    gaze: float = 0.0
    iris_r: float = 0.6  # relative to eye_w
    # eyebrows
    brow_gap: float = 0.24
    brow_len: float = 0.24
    brow_th: float = 0.07
    brow_arch: float = 0.05
    brow_tilt: float = 0.0
    # nose
    nose_tip: float = 0.6
    nose_w: float = 0.16
    nose_depth: float = 0.28
    # mouth
    mouth_y: float = 0.95
    mouth_w: float = 0.3
    lip_up: float = 0.05
    lip_lo: float = 0.07
    smile: float = 0.03
    mouth_open: float = 0.0
    teeth: bool = False
    # ears
    ear_size: float = 1.0
    ear_y: float = 0.3
    # neck and shoulders (body frame: not tilted with the head)
    neck_w: float = 0.5
    shoulder_y: float = 2.1
    shoulder_w: float = 2.0
    shoulder_slope: float = 0.25
    neckline: str = "round"  # round | v | high
    neckline_depth: float = 0.3
    # hair
    hair_style: str = "short"
    hair_volume: float = 0.15
    hairline_y: float = -0.75
    hairline_side: float = 0.1
    hairline_p: float = 2.5
    fringe: bool = False
    sweep: float = 0.0
    hair_end: float = 0.6
    covers_ears: bool = False
    side_hair: bool = True  # bald only: a ring of hair at the sides and back
    hair_texture: float = 0.08
    hair_phase: float = 0.0
    # colours
    skin: Color = (200, 150, 120)
    neck_tone: float = 0.9  # neck colour = skin * neck_tone
    hair_color: Color = (60, 40, 30)
    brow_color: Color = (50, 35, 25)
    iris_color: Color = (90, 60, 40)
    sclera: Color = (235, 230, 225)
    lip_color: Color = (180, 80, 80)
    clothes_color: Color = (40, 60, 120)
    clothes_color2: Color = (200, 200, 200)
    clothes_pattern: str = "solid"  # solid | stripes | collar
    stripe_freq: float = 6.0
    stripe_angle: float = 0.0
    # accessories (labelled `clothes`; lenses keep the label behind them)
    glasses: bool = False
    glasses_round: bool = True
    glasses_color: Color = (30, 30, 30)
    glasses_th: float = 0.035
    glasses_h: float = 0.18
    lens_tint: float = 0.0
    lens_color: Color = (60, 60, 60)
    hat: str = "none"  # none | beanie | cap | brim
    hat_color: Color = (150, 30, 30)
    hat_color2: Color = (230, 230, 230)
    hat_y: float = -0.55
    # background
    bg_colors: tuple[Color, Color] = ((120, 130, 140), (180, 180, 170))
    bg_angle: float = 0.0
    bg_shapes: list[tuple] = field(default_factory=list)  # (kind, colour, *geometry) in canvas units
    # effects (image only, never the mask)
    shading: float = 0.4  # directional light on skin and hair, nose and eye-socket shadows
    light_angle: float = 0.0
    gradient: float = 0.1  # linear brightness ramp over the whole image
    gradient_angle: float = 0.0
    exposure: float = 1.0
    cast: Color = (1.0, 1.0, 1.0)  # per-channel gain (white balance)
    blur: float = 0.0  # gaussian sigma in pixels at 64 px (scaled with the size)
    noise: float = 0.0  # gaussian noise sigma, 0-255 units

    def without_effects(self) -> FaceParams:
        """The same face with flat layer colours: no shading, texture, tint, gradient, cast, blur or noise."""
        return dataclasses.replace(self, shading=0.0, hair_texture=0.0, gradient=0.0, exposure=1.0,
                                   cast=(1.0, 1.0, 1.0), blur=0.0, noise=0.0, lens_tint=0.0)


def sample_params(seed: int) -> FaceParams:
    """Draw one face from `default_rng(seed)`. The order of draws is part of the format: changing it changes
    every data set, so append new draws at the end."""
    rng = np.random.default_rng(seed)
    u = rng.uniform
    p = FaceParams(seed=int(seed))
    # pose
    p.angle_deg = float(np.clip(rng.normal(0, 9), -20, 20))
    p.scale = u(0.7, 1.15)
    p.tx, p.ty = u(-0.12, 0.12), u(-0.12, 0.12)
    p.yaw = float(np.clip(rng.normal(0, 0.25), -0.55, 0.55))
    # shape
    p.face_w = u(0.86, 1.06)
    p.top_h = u(1.15, 1.4)
    p.jaw_k = u(1.8, 3.2)
    p.taper = u(0.0, 0.25)
    p.eye_y = u(-0.06, 0.06)
    p.eye_sep = u(0.36, 0.46)
    p.eye_w = u(0.15, 0.21)
    p.eye_h = u(0.065, 0.1)
    p.eye_open = u(0.05, 0.3) if u() < 0.12 else u(0.55, 1.05)
    p.eye_tilt = u(-0.03, 0.04)
    p.gaze = u(-0.35, 0.35)
    p.iris_r = u(0.45, 0.6)
    p.brow_gap = u(0.17, 0.3)
    p.brow_len = u(0.2, 0.28)
    p.brow_th = u(0.035, 0.1)
    p.brow_arch = u(-0.01, 0.08)
    p.brow_tilt = u(-0.05, 0.06)
    p.nose_tip = p.eye_y + u(0.48, 0.7)
    p.nose_w = u(0.12, 0.2)
    p.nose_depth = u(0.2, 0.35)
    p.mouth_y = p.nose_tip + u(0.27, 0.42)
    p.mouth_w = u(0.24, 0.38)
    p.lip_up = u(0.03, 0.07)
    p.lip_lo = u(0.04, 0.1)
    p.smile = u(-0.04, 0.12)
    p.mouth_open = u(0.03, 0.16) if u() < 0.3 else 0.0
    p.teeth = bool(u() < 0.6)
    p.jaw_h = max(u(1.15, 1.45), p.mouth_y + p.lip_lo + u(0.25, 0.45) - 0.2)
    p.ear_size = u(0.8, 1.15)
    p.ear_y = p.eye_y + u(0.22, 0.36)
    p.neck_w = u(0.38, 0.58) * p.face_w
    p.shoulder_y = 0.2 + p.jaw_h + u(0.25, 0.55)
    p.shoulder_w = u(1.7, 2.5)
    p.shoulder_slope = u(0.1, 0.4)
    p.neckline = str(rng.choice(["round", "v", "high"], p=[0.5, 0.3, 0.2]))
    p.neckline_depth = u(0.1, 0.6)
    # colours
    p.skin = _skin_color(rng)
    p.neck_tone = u(0.78, 0.95)
    p.hair_color = _hair_color(rng, p.skin)
    p.brow_color = _mix(_mix(p.hair_color, (25, 20, 18), u(0, 0.6)), p.skin, u(0, 0.2) if u() < 0.7 else u(0.3, 0.6))
    p.iris_color = _jit(rng, IRIS_COLORS[rng.integers(len(IRIS_COLORS))], 10)
    p.sclera = _jit(rng, (235, 230, 225), 0) if u() < 0.5 else _mix((235, 230, 225), p.skin, u(0.1, 0.4))
    p.lip_color = _mix(p.skin, _jit(rng, LIP_TONES[rng.integers(len(LIP_TONES))], 12), u(0.15, 0.9))
    # hair
    p.hair_style = str(rng.choice(HAIR_STYLES, p=[0.06, 0.08, 0.3, 0.24, 0.32]))
    p.hair_volume = u(0.06, 0.3) if p.hair_style in ("short", "medium", "long") else u(0.0, 0.04)
    p.fringe = bool(p.hair_style in ("short", "medium", "long") and u() < 0.3)
    p.hairline_y = u(-0.5, -0.05) if p.fringe else u(-1.05, -0.55)
    p.hairline_side = u(-0.1, 0.35)
    p.hairline_p = u(3.0, 6.0) if p.fringe else u(1.6, 3.5)
    p.sweep = u(-0.35, 0.35) if u() < 0.5 else 0.0
    p.hair_end = {"bald": u(0.3, 0.6), "buzz": u(0.3, 0.6), "short": u(0.3, 0.75),
                  "medium": u(1.0, 1.8), "long": u(2.2, 3.8)}[p.hair_style]
    p.covers_ears = bool(p.hair_style in ("medium", "long") and u() < 0.55)
    p.side_hair = bool(u() < 0.5)
    p.hair_texture = u(0.03, 0.14)
    p.hair_phase = u(0, 2 * math.pi)
    if p.hair_style == "buzz":  # stubble over the scalp: a blend of hair and skin colour, still class `hair`
        p.hair_color = _mix(p.skin, p.hair_color, u(0.35, 0.7))
    # clothes
    p.clothes_color = _any_color(rng, p.skin, p.hair_color)
    p.clothes_color2 = _any_color(rng, p.skin, p.hair_color)
    p.clothes_pattern = str(rng.choice(["solid", "stripes", "collar"], p=[0.55, 0.25, 0.2]))
    p.stripe_freq = u(3, 9)
    p.stripe_angle = float(rng.choice([0.0, math.pi / 2, u(0, math.pi)]))
    # accessories
    p.glasses = bool(u() < 0.25)
    p.glasses_round = bool(u() < 0.5)
    p.glasses_color = _jit(rng, (25, 25, 25), 10) if u() < 0.6 else _any_color(rng, p.skin, p.hair_color)
    p.glasses_th = u(0.022, 0.05)
    p.glasses_h = u(0.14, 0.22)
    p.lens_tint = u(0.3, 0.7) if u() < 0.3 else u(0.0, 0.12)
    p.lens_color = _jit(rng, (50, 50, 60), 25)
    p.hat = str(rng.choice(["beanie", "cap", "brim"])) if u() < 0.15 else "none"
    p.hat_color = _any_color(rng, p.skin, p.hair_color)
    p.hat_color2 = _any_color(rng, p.skin, p.hair_color)
    p.hat_y = u(-0.75, -0.4)
    # background: a gradient plus clutter, some of it skin- or hair-coloured
    p.bg_colors = (_any_color(rng, p.skin, p.hair_color), _any_color(rng, p.skin, p.hair_color))
    p.bg_angle = u(0, 2 * math.pi)
    shapes: list[tuple] = []
    for _ in range(int(rng.integers(1, 8))):
        kind = str(rng.choice(["ellipse", "rect", "stripes", "blob"], p=[0.35, 0.3, 0.15, 0.2]))
        col = _any_color(rng, p.skin, p.hair_color)
        shapes.append((kind, col, u(-1.1, 1.1), u(-1.1, 1.1), u(0.08, 0.7), u(0.08, 0.7), u(0, math.pi),
                       u(4, 14), u(0, 2 * math.pi)))
    p.bg_shapes = shapes
    # effects
    p.shading = u(0.15, 0.65)
    p.light_angle = u(0, 2 * math.pi)
    p.gradient = u(0, 0.3)
    p.gradient_angle = u(0, 2 * math.pi)
    p.exposure = u(0.75, 1.2)
    p.cast = (u(0.88, 1.12), u(0.92, 1.08), u(0.85, 1.15))
    p.blur = u(0.3, 1.0) if u() < 0.5 else 0.0
    p.noise = u(0, 7)
    return p
