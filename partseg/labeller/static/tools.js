// The editing tools: brush and eraser strokes, polygons, flood fill, and the head's suggestion.
//
// Each works on S.mask at the image's resolution and ends in history.commit, which records, shows and saves
// the change; the brush refreshes the mask layer as it goes, inside the box it touched.

import { $, enc, showMessage } from "./dom.js";
import { updateButtons } from "./controls.js";
import { commit } from "./history.js";
import { refreshMask, requestRender, stampCentre } from "./render.js";
import { IGNORE, S } from "./state.js";
import { imageToClient } from "./viewport.js";

function emptyBox() {
  return { x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity };
}

function stamp(x, y, value, box) {
  const W = S.width, H = S.height, r = S.brush / 2, r2 = r * r + 1e-9;
  const c = stampCentre(x, y);
  const x0 = Math.max(0, Math.floor(c.x - r)), x1 = Math.min(W - 1, Math.ceil(c.x + r));
  const y0 = Math.max(0, Math.floor(c.y - r)), y1 = Math.min(H - 1, Math.ceil(c.y + r));
  for (let j = y0; j <= y1; j++) {
    const dy = j + 0.5 - c.y;
    for (let i = x0; i <= x1; i++) {
      const dx = i + 0.5 - c.x;
      if (dx * dx + dy * dy <= r2) {
        S.mask[j * W + i] = value;
        if (i < box.x0) box.x0 = i;
        if (i > box.x1) box.x1 = i;
        if (j < box.y0) box.y0 = j;
        if (j > box.y1) box.y1 = j;
      }
    }
  }
}

/** Start a brush (or eraser) stroke at image point p with its first stamp. */
export function startStroke(p) {
  S.stroke = { before: S.mask.slice(), last: p, value: S.tool === "eraser" ? IGNORE : S.cls };
  const box = emptyBox();
  stamp(p.x, p.y, S.stroke.value, box);
  refreshMask(box);
}

export function strokeTo(p) {
  // stamps every quarter pixel along the segment: pointer events arrive sparsely on a fast drag
  const a = S.stroke.last, box = emptyBox();
  const n = Math.max(1, Math.ceil(Math.hypot(p.x - a.x, p.y - a.y) / 0.25));
  for (let k = 1; k <= n; k++) stamp(a.x + ((p.x - a.x) * k) / n, a.y + ((p.y - a.y) * k) / n, S.stroke.value, box);
  S.stroke.last = p;
  refreshMask(box);
  requestRender();
}

/** Finish the stroke at image point p: one undo step. */
export function endStroke(p) {
  strokeTo(p);
  const before = S.stroke.before;
  S.stroke = null;
  commit(before);
}

export function floodFill(p) {
  const W = S.width, H = S.height;
  const x = Math.floor(p.x), y = Math.floor(p.y);
  if (x < 0 || y < 0 || x >= W || y >= H) return;
  const m = S.mask, target = m[y * W + x], value = S.cls;
  if (target === value) return;
  const before = m.slice();
  const stack = [y * W + x];
  m[y * W + x] = value;
  while (stack.length) { // 4-connected: a region closed by a one-pixel diagonal line stays closed
    const k = stack.pop(), i = k % W, j = (k - i) / W;
    if (i > 0 && m[k - 1] === target) { m[k - 1] = value; stack.push(k - 1); }
    if (i < W - 1 && m[k + 1] === target) { m[k + 1] = value; stack.push(k + 1); }
    if (j > 0 && m[k - W] === target) { m[k - W] = value; stack.push(k - W); }
    if (j < H - 1 && m[k + W] === target) { m[k + W] = value; stack.push(k + W); }
  }
  commit(before);
}

function fillPolygon(pts, value) {
  // pixels whose centre lies inside (even-odd rule, half-open in y): the convention of
  // partseg.data.annotations.rasterize_polygon, so a polygon traced on pixel borders covers exactly those pixels
  const W = S.width, H = S.height, n = pts.length;
  for (let j = 0; j < H; j++) {
    const cy = j + 0.5, xs = [];
    for (let e = 0; e < n; e++) {
      const a = pts[e], b = pts[(e + 1) % n];
      const lo = Math.min(a.y, b.y), hi = Math.max(a.y, b.y);
      if (lo <= cy && cy < hi) xs.push(a.x + ((cy - a.y) / (b.y - a.y)) * (b.x - a.x));
    }
    xs.sort((u, v) => u - v);
    for (let q = 0; q + 1 < xs.length; q += 2) {
      const i0 = Math.max(0, Math.ceil(xs[q] - 0.5)), i1 = Math.min(W, Math.ceil(xs[q + 1] - 0.5));
      for (let i = i0; i < i1; i++) S.mask[j * W + i] = value;
    }
  }
}

export function closePolygon() {
  const pts = S.polygon;
  S.polygon = [];
  if (pts.length >= 3 && S.editable) {
    const before = S.mask.slice();
    fillPolygon(pts, S.cls);
    commit(before);
  }
  requestRender();
}

export function cancelPolygon() {
  S.polygon = [];
  requestRender();
}

/** Take back the polygon's last point. */
export function popPolygonPoint() {
  S.polygon.pop();
  requestRender();
}

/** A click of the polygon tool at image point p (event e): a new point, or closing the polygon on a
 * double-click or a click on its first point. */
export function polygonClick(p, e) {
  const pts = S.polygon, now = performance.now(), last = S.lastPolyClick;
  const nearLast = Math.hypot(e.clientX - last.x, e.clientY - last.y) <= 4 && now - last.t < 500;
  S.lastPolyClick = { t: now, x: e.clientX, y: e.clientY };
  if (pts.length >= 3) {
    const f = imageToClient(pts[0].x, pts[0].y);
    if (nearLast || Math.hypot(e.clientX - f.x, e.clientY - f.y) <= 6) { // a double-click, or the first point
      closePolygon();
      return;
    }
  } else if (nearLast && pts.length) {
    return; // second click of a double-click before there is a polygon: ignore
  }
  pts.push(p);
  requestRender();
}

/** Fill the unlabelled pixels with the head's prediction (POST /api/suggest/NAME); labelled ones stay. */
export async function suggest() {
  if (!S.editable) return;
  const name = S.name;
  $("suggest").disabled = true;
  try {
    const r = await fetch(`/api/suggest/${enc(name)}`, { method: "POST" });
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || `HTTP ${r.status}`);
    const pred = new Uint8Array(await r.arrayBuffer());
    if (name !== S.name || pred.length !== S.mask.length) return;
    const before = S.mask.slice();
    for (let i = 0; i < pred.length; i++) if (S.mask[i] === IGNORE) S.mask[i] = pred[i];
    commit(before);
  } catch (err) {
    showMessage(`suggest failed: ${err.message || err}`);
  } finally {
    updateButtons();
  }
}
