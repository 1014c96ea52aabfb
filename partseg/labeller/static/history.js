// Undo and redo: one step per finished action (stroke, polygon, fill, suggestion), per image, as whole-mask
// copies (masks are small: 64 MiB of history holds hundreds of steps of a 512 px image).

import { updateButtons } from "./controls.js";
import { refreshMask, requestRender } from "./render.js";
import { queueSave } from "./saves.js";
import { S, hist } from "./state.js";

const HISTORY_BYTES = 64 << 20;

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Record the finished action that turned `before` into S.mask, then show and save it. Returns whether it
 * changed anything (nothing is recorded or saved when it did not). */
export function commit(before) {
  if (sameBytes(before, S.mask)) return false;
  const h = hist();
  h.undo.push(before);
  const limit = Math.max(20, Math.floor(HISTORY_BYTES / Math.max(1, S.mask.length)));
  while (h.undo.length > limit) h.undo.shift();
  h.redo.length = 0;
  changed();
  return true;
}

function changed() {
  refreshMask();
  updateButtons();
  requestRender();
  queueSave();
}

export function undo() {
  if (S.polygon.length) { // while drawing a polygon, undo takes back its last point
    S.polygon.pop();
    requestRender();
    return;
  }
  const h = hist();
  if (!S.editable || !h.undo.length) return;
  h.redo.push(S.mask.slice());
  S.mask.set(h.undo.pop());
  changed();
}

export function redo() {
  const h = hist();
  if (!S.editable || !h.redo.length) return;
  h.undo.push(S.mask.slice());
  S.mask.set(h.redo.pop());
  changed();
}
