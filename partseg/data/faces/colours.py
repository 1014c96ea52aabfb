"""Colours of a face: skin tones, hair, iris and lip palettes, and the draws that pick them (some on purpose
close to the skin or hair colour, so colour alone cannot tell the parts apart)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Color = tuple[float, float, float]


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
