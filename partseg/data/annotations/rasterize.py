"""Rasterising vector shapes onto the pixel grid.

Geometry convention (every vector format): coordinates are in pixels with (0, 0) the top-left corner of the
top-left pixel, so pixel (i, j) is the unit square [i, i+1) x [j, j+1) and its centre is (i + 0.5, j + 0.5).
A shape covers a pixel when the pixel's centre lies inside it (even-odd rule; a centre exactly on an edge counts
when the edge is a left or top edge, so shapes that share an edge never both claim, nor both miss, a pixel).
Hence a polygon or box with corners (x0, y0) and (x1 + 1, y1 + 1) covers exactly pixels x0..x1, y0..y1: what an
annotator sees when tracing pixel borders in LabelMe or CVAT, and what pycocotools produces for such a polygon.
PIL's ImageDraw.polygon is not used: it snaps vertices to the pixel grid and fills the pixels on the boundary
too, so a rectangle traced on pixel borders comes back one row and one column too big (checked with Pillow 13).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rasterize_polygon(points: Sequence[Sequence[float]] | np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [H, W]: the pixels whose centre lies inside the polygon (see the module docstring for the rule).

    A scanline fill at the pixel-centre rows: every edge crossing row y at x toggles all pixels whose centre is
    at or right of x; the parity of the toggles is the even-odd rule. Exact for any vertex coordinates.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((height, width), dtype=bool)
    if len(pts) < 3 or height == 0 or width == 0:
        return out
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cy = np.arange(height, dtype=np.float64) + 0.5
    lo, hi = np.minimum(y0, y1)[:, None], np.maximum(y0, y1)[:, None]
    crosses = (lo <= cy) & (cy < hi)  # [E, H]; half-open in y, horizontal edges never cross
    e, r = np.nonzero(crosses)
    if len(e) == 0:
        return out
    t = (cy[r] - y0[e]) / (y1[e] - y0[e])
    xi = x0[e] + t * (x1[e] - x0[e])
    first = np.clip(np.ceil(xi - 0.5), 0, width).astype(np.int64)  # first pixel whose centre is >= xi
    toggles = np.zeros((height, width + 1), dtype=np.int32)
    np.add.at(toggles, (r, first), 1)
    return (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(bool)


def rasterize_ellipse(cx: float, cy: float, rx: float, ry: float, height: int, width: int) -> np.ndarray:
    """bool [H, W]: pixels whose centre lies inside or on an axis-aligned ellipse (a circle when rx == ry)."""
    if rx <= 0 or ry <= 0:
        return np.zeros((height, width), dtype=bool)
    ys = (np.arange(height) + 0.5 - cy)[:, None] / ry
    xs = (np.arange(width) + 0.5 - cx)[None, :] / rx
    return xs * xs + ys * ys <= 1.0
