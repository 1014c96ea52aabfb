"""The supersampled canvas every layer paints on, the head's cylinder (yaw) model and its lighting."""

from __future__ import annotations

import math

import numpy as np

from partseg.data.faces.params import FaceParams


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


def _hair_shade(p: FaceParams, x: np.ndarray, y: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """Strands radiating from the crown plus a sheen band, on top of the head's light (shade)."""
    if p.hair_texture > 0:
        ang = np.arctan2(x - 0.2 * p.sweep, y + 1.3)
        strands = np.sin(ang * 22 + p.hair_phase) * 0.6 + np.sin(ang * 9 - p.hair_phase) * 0.4
        sheen = np.exp(-(((y + 0.55 + 0.2 * np.cos(ang)) / 0.15) ** 2))
        shade = shade * (1 + p.hair_texture * strands + 1.5 * p.hair_texture * sheen)
    return shade
