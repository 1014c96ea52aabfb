// Drawing: the image, the mask layer over it and the overlays (polygon, brush cursor), at most once per frame.
//
// The mask layer is an offscreen canvas at the image's native size holding the class colours (unlabelled:
// transparent), drawn with the same nearest-neighbour transform as the image, so what is painted is exactly
// what is saved. It is refreshed only where the mask changed.

import { $ } from "./dom.js";
import { S } from "./state.js";

export const view = $("view");
const ctx = view.getContext("2d");
const palRGBA = new Uint8ClampedArray(256 * 4); // class -> RGBA; 255 (and unused entries) transparent
const maskCanvas = document.createElement("canvas");
const maskCtx = maskCanvas.getContext("2d");
let maskData = null;
let frameRequested = false;

/** Take the class colours from the kit's labels. */
export function setPalette(labels) {
  palRGBA.fill(0);
  for (const [i, c] of labels.entries()) palRGBA.set([c.color[0], c.color[1], c.color[2], 255], i * 4);
}

/** Size the mask layer for a newly opened image (call refreshMask next). */
export function resetMaskLayer(W, H) {
  maskCanvas.width = W;
  maskCanvas.height = H;
  maskData = maskCtx.createImageData(W, H);
}

export function requestRender() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    render();
  });
}

export function render() {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(view.clientWidth * dpr)), h = Math.max(1, Math.round(view.clientHeight * dpr));
  if (view.width !== w || view.height !== h) {
    view.width = w;
    view.height = h;
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (!S.img || !S.width) return;
  ctx.imageSmoothingEnabled = false;
  ctx.setTransform(dpr * S.scale, 0, 0, dpr * S.scale, dpr * S.tx, dpr * S.ty);
  ctx.drawImage(S.img, 0, 0);
  if (S.showMask && S.opacity > 0 && S.mask) {
    ctx.globalAlpha = S.opacity;
    ctx.drawImage(maskCanvas, 0, 0);
    ctx.globalAlpha = 1;
  }
  // overlays in CSS pixels
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.strokeStyle = "#5a606b";
  ctx.lineWidth = 1;
  ctx.strokeRect(S.tx - 0.5, S.ty - 0.5, S.width * S.scale + 1, S.height * S.scale + 1);
  drawPolygonOverlay();
  drawBrushCursor();
}

/** The RGBA of the canvas pixel under client point (cx, cy), rendered now (tests read what is on screen). */
export function viewPixel(cx, cy) {
  const r = view.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  render();
  return Array.from(ctx.getImageData(Math.floor((cx - r.left) * dpr), Math.floor((cy - r.top) * dpr), 1, 1).data);
}

function colorCss(c, a) {
  const col = S.labels[c] ? S.labels[c].color : [255, 255, 255];
  return `rgba(${col[0]}, ${col[1]}, ${col[2]}, ${a})`;
}

function drawPolygonOverlay() {
  const pts = S.polygon;
  if (!pts.length) return;
  const scr = pts.map((p) => ({ x: S.tx + p.x * S.scale, y: S.ty + p.y * S.scale }));
  ctx.beginPath();
  ctx.moveTo(scr[0].x, scr[0].y);
  for (const p of scr.slice(1)) ctx.lineTo(p.x, p.y);
  if (S.hover) ctx.lineTo(S.tx + S.hover.x * S.scale, S.ty + S.hover.y * S.scale);
  ctx.closePath();
  ctx.fillStyle = colorCss(S.cls, 0.35);
  ctx.fill();
  ctx.strokeStyle = "#000000"; // a dark line under a dashed light one: visible over any colour
  ctx.lineWidth = 3;
  ctx.stroke();
  ctx.setLineDash([6, 4]);
  ctx.strokeStyle = "#ffffff";
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.setLineDash([]);
  for (const [i, p] of scr.entries()) {
    const r = i === 0 ? 5 : 3.5; // the first point is bigger: clicking it closes the polygon
    ctx.fillStyle = i === 0 ? "#ffffff" : colorCss(S.cls, 1);
    ctx.strokeStyle = i === 0 ? "#000000" : "#ffffff";
    ctx.lineWidth = 1.5;
    ctx.fillRect(p.x - r, p.y - r, 2 * r, 2 * r);
    ctx.strokeRect(p.x - r, p.y - r, 2 * r, 2 * r);
  }
}

/** Where a brush stamp at image point (x, y) is centred: the cursor shows exactly what a click paints. */
export function stampCentre(x, y) {
  // odd sizes centre on the pixel under the pointer, even sizes on the nearest pixel corner
  if (S.brush % 2) return { x: Math.floor(x) + 0.5, y: Math.floor(y) + 0.5 };
  return { x: Math.round(x), y: Math.round(y) };
}

function drawBrushCursor() {
  if (!S.hover || (S.tool !== "brush" && S.tool !== "eraser") || S.spaceDown || S.pan) return;
  const c = stampCentre(S.hover.x, S.hover.y);
  const r = Math.max((S.brush / 2) * S.scale, 1.5);
  ctx.beginPath();
  ctx.arc(S.tx + c.x * S.scale, S.ty + c.y * S.scale, r, 0, 2 * Math.PI);
  ctx.strokeStyle = "#000000";
  ctx.lineWidth = 3;
  ctx.stroke();
  ctx.strokeStyle = S.tool === "eraser" ? "#ffffff" : colorCss(S.cls, 1);
  ctx.lineWidth = 1.5;
  ctx.stroke();
}

/** Redraw the mask layer inside `box` ({x0, y0, x1, y1}, inclusive), or all of it. */
export function refreshMask(box) {
  const W = S.width, H = S.height;
  const b = box || { x0: 0, y0: 0, x1: W - 1, y1: H - 1 };
  if (b.x1 < b.x0 || b.y1 < b.y0) return;
  const d = maskData.data, m = S.mask;
  for (let y = b.y0; y <= b.y1; y++) {
    for (let x = b.x0; x <= b.x1; x++) {
      const k = y * W + x, v = m[k] * 4, o = k * 4;
      d[o] = palRGBA[v];
      d[o + 1] = palRGBA[v + 1];
      d[o + 2] = palRGBA[v + 2];
      d[o + 3] = palRGBA[v + 3];
    }
  }
  maskCtx.putImageData(maskData, 0, 0, b.x0, b.y0, b.x1 - b.x0 + 1, b.y1 - b.y0 + 1);
}
