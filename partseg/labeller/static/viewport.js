// The view transform: image <-> client coordinates, fit to the window, zoom at a point.

import { requestRender, view } from "./render.js";
import { S } from "./state.js";

export function clientToImage(cx, cy) {
  const r = view.getBoundingClientRect();
  return { x: (cx - r.left - S.tx) / S.scale, y: (cy - r.top - S.ty) / S.scale };
}

export function imageToClient(x, y) {
  const r = view.getBoundingClientRect();
  return { x: r.left + S.tx + x * S.scale, y: r.top + S.ty + y * S.scale };
}

export function fit() {
  if (!S.width) return;
  const r = view.getBoundingClientRect();
  let s = Math.min(r.width / S.width, r.height / S.height) * 0.94;
  if (s >= 1) s = Math.floor(s); // integer zoom keeps every image pixel the same size on screen
  S.scale = Math.max(s, 0.05);
  S.tx = Math.round((r.width - S.width * S.scale) / 2);
  S.ty = Math.round((r.height - S.height * S.scale) / 2);
  S.viewFor = `${S.width}x${S.height}`;
  requestRender();
}

/** Zoom by `factor` keeping the image point under client point (cx, cy) in place. */
export function zoomAt(cx, cy, factor) {
  const r = view.getBoundingClientRect();
  const px = cx - r.left, py = cy - r.top;
  const fitScale = Math.min(r.width / S.width, r.height / S.height);
  const s = Math.min(Math.max(S.scale * factor, fitScale * 0.25), 256);
  S.tx = px - (px - S.tx) * (s / S.scale);
  S.ty = py - (py - S.ty) * (s / S.scale);
  S.scale = s;
  requestRender();
}
