// The state the labeller's modules share: one plain object, S, with every field documented here.
//
// Only what several modules read lives here; a module keeps to itself what it alone uses (render.js its
// canvases, saves.js its save queue). S has no setters and sends no events: whoever changes a field that is
// on screen also asks for a redraw (render.requestRender) or updates the control that shows it (controls.js).

export const IGNORE = 255; // the mask value of unlabelled pixels (ignored in training)

export const S = {
  // ---- the kit, as GET /api/kit lists it
  labels: [], // [{index, name, color: [r, g, b], description}]; a class index is its position
  images: [], // [{name, width, height, annotated, suggest, error}] in the server's order
  progress: { annotated: 0, total: 0 }, // images with at least one labelled pixel, of all
  suggest: { available: false, reason: "" }, // whether the server has a head to suggest with, else why not

  // ---- the open image
  index: -1, // its position in S.images (-1: none yet)
  name: null, // its name (file stem); also the URL's #fragment
  width: 0, // native size: the mask is edited at this resolution
  height: 0,
  img: null, // the loaded <img> element
  mask: null, // Uint8Array(width * height) of class indices (IGNORE: unlabelled), exactly what is saved
  editable: false, // false while loading and when the stored mask does not fit the image
  ready: false, // the image and its mask are loaded and shown
  loadError: "", // why the stored mask could not be used ("" when it could)
  loadToken: 0, // counts image loads: a load that finishes after a newer one started is dropped

  // ---- tools
  tool: "brush", // "brush" | "eraser" | "polygon" | "fill"
  cls: 0, // the class painted with
  brush: 3, // brush and eraser diameter in image pixels (1-64)
  polygon: [], // image points of the polygon being drawn; empty when none is
  lastPolyClick: { t: 0, x: 0, y: 0 }, // time and client position of the last polygon click (double-clicks)
  stroke: null, // the brush or eraser stroke being drawn: {before: mask copy, last: image point, value}
  pan: null, // the pan drag in progress: {x, y (client start), tx, ty (transform at start)}
  spaceDown: false, // space is held: a left drag pans
  hover: null, // the image point under the pointer, or null

  // ---- view
  opacity: 0.6, // of the mask over the image, 0-1
  showMask: true,
  scale: 1, // screen (CSS) pixels per image pixel
  tx: 0, // where the image's top-left corner lies on the canvas, in CSS pixels
  ty: 0,
  viewFor: null, // "WxH" the view was fitted to: images of the same size keep the zoom and pan

  // ---- undo/redo, per image, for this tab
  history: new Map(), // image name -> {undo: [Uint8Array], redo: [Uint8Array]}
};

/** The undo/redo stacks of the open image (created on first use). */
export function hist() {
  let h = S.history.get(S.name);
  if (!h) {
    h = { undo: [], redo: [] };
    S.history.set(S.name, h);
  }
  return h;
}

/** A class value's name for the cursor read-out. */
export function className(v) {
  if (v === IGNORE) return "unlabelled";
  return S.labels[v] ? S.labels[v].name : `class ${v}`;
}
