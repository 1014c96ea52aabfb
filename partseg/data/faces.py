"""Procedural face portraits with exact per-pixel part masks: partseg's own measurable world (issue #3).

Why a renderer: few-shot part segmentation is only measurable with ground truth for every generated image. A
StyleGAN2 is trained on these images, a supervised "label oracle" on the masks, and few-shot heads are scored
against both. So the domain must be (a) hard in the ways real part segmentation is hard (parts without colour
boundaries, pose, occluders, clutter, lighting), (b) smooth and coherent enough for a small GAN at 64 px and
(c) cheap: vectorised numpy on a coordinate grid, thousands of images a minute on 2 cores.

How: `sample_params(seed)` draws a `FaceParams` from `numpy.random.default_rng(seed)`; `draw` paints layers back
to front (background < clothes < back hair < neck < far ear < skin < near ear < nose < mouth < eyes < eyebrows <
glasses < front hair < hat) on a grid supersampled `ss` times; each layer writes colour and class index
together, so the mask is exact by construction. The image is box-downsampled (anti-aliasing); the mask takes
the majority class of each pixel's ss x ss samples. Lighting, blur, noise and colour cast come last and never
touch the mask.

Geometry lives in "face units" (head half-width about 1, y down, origin between the eyes). Yaw is a cylinder
model: a feature at surface angle s appears at x = R sin(s + yaw), so features slide sideways and the far ones
foreshorten; the chin and nose tip move further than the eyes, the far ear hides behind the cheek.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from partseg.eval.metrics import ScoreAccumulator
from partseg.labels import FACES

BACKGROUND, SKIN, HAIR, EYE, EYEBROW, NOSE, MOUTH, EAR, NECK, CLOTHES = range(10)
assert FACES.names[NOSE] == "nose" and FACES.names[CLOTHES] == "clothes" and len(FACES) == 10

MIN_SIZE = 32
HAIR_STYLES = ("bald", "buzz", "short", "medium", "long")
Color = tuple[float, float, float]

# --------------------------------------------------------------------------------------------- parameters


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


def _jit(rng: np.random.Generator, c: Iterable[float], s: float) -> Color:
    v = np.clip(np.asarray(list(c), dtype=float) + rng.normal(0, s, 3), 0, 255)
    return (float(v[0]), float(v[1]), float(v[2]))


def _mix(a: Iterable[float], b: Iterable[float], t: float) -> Color:
    v = (1 - t) * np.asarray(list(a), dtype=float) + t * np.asarray(list(b), dtype=float)
    return (float(v[0]), float(v[1]), float(v[2]))


def _skin_color(rng: np.random.Generator) -> Color:
    """Light to dark along a measured-looking tone ramp, with a warm/cool and saturation jitter."""
    ramp = np.array([[245, 214, 190], [228, 185, 150], [198, 140, 100], [150, 98, 65], [100, 64, 42], [62, 40, 28]],
                    dtype=float)
    t = rng.uniform(0, len(ramp) - 1)
    i = min(int(t), len(ramp) - 2)
    c = ramp[i] + (t - i) * (ramp[i + 1] - ramp[i])
    c = c * (1 + rng.normal(0, 0.04, 3)) + rng.normal(0, 4, 3)
    return _jit(rng, c, 0)


HAIR_COLORS = {  # name: (weight, rgb)
    "black": (0.22, (28, 24, 24)), "dark brown": (0.2, (58, 38, 28)), "brown": (0.15, (110, 72, 45)),
    "blond": (0.12, (205, 170, 110)), "red": (0.07, (150, 65, 32)), "grey": (0.08, (150, 148, 145)),
    "white": (0.04, (222, 220, 212)),
}
IRIS_COLORS = [(85, 55, 32), (45, 30, 22), (75, 115, 165), (85, 115, 70), (115, 120, 125), (130, 100, 55)]
LIP_TONES = [(205, 115, 115), (175, 45, 55), (115, 30, 38), (140, 75, 65), (190, 90, 110)]


def _hair_color(rng: np.random.Generator, skin: Color) -> Color:
    r = rng.uniform()
    if r < 0.08:  # dyed
        return _jit(rng, rng.choice([(200, 60, 140), (60, 90, 200), (60, 160, 120), (130, 60, 170), (230, 120, 40)]),
                    20)
    if r < 0.14:  # close to the skin colour: colour alone cannot separate them
        return _mix(skin, _jit(rng, (80, 55, 40), 20), rng.uniform(0.1, 0.35))
    names = list(HAIR_COLORS)
    w = np.array([HAIR_COLORS[n][0] for n in names])
    name = names[rng.choice(len(names), p=w / w.sum())]
    return _jit(rng, HAIR_COLORS[name][1], 12)


def _any_color(rng: np.random.Generator, skin: Color, hair: Color) -> Color:
    """Clothes, hats and clutter: mostly random, sometimes skin- or hair-like so colour is ambiguous."""
    r = rng.uniform()
    if r < 0.12:
        return _jit(rng, skin, 18)
    if r < 0.22:
        return _jit(rng, hair, 18)
    if r < 0.45:  # neutrals
        g = rng.uniform(20, 235)
        return _jit(rng, (g, g, g), 10)
    return (float(rng.uniform(0, 255)), float(rng.uniform(0, 255)), float(rng.uniform(0, 255)))


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


# ------------------------------------------------------------------------------------------------ drawing


def placement(p: FaceParams) -> tuple[float, tuple[float, float]]:
    """Canvas units per face unit and the canvas position of the face origin, from scale and translation."""
    return _Canvas.UNIT * p.scale, (2 * p.tx, -0.14 + 2 * p.ty)


class _Canvas:
    """A supersampled canvas: colour, label, and the face- and body-frame coordinates of every sample.

    Canvas coordinates run from -1 to 1 across the image (y down). Body coordinates are face units with the
    head's translation and scale; face coordinates add the head tilt about a pivot below the chin.
    """

    PIVOT_Y = 1.3  # the head tilts about this point (face units): keeps it attached to the neck
    UNIT = 0.48  # canvas units per face unit at scale 1

    def __init__(self, p: FaceParams, size: int, ss: int):
        self.S = S = size * ss
        g = (np.arange(S, dtype=np.float32) + 0.5) / S * 2 - 1
        self.u, self.T = placement(p)
        th = math.radians(p.angle_deg)
        self.cos, self.sin = math.cos(th), math.sin(th)
        self.qx = (g[None, :] - self.T[0]) / self.u + np.zeros((S, 1), np.float32)
        self.qy = (g[:, None] - self.T[1]) / self.u + np.zeros((1, S), np.float32)
        dy = self.qy - self.PIVOT_Y
        self.fx = self.cos * self.qx + self.sin * dy
        self.fy = -self.sin * self.qx + self.cos * dy + self.PIVOT_Y
        self.gx = g[None, :] + np.zeros((S, 1), np.float32)
        self.gy = g[:, None] + np.zeros((1, S), np.float32)
        self.img = np.zeros((S, S, 3), np.float32)
        self.lab = np.zeros((S, S), np.uint8)
        self.p = p
        self._shade: dict[str, np.ndarray] = {}

    ALL = (slice(None), slice(None))

    def head_shade(self, sl=ALL) -> np.ndarray:
        """Head lighting (see _head_shade) over the whole canvas, computed once, sliced to sl."""
        if "head" not in self._shade:
            self._shade["head"] = _head_shade(self.p, self.fx, self.fy)
        return self._shade["head"][sl]

    def hair_shade(self, sl=ALL) -> np.ndarray:
        if "hair" not in self._shade:
            self._shade["hair"] = _hair_shade(self.p, self.fx, self.fy, self.head_shade())
        return self._shade["hair"][sl]

    def _slices(self, xs: np.ndarray, ys: np.ndarray) -> tuple[slice, slice] | None:
        S = self.S
        i0 = int(np.floor(((ys.min() + 1) / 2) * S - 1))
        i1 = int(np.ceil(((ys.max() + 1) / 2) * S + 1))
        j0 = int(np.floor(((xs.min() + 1) / 2) * S - 1))
        j1 = int(np.ceil(((xs.max() + 1) / 2) * S + 1))
        i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, S), min(j1, S)
        if i0 >= i1 or j0 >= j1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def face_box(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Canvas slices covering a face-frame rectangle (None if off-canvas)."""
        xs = np.array([x0, x1, x0, x1])
        ys = np.array([y0, y0, y1, y1]) - self.PIVOT_Y
        qx = self.cos * xs - self.sin * ys
        qy = self.sin * xs + self.cos * ys + self.PIVOT_Y
        return self._slices(self.T[0] + self.u * qx, self.T[1] + self.u * qy)

    def paint(self, sl, mask: np.ndarray, color, label: int, shade: np.ndarray | None = None) -> None:
        """Write colour (RGB, or [h, w, 3]) and label where mask is true. shade: [h, w] brightness factor."""
        if sl is None:
            return
        img = self.img[sl]
        c = np.asarray(color, dtype=np.float32)
        if c.ndim == 3:
            c = c[mask]
        if shade is not None:
            c = c * shade[mask][:, None]
        img[mask] = c
        self.lab[sl][mask] = label


