"""The layers behind the facial features, back to front: background, clothes, back hair, neck, skin, ears."""

from __future__ import annotations

import math

import numpy as np

from partseg.data.faces.canvas import _Canvas, _cyl, _feature_t, _smoothstep
from partseg.data.faces.params import CLOTHES, EAR, HAIR, NECK, SKIN, FaceParams


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
