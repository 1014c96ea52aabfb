"""The layers in front: nose, mouth, eyes, eyebrows, glasses, front hair and hats."""

from __future__ import annotations

import math

import numpy as np

from partseg.data.faces.body import _back_hair_mask, _skin_mask, _skull
from partseg.data.faces.canvas import _Canvas, _cyl, _feature_t, _light
from partseg.data.faces.colours import _mix
from partseg.data.faces.params import CLOTHES, EYE, EYEBROW, HAIR, MOUTH, NOSE, FaceParams


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
