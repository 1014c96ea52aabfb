// partseg labeller: paint part masks over a kit's images; every change is saved to the kit at once.
//
// The entry module: loads the kit, opens the first image (or the one the URL's #fragment names) and exposes
// a small, stable surface, window.labeller, for the tests and the browser console. The work is done by:
//   state.js     the shared state S (every field documented) and the per-image undo stacks
//   render.js    drawing the image, the mask layer and the overlays; viewport.js the view transform
//   tools.js     brush, eraser, polygon, fill, suggestion; history.js undo/redo of their results
//   loader.js    reading the kit and an image's stored mask; saves.js writing masks back, in order
//   controls.js  the panels and the header; input.js pointer, wheel, keys and buttons

import { showMessage } from "./dom.js";
import {
  buildImageList, buildPalette, selectClass, selectTool, setBrush, setOpacity, updateProgress,
} from "./controls.js";
import { wire } from "./input.js";
import { fetchKit, openImage } from "./loader.js";
import { setPalette, viewPixel } from "./render.js";
import { flushSaves, holdSaves, saveState } from "./saves.js";
import { S, hist } from "./state.js";
import { imageToClient } from "./viewport.js";

async function start() {
  wire();
  selectTool("brush");
  setBrush(3);
  setOpacity(60);
  let kit;
  try {
    kit = await fetchKit();
  } catch (e) {
    showMessage(`cannot load the kit: ${e.message || e}`);
    return;
  }
  S.labels = kit.labels;
  S.images = kit.images;
  S.progress = kit.progress;
  S.suggest = kit.suggest;
  setPalette(S.labels);
  buildPalette();
  buildImageList(openImage);
  selectClass(S.labels.length > 1 ? 1 : 0); // class 0 is usually the background
  updateProgress();
  const want = decodeURIComponent(location.hash.slice(1));
  const idx = Math.max(0, S.images.findIndex((i) => i.name === want));
  if (S.images.length) await openImage(idx);
  else showMessage("this kit has no images");
}

window.labeller = {
  state: () => {
    const q = saveState();
    return {
      ready: S.ready, name: S.name, index: S.index, width: S.width, height: S.height, tool: S.tool, cls: S.cls,
      brush: S.brush, scale: S.scale, tx: S.tx, ty: S.ty, opacity: S.opacity, showMask: S.showMask,
      editable: S.editable, polygon: S.polygon.length, pending: q.pending, progress: S.progress,
      saveError: q.saveError,
      undo: S.name ? hist().undo.length : 0, redo: S.name ? hist().redo.length : 0,
      idle: q.idle,
    };
  },
  imageToClient: (x, y) => imageToClient(x, y),
  maskAt: (x, y) => S.mask[y * S.width + x],
  mask: () => Array.from(S.mask || []),
  viewPixel: (cx, cy) => viewPixel(cx, cy),
  flush: () => flushSaves(),
  open: (name) => openImage(S.images.findIndex((i) => i.name === name)),
  setOpacity: (pct) => setOpacity(pct),
  // tests: keep changes queued (as if the tab closed within the autosave delay) to test the exit path
  holdSaves: (on) => holdSaves(on),
};

start();