def _cyl(p: FaceParams, s: float, r: float | None = None) -> float:
    """Image x (face units) of surface angle s on the head cylinder, after yaw."""
    r = p.face_w if r is None else r
    return r * math.sin(max(-1.5, min(1.5, s + p.yaw)))


def _feature_t(x: np.ndarray, p: FaceParams, s_c: float, s_hw: float, r: float | None = None):
    """Across-feature coordinate t (-1 left edge, 0 centre, 1 right edge) under the cylinder yaw model.

    Returns (t, centre x, left half-width, right half-width) in face units."""
    xl, xc, xr = _cyl(p, s_c - s_hw, r), _cyl(p, s_c, r), _cyl(p, s_c + s_hw, r)
    wl, wr = max(xc - xl, 1e-3), max(xr - xc, 1e-3)
    t = np.where(x < xc, (x - xc) / wl, (x - xc) / wr)
    return t, xc, wl, wr


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def _light(p: FaceParams) -> np.ndarray:
    lx, ly = math.cos(p.light_angle), math.sin(p.light_angle)
    v = np.array([0.75 * lx, 0.75 * ly, 0.66])
    return v / np.linalg.norm(v)


def _head_shade(p: FaceParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Lambert shading of the head as an ellipsoid, mixed in by `shading` (1 where shading is 0)."""
    if p.shading <= 0:
        return np.ones_like(x)
    lv = _light(p)
    nx = (x - 0.3 * _cyl(p, 0.0)) / (1.15 * p.face_w)
    ny = (y - 0.25) / 1.9
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0.02, 1))
    lam = np.clip(nx * lv[0] + ny * lv[1] + nz * lv[2], 0, 1)
    return (1 - p.shading) + p.shading * 1.25 * lam


def _background(cv: _Canvas, p: FaceParams) -> None:
    X, Y = cv.gx, cv.gy
    c0, c1 = np.asarray(p.bg_colors[0], np.float32), np.asarray(p.bg_colors[1], np.float32)
    t = np.clip(0.5 + 0.5 * (X * math.cos(p.bg_angle) + Y * math.sin(p.bg_angle)), 0, 1)[..., None]
    cv.img[:] = c0 + (c1 - c0) * t
    for kind, col, cx, cy, rx, ry, rot, freq, phase in p.bg_shapes:
        dx, dy = X - cx, Y - cy
        c, s = math.cos(rot), math.sin(rot)
        u, v = c * dx + s * dy, -s * dx + c * dy
        if kind == "ellipse":
            m = (u / rx) ** 2 + (v / ry) ** 2 <= 1
        elif kind == "rect":
            m = (np.abs(u) <= rx) & (np.abs(v) <= ry)
        elif kind == "stripes":  # a patch of parallel bands
            m = (np.sin(u * freq + phase) > 0.2) & ((u / (2 * rx)) ** 2 + (v / (2 * ry)) ** 2 <= 1)
        else:  # blob: a wobbly closed curve
            ang = np.arctan2(v, u)
            r = 1 + 0.25 * np.sin(3 * ang + phase) + 0.15 * np.sin(5 * ang + 2 * phase)
            m = (u / rx) ** 2 + (v / ry) ** 2 <= r * r
        cv.img[m] = np.asarray(col, np.float32)


def _clothes(cv: _Canvas, p: FaceParams) -> None:
    x, y = cv.qx, cv.qy
    xn = 0.15 * _cyl(p, 0.0)
    ax = np.abs(x - xn)
    top = p.shoulder_y + p.shoulder_slope * np.maximum(ax - p.neck_w, 0) + 2.0 * np.maximum(ax - p.shoulder_w, 0) ** 2
    m = y >= top
    if not m.any():
        return
    col = np.broadcast_to(np.asarray(p.clothes_color, np.float32), (*m.shape, 3))
    if p.clothes_pattern == "stripes":
        u = x * math.cos(p.stripe_angle) + y * math.sin(p.stripe_angle)
        band = (np.sin(u * p.stripe_freq) > 0)[..., None]
        col = np.where(band, col, np.asarray(p.clothes_color2, np.float32))
    elif p.clothes_pattern == "collar":
        band = (y < _neckline(p, x - xn) + 0.18)[..., None]
        col = np.where(band, np.asarray(p.clothes_color2, np.float32), col)
    # folds: a soft vertical ripple and darkening towards the arms, part of the shading
    fold = 1 - p.shading * (0.12 * np.sin(x * 3.1 + 1.3) ** 2 + 0.25 * _smoothstep(0.6, 1.0, ax / p.shoulder_w))
    cv.paint(cv.ALL, m, col, CLOTHES, fold)


def _neckline(p: FaceParams, dx: np.ndarray) -> np.ndarray:
    """Lower edge of the neck skin (body frame) as a function of the offset from the neck's centre line."""
    w = p.neck_w * 1.5
    r = np.clip(np.abs(dx) / w, 0, 1)
    base = p.shoulder_y + 0.05
    if p.neckline == "high":
        return base - 0.25 + 0.0 * r
    if p.neckline == "v":
        return base + p.neckline_depth * 1.5 * (1 - r)
    return base + p.neckline_depth * (1 - r * r)


def _neck(cv: _Canvas, p: FaceParams) -> None:
    x, y = cv.qx, cv.qy
    xn = 0.15 * _cyl(p, 0.0)
    dx = x - xn
    w = p.neck_w + 1.3 * np.maximum(y - p.shoulder_y + 0.1, 0)  # flares into the shoulders / chest
    m = (y > 0.4) & (np.abs(dx) < w) & (y < _neckline(p, dx))
    # darker under the jaw (the head shadows it), lighter towards the chest
    shade = p.neck_tone * (1 - p.shading * 0.35 * (1 - _smoothstep(0.9, p.shoulder_y, y)))
    shade = shade * cv.head_shade()
    cv.paint(cv.ALL, m, p.skin, NECK, shade)


def _hair_shade(p: FaceParams, x: np.ndarray, y: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """Strands radiating from the crown plus a sheen band, on top of the head's light (shade)."""
    if p.hair_texture > 0:
        ang = np.arctan2(x - 0.2 * p.sweep, y + 1.3)
        strands = np.sin(ang * 22 + p.hair_phase) * 0.6 + np.sin(ang * 9 - p.hair_phase) * 0.4
        sheen = np.exp(-(((y + 0.55 + 0.2 * np.cos(ang)) / 0.15) ** 2))
        shade = shade * (1 + p.hair_texture * strands + 1.5 * p.hair_texture * sheen)
    return shade


def _skull(p: FaceParams, x: np.ndarray, y: np.ndarray, extra: float = 0.0) -> np.ndarray:
    """Inside the hair volume around the top of the head."""
    a = p.face_w + p.hair_volume + extra
    b = p.top_h + 0.6 * p.hair_volume + 0.1 + extra
    return (x / a) ** 2 + ((y - 0.2) / b) ** 2 <= 1


def _back_hair_mask(p: FaceParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The outline of all scalp hair seen from the front: the volume around the skull plus what hangs below."""
    skull = _skull(p, x, y)
    a = p.face_w + p.hair_volume
    if p.hair_style in ("medium", "long"):
        wob = 0.06 * np.sin(x * 7 + p.hair_phase)
        dy = np.maximum(y - 0.2, 0)
        half = a * (1 + 0.1 * dy) + 0.05 * np.sin(y * 4 + p.hair_phase) * np.minimum(dy, 1)
        end = p.hair_end + wob
        # a rounded bottom: the ends curl in over the last 0.3 units
        half = half * np.sqrt(np.clip(1 - (np.maximum(y - end + 0.3, 0) / 0.3) ** 2, 0, 1) * 0.6 + 0.4)
        hang = (y > 0.2) & (y < end) & (np.abs(x) < half)
    else:
        hang = (y > 0.2) & (y < p.hair_end) & (np.abs(x) < a * 0.92)
    m = skull | hang
    if p.hair_style == "bald":  # only a ring at the sides and back
        m &= y > -0.2
    return m


def _back_hair(cv: _Canvas, p: FaceParams) -> None:
    if p.hair_style == "bald" and not p.side_hair:
        return
    x, y = cv.fx, cv.fy
    cv.paint(cv.ALL, _back_hair_mask(p, x, y), p.hair_color, HAIR,
             (1 - 0.4 * p.shading) * cv.hair_shade())


def _skin_mask(p: FaceParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    y_mid = 0.2
    a_l = p.face_w * (1 + 0.1 * p.yaw)
    a_r = p.face_w * (1 - 0.1 * p.yaw)
    upper = (y <= y_mid) & ((x / np.where(x < 0, a_l, a_r)) ** 2 + ((y - y_mid) / p.top_h) ** 2 <= 1)
    t = np.clip((y - y_mid) / p.jaw_h, 0, 1)
    chin_x = 0.85 * _cyl(p, 0.0) * 0.75
    c = chin_x * t ** 1.3
    w = np.where(x < c, a_l, a_r) * (1 - p.taper * t) * (1 - t ** p.jaw_k) ** (1 / p.jaw_k)
    lower = (y > y_mid) & (y <= y_mid + p.jaw_h) & (np.abs(x - c) <= w)
    return upper | lower


def _skin(cv: _Canvas, p: FaceParams) -> None:
    x, y = cv.fx, cv.fy
    m = _skin_mask(p, x, y)
    shade = cv.head_shade()
    if p.shading > 0:
        k = p.shading
        for side in (-1, 1):  # eye sockets
            t, xc, wl, wr = _feature_t(x, p, side * p.eye_sep, 1.4 * p.eye_w / p.face_w)
            d = t * t + ((y - p.eye_y + 0.03) / 0.17) ** 2
            shade = shade * (1 - 0.22 * k * np.exp(-2.5 * d))
        tip = _cyl(p, 0.0, p.face_w + p.nose_depth)
        d = ((x - tip) / 0.2) ** 2 + ((y - p.nose_tip - 0.1) / 0.06) ** 2  # shadow under the nose
        shade = shade * (1 - 0.3 * k * np.exp(-d))
        d = ((x - 0.6 * _cyl(p, 0.0)) / 0.25) ** 2 + ((y - p.mouth_y - p.lip_lo - 0.1) / 0.06) ** 2  # under the lip
        shade = shade * (1 - 0.2 * k * np.exp(-d))
    cv.paint(cv.ALL, m, p.skin, SKIN, shade)


def _ear(cv: _Canvas, p: FaceParams, side: int, near: bool) -> None:
    n = -side * p.yaw  # > 0: this ear turns towards the viewer
    a = p.face_w * (1 + 0.1 * p.yaw * -side)
    hw = 0.15 * p.ear_size * (1 + 0.5 * n if n > 0 else max(0.0, 1 + 1.6 * n))
    if hw < 0.01:
        return
    hh = 0.28 * p.ear_size
    xe = side * a * (1 - 0.35 * abs(p.yaw))
    sl = cv.face_box(xe - hw - 0.05, xe + hw + 0.05, p.ear_y - hh - 0.05, p.ear_y + hh + 0.05)
    if sl is None:
        return
    x, y = cv.fx[sl], cv.fy[sl]
    v = (y - p.ear_y) / hh
    u = (x - xe) / hw
    m = u * u + v * v * (1 + 0.3 * np.clip(v, 0, 1)) <= 1  # lobe narrower than the top
    if near:
        x_att = side * a * (0.93 - 0.55 * max(n, 0.0))
        m &= side * (x - x_att) > 0
    concha = ((u + side * 0.15) / 0.5) ** 2 + ((v + 0.05) / 0.55) ** 2 <= 1
    shade = cv.head_shade(sl) * 0.97 * np.where(concha, 1 - 0.35 * max(p.shading, 0.15), 1.0)
    cv.paint(sl, m, p.skin, EAR, shade)


def _nose(cv: _Canvas, p: FaceParams) -> None:
    """Same base colour as the skin: only side shading, a bridge highlight and the nostrils mark it."""
    top = p.eye_y + 0.04
    L = p.nose_tip - top
    bottom = 0.09
    bx, tx = _cyl(p, 0.0), _cyl(p, 0.0, p.face_w + p.nose_depth)
    hw_max = p.nose_w * (1 + 0.35 * abs(p.yaw))
    sl = cv.face_box(min(bx, tx) - hw_max - 0.05, max(bx, tx) + hw_max + 0.05, top - 0.05, p.nose_tip + bottom + 0.05)
    if sl is None:
        return
    x, y = cv.fx[sl], cv.fy[sl]
    r = (y - top) / L
    xc = bx + (tx - bx) * np.clip(r, 0, 1) ** 1.5
    hw = 0.055 + (p.nose_w - 0.055) * np.clip(r, 0, 1) ** 2.2
    rb = np.clip((r - 1) * L / bottom, 0, 1)
    hw = hw * np.sqrt(np.clip(1 - rb * rb, 0, 1))
    far = np.sign(p.yaw) * (x - xc) > 0
    hw = hw * np.where(far, 1 - 0.6 * abs(p.yaw), 1 + 0.35 * abs(p.yaw))
    u = (x - xc) / np.maximum(hw, 1e-3)
    m = (r >= 0) & (r <= 1 + bottom / L) & (np.abs(u) <= 1)
    shade = cv.head_shade(sl)
    if p.shading > 0:
        lv = _light(p)
        lam = np.clip(0.75 * u * lv[0] + np.sqrt(np.clip(1 - 0.56 * u * u, 0, 1)) * lv[2], 0, 1)
        shade = shade * ((1 - 0.8 * p.shading) + 0.8 * p.shading * 1.25 * lam)
        shade = shade * (1 + 0.12 * p.shading * np.exp(-(u / 0.25) ** 2) * (r < 1))  # bridge highlight
    nostril = np.zeros_like(m)
    for sgn in (-1, 1):
        hw_s = p.nose_w * (1 - 0.6 * abs(p.yaw) if sgn * np.sign(p.yaw) > 0 else 1 + 0.35 * abs(p.yaw))
        nx = tx + sgn * 0.5 * hw_s
        nostril |= ((x - nx) / (0.28 * hw_s)) ** 2 + ((y - p.nose_tip - 0.035) / 0.025) ** 2 <= 1
    shade = np.where(nostril & m, shade * 0.45, shade)
    cv.paint(sl, m, p.skin, NOSE, shade)


def _mouth(cv: _Canvas, p: FaceParams) -> None:
    r = 0.85 * p.face_w
    s_hw = p.mouth_w / r
    xl, xr = _cyl(p, -s_hw, r), _cyl(p, s_hw, r)
    y0 = p.mouth_y - p.lip_up - p.mouth_open / 2 - abs(p.smile) - 0.03
    y1 = p.mouth_y + p.lip_lo + p.mouth_open / 2 + abs(p.smile) + 0.03
    sl = cv.face_box(xl - 0.03, xr + 0.03, y0, y1)
    if sl is None:
        return
    x, y = cv.fx[sl], cv.fy[sl]
    t, xc, wl, wr = _feature_t(x, p, 0.0, s_hw, r)
    inside = np.abs(t) <= 1
    tt = np.clip(1 - t * t, 0, 1)
    yc = p.mouth_y - p.smile * t * t
    o = p.mouth_open * tt ** 0.5
    top = yc - o / 2 - p.lip_up * tt ** 0.5 * (1 - 0.35 * np.exp(-((t / 0.18) ** 2)))
    bot = yc + o / 2 + p.lip_lo * tt ** 0.7
    m = inside & (y >= top) & (y <= bot)
    col = np.broadcast_to(np.asarray(p.lip_color, np.float32), (*m.shape, 3)).copy()
    shade = cv.head_shade(sl) * (1 + 0.12 * p.shading * np.exp(-(((y - yc - o / 2 - p.lip_lo * 0.45)
                                                                        / (0.3 * p.lip_lo + 1e-3)) ** 2)))
    if p.mouth_open > 0:
        cavity = inside & (y > yc - o / 2) & (y < yc + o / 2)
        col[cavity] = np.asarray(p.lip_color, np.float32) * 0.25 + np.array([15, 3, 5], np.float32)
        if p.teeth:
            teeth = cavity & (y < yc - o / 2 + 0.45 * p.mouth_open) & (np.abs(t) < 0.75)
            col[teeth] = np.array([232, 226, 212], np.float32)
    seam = inside & (np.abs(y - yc) < 0.012) & (o < 0.01)
    shade = np.where(seam, shade * 0.55, shade)
    cv.paint(sl, m, col, MOUTH, shade)


def _eye(cv: _Canvas, p: FaceParams, side: int) -> None:
    s_c, s_hw = side * p.eye_sep, p.eye_w / p.face_w
    xl, xr = _cyl(p, s_c - s_hw), _cyl(p, s_c + s_hw)
    sl = cv.face_box(xl - 0.03, xr + 0.03, p.eye_y - 0.25, p.eye_y + 0.2)
    if sl is None:
        return
    x, y = cv.fx[sl], cv.fy[sl]
    t, xc, wl, wr = _feature_t(x, p, s_c, s_hw)
    v = y - (p.eye_y - p.eye_tilt * t * side)
    inside = np.abs(t) <= 1
    tt = np.clip(1 - t * t, 0, 1)
    if p.eye_open < 0.35:  # closed / nearly closed: a lash line along the lower lid
        lid = 0.35 * p.eye_h * tt - 0.01
        th = 0.012 + 0.05 * p.eye_open * tt
        m = inside & (np.abs(v - lid) <= th)
        cv.paint(sl, m, _mix(p.brow_color, (20, 15, 15), 0.6), EYE, cv.head_shade(sl))
        return
    up = p.eye_open * p.eye_h * tt ** 0.6
    lo = p.eye_open * p.eye_h * 0.75 * tt ** 0.85
    m = inside & (v >= -up) & (v <= lo)
    col = np.broadcast_to(np.asarray(p.sclera, np.float32), (*m.shape, 3)).copy()
    fs = max(math.cos(s_c + p.yaw), 0.2)  # foreshortening of round things
    xi = _cyl(p, s_c + p.gaze * s_hw * 0.45)
    ri = p.iris_r * p.eye_w
    d = np.sqrt(((x - xi) / fs) ** 2 + (v + 0.1 * p.eye_h) ** 2)
    col[d <= ri] = np.asarray(p.iris_color, np.float32)
    col[d <= 0.42 * ri] = np.array([12, 10, 10], np.float32)
    lash = m & (v < -up + 0.018 + 0.012 * tt)
    col[lash] = np.asarray(_mix(p.brow_color, (15, 12, 12), 0.7), np.float32)
    shade = 1 - 0.25 * p.shading * np.clip(1 - (v + up) / (0.6 * up + 1e-3), 0, 1)  # the upper lid shadows
    cv.paint(sl, m, col, EYE, shade * np.sqrt(cv.head_shade(sl)))


def _brow(cv: _Canvas, p: FaceParams, side: int) -> None:
    s_c = side * (p.eye_sep + 0.03)
    s_hw = p.brow_len / p.face_w
    yb = p.eye_y - p.brow_gap
    xl, xr = _cyl(p, s_c - s_hw), _cyl(p, s_c + s_hw)
    sl = cv.face_box(xl - 0.03, xr + 0.03, yb - 0.2, yb + 0.15)
    if sl is None:
        return
    x, y = cv.fx[sl], cv.fy[sl]
    t, *_ = _feature_t(x, p, s_c, s_hw)
    to = t * side  # > 0 towards the outer end
    yc = yb - p.brow_arch * (1 - (to - 0.2) ** 2) - p.brow_tilt * to
    th = p.brow_th * (1 - 0.55 * np.clip(to, 0, 1) ** 2) * np.sqrt(np.clip(1 - np.clip(-to - 0.8, 0, 1) * 5, 0, 1))
    m = (np.abs(t) <= 1) & (np.abs(y - yc) <= th / 2)
    cv.paint(sl, m, p.brow_color, EYEBROW, cv.hair_shade(sl) if p.hair_texture > 0 else None)


def _glasses(cv: _Canvas, p: FaceParams) -> None:
    """Frames are `clothes`; a tinted lens darkens whatever is behind it and keeps its label."""
    s_hw = 1.5 * p.eye_w / p.face_w
    sl = cv.face_box(-1.3 * p.face_w, 1.3 * p.face_w, p.eye_y - p.glasses_h - 0.1, p.eye_y + p.glasses_h + 0.1)
    if sl is None:
        return
    x, y = cv.fx[sl], cv.fy[sl]
    pe = 2.0 if p.glasses_round else 4.0
    yl = p.eye_y + 0.02
    frame = np.zeros(x.shape, bool)
    lens = np.zeros(x.shape, bool)
    ft = p.glasses_th
    edges = []
    for side in (-1, 1):
        s_c = side * p.eye_sep
        t, xc, wl, wr = _feature_t(x, p, s_c, s_hw)
        hw = np.where(t < 0, wl, wr)
        dx = np.abs(t)
        dy = np.abs(y - yl) / p.glasses_h
        outer = dx ** pe + dy ** pe <= 1
        inner = (np.abs(t * hw) / np.maximum(hw - ft, 1e-3)) ** pe + (np.abs(y - yl) / (p.glasses_h - ft)) ** pe <= 1
        frame |= outer & ~inner
        lens |= inner
        edges.append((xc - wl, xc + wr))
    (l0, l1), (r0, r1) = edges
    bridge = (x > l1 - 0.01) & (x < r0 + 0.01) & (np.abs(y - (yl - 0.45 * p.glasses_h)) < ft / 2)
    skin = _skin_mask(p, x, y)
    arms = skin & (np.abs(y - (yl - 0.5 * p.glasses_h)) < ft / 2) & ((x < l0) | (x > r1))
    if p.lens_tint > 0:
        img = cv.img[sl]
        img[lens] = img[lens] * (1 - p.lens_tint) + p.lens_tint * np.asarray(p.lens_color, np.float32)
    cv.paint(sl, frame | bridge | arms, p.glasses_color, CLOTHES, None)


def _front_hair(cv: _Canvas, p: FaceParams) -> None:
    if p.hair_style == "bald":
        return
    x, y = cv.fx, cv.fy
    a = p.face_w
    part = 0.3 * p.sweep
    r = np.clip(np.abs(x - part) / a, 0, 1.5)
    line = p.hairline_y + (p.hairline_side - p.hairline_y) * r ** p.hairline_p + p.sweep * 0.25 * x
    if p.fringe:
        line = line + 0.035 * np.sin(x * 13 + p.hair_phase)  # strand tips
    m = _skull(p, x, y, 0.0 if p.hair_style != "buzz" else -p.hair_volume) & (y < line)
    if p.covers_ears:  # locks over the sides of the face and the ears
        inner = a * (0.78 + 0.08 * np.sin(y * 5 + p.hair_phase))
        lock_end = min(p.hair_end, 1.6)
        m |= (np.abs(x) > inner) & (y < lock_end) & _back_hair_mask(p, x, y)
    cv.paint(cv.ALL, m, p.hair_color, HAIR, cv.hair_shade())


def _hat(cv: _Canvas, p: FaceParams) -> None:
    if p.hat == "none":
        return
    x, y = cv.fx, cv.fy
    a = p.face_w + max(p.hair_volume, 0.05) + 0.06
    yh = p.hat_y
    col = np.broadcast_to(np.asarray(p.hat_color, np.float32), (*x.shape, 3))
    if p.hat == "beanie":
        crown = ((x / a) ** 2 + ((y - yh) / (p.top_h + 0.35 + yh)) ** 2 <= 1) & (y < yh)
        cuff = crown & (y > yh - 0.22)
        col = np.where(cuff[..., None], np.asarray(p.hat_color2, np.float32), col)
        m = crown
    elif p.hat == "cap":
        crown = ((x / a) ** 2 + ((y - yh) / (p.top_h + 0.2 + yh)) ** 2 <= 1) & (y < yh)
        xv = _cyl(p, 0.0)
        visor = ((x - xv) / (0.85 * a)) ** 2 + ((y - yh - 0.02) / 0.13) ** 2 <= 1
        col = np.where(visor[..., None] & ~crown[..., None], np.asarray(p.hat_color2, np.float32), col)
        m = crown | visor
    else:  # brim hat
        crown = (np.abs(x) < 0.85 * a) & (y < yh) & (y > yh - 0.75) | \
            ((x / (0.85 * a)) ** 2 + ((y - yh + 0.75) / 0.2) ** 2 <= 1)
        brim = (x / (1.75 * a)) ** 2 + ((y - yh) / 0.16) ** 2 <= 1
        band = crown & (y > yh - 0.2)
        col = np.where(band[..., None], np.asarray(p.hat_color2, np.float32), col)
        m = crown | brim
    cv.paint(cv.ALL, m, col, CLOTHES, cv.head_shade())


# tie-break for the mask vote: small / thin parts win a 2-2 split, so they do not vanish at low resolution
_PRIORITY = np.array([0, 1, 5, 8, 9, 6, 7, 4, 2, 3], np.int32)


def draw(p: FaceParams, size: int = 64, ss: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Paint all layers on the ss x ss supersampled grid: float image [S, S, 3] (0-255), labels [S, S]."""
    cv = _Canvas(p, size, ss)
    _background(cv, p)
    _clothes(cv, p)
    _back_hair(cv, p)
    _neck(cv, p)
    far = 1 if p.yaw > 0 else -1
    if abs(p.yaw) > 0.05:
        _ear(cv, p, far, near=False)
    _skin(cv, p)
    for side in (-1, 1):
        if abs(p.yaw) <= 0.05 or side != far:
            _ear(cv, p, side, near=True)
    _nose(cv, p)
    _mouth(cv, p)
    for side in (-1, 1):
        _eye(cv, p, side)
        _brow(cv, p, side)
    if p.glasses:
        _glasses(cv, p)
    _front_hair(cv, p)
    _hat(cv, p)
    return cv.img, cv.lab


def _downsample_labels(lab: np.ndarray, ss: int) -> np.ndarray:
    """Majority class of each pixel's ss x ss samples; ties go to the smaller / thinner part (_PRIORITY)."""
    S = lab.shape[0]
    n = S // ss
    L = lab.reshape(n, ss, n, ss).transpose(0, 2, 1, 3).reshape(n * n, ss * ss)
    counts = (L[:, :, None] == L[:, None, :]).sum(-1)
    score = counts * 16 + _PRIORITY[L]
    idx = score.argmax(1)
    return L[np.arange(n * n), idx].reshape(n, n)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        q = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(k[i] * np.take(q, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return img


def finish(img: np.ndarray, p: FaceParams, size: int, ss: int = 2) -> np.ndarray:
    """Supersampled float image -> uint8 [size, size, 3]: box-downsample, lighting ramp, cast, blur, noise."""
    out = img.reshape(size, ss, size, ss, 3).mean((1, 3))
    if p.gradient or p.exposure != 1.0 or p.cast != (1.0, 1.0, 1.0):
        g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        ramp = g[None, :] * math.cos(p.gradient_angle) + g[:, None] * math.sin(p.gradient_angle)
        gain = (p.exposure * (1 + p.gradient * ramp))[..., None] * np.asarray(p.cast, np.float32)
        out = out * gain
    if p.blur > 0:
        out = _gaussian_blur(out, p.blur * size / 64)
    if p.noise > 0:
        out = out + np.random.default_rng([p.seed, size]).normal(0, p.noise, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_params(p: FaceParams, size: int = 64, ss: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render given parameters: (image uint8 [size, size, 3], mask uint8 [size, size] of class indices)."""
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size}")
    if ss < 1:
        raise ValueError(f"supersampling ss must be >= 1, got {ss}")
    img, lab = draw(p, int(size), ss)
    return finish(img, p, int(size), ss), _downsample_labels(lab, ss).astype(np.uint8)


def render_face(seed: int, size: int = 64, mode: str = "wild") -> tuple[np.ndarray, np.ndarray]:
    """The face of `seed` at `size` px: (image uint8 [H, W, 3], mask uint8 [H, W]). Deterministic; the same
    seed at another size is the same face (only the pixel noise differs). mode: "wild" (unaligned, cluttered)
    or "aligned" (FFHQ-style crop of the same identity, `partseg.data.faces_aligned`)."""
    from partseg.data.faces_aligned import params_for

    return render_params(params_for(seed, mode), size)


def render_batch(seeds: Iterable[int], size: int = 64, mode: str = "wild") -> tuple[np.ndarray, np.ndarray]:
    """Stacked renders: images uint8 [N, size, size, 3], masks uint8 [N, size, size]."""
    out = [render_face(int(s), size, mode) for s in seeds]
    if not out:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8)
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


# ------------------------------------------------------------------------------------------ difficulty floor


def colour_floor(n_fit: int = 1000, n_eval: int = 200, size: int = 64, seed: int = 1_000_000,
                 mode: str = "wild") -> dict:
    """How far colour alone gets: a per-pixel nearest class-mean RGB classifier.

    Class means are fitted on the renders of seeds seed .. seed+n_fit-1 and scored on the next n_eval seeds
    (IoU over all held-out pixels). A domain where this scores high would let a few-shot head look good
    without understanding parts; the issue asks for mIoU well under 0.35.
    Returns {"iou": {name: IoU}, "miou", "pixel_acc", "means": {name: [r, g, b]}}.
    """
    k = len(FACES)
    sums, counts = np.zeros((k, 3)), np.zeros(k)
    for s in range(seed, seed + n_fit):
        img, m = render_face(s, size, mode)
        m = m.ravel()
        counts += np.bincount(m, minlength=k)[:k]
        for c in range(3):
            sums[:, c] += np.bincount(m, weights=img[..., c].ravel(), minlength=k)[:k]
    means = sums / np.maximum(counts, 1)[:, None]
    means[counts == 0] = 1e9  # a class never seen can never be predicted
    acc = ScoreAccumulator(k)
    for s in range(seed + n_fit, seed + n_fit + n_eval):
        img, m = render_face(s, size, mode)
        d = ((img.reshape(-1, 1, 3).astype(np.float64) - means[None]) ** 2).sum(-1)
        acc.add(torch.from_numpy(d.argmin(1)), torch.from_numpy(m.ravel()))
    scores = acc.scores()
    return {"iou": scores.per_class(list(FACES.names)), "miou": scores.miou, "pixel_acc": scores.pixel_accuracy,
            "means": {n: [round(float(v), 1) for v in mu]
                      for n, mu in zip(FACES.names, means, strict=True) if mu[0] < 1e8}}
