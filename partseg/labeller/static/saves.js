// Saving: every change goes to the kit at once, in order, and nothing is lost when the tab closes.
//
// Saves are raw H*W bytes PUT to /api/mask/NAME, one request at a time in order (a later state can never be
// overwritten by an earlier one that arrived late); the server validates and writes them atomically. Each
// save carries this tab's session id and a revision number, so the server also refuses a state older than
// one it already wrote, whatever order the requests arrive in.

import { $, enc } from "./dom.js";
import { updateImageList, updateProgress } from "./controls.js";
import { S } from "./state.js";

const SAVE_DELAY_MS = 150; // debounce: one save per action (stroke, polygon, fill, undo), not per pointer move
const RETRY_MS = 2000;
const KEEPALIVE_BYTES = 60000; // browsers allow 64 KiB of keepalive bodies in flight
const SESSION = Math.random().toString(36).slice(2) + Date.now().toString(36); // this tab, for revisions

// the save queue, only touched here
const Q = {
  pending: new Map(), // image name -> {data: Uint8Array, rev}: the newest unsent state of each image
  inflight: null, // {name, item} being sent now
  rev: 0, // the last revision number given out
  saving: null, // the promise of the running send loop, or null
  saveTimer: null, // the debounce (or retry) timer, or null
  saveError: "", // why the last send failed ("" when it did not)
  saveErrorFatal: false, // the server refused the mask itself (4xx): retrying cannot help
  holdSaves: false, // tests: keep changes queued, as if the tab closed within the debounce delay
};

/** The queue as the test surface shows it. */
export function saveState() {
  return {
    pending: Q.pending.size, saveError: Q.saveError,
    idle: !Q.saving && !Q.pending.size && !Q.saveTimer && !Q.inflight,
  };
}

export function holdSaves(on) {
  Q.holdSaves = !!on;
}

/** Whether the last save was refused for good (the page then asks before it is closed). */
export function saveRefused() {
  return Q.saveErrorFatal;
}

function setSaveState() {
  const el = $("save-status");
  let state = "saved", text = "saved";
  if (Q.saveError) {
    state = "error";
    text = `save failed: ${Q.saveError}`;
  } else if (Q.saving) {
    state = "saving";
    text = "saving…";
  } else if (Q.pending.size) {
    state = "pending";
    text = "unsaved changes";
  }
  el.dataset.state = state;
  el.textContent = text;
  el.title = text;
}

/** Queue the open image's mask as it is now; it is sent after a short delay. */
export function queueSave() {
  // the newest state of each image, numbered: older unsent states are dropped, and the server refuses a
  // state older than one it already wrote for this tab, whatever order the requests arrive in
  Q.pending.set(S.name, { data: S.mask.slice(), rev: ++Q.rev });
  Q.saveErrorFatal = false;
  clearTimeout(Q.saveTimer);
  Q.saveTimer = Q.holdSaves ? null : setTimeout(flushSaves, SAVE_DELAY_MS);
  setSaveState();
}

function putMask(name, item, keepalive) {
  return fetch(`/api/mask/${enc(name)}`, {
    method: "PUT", body: item.data, keepalive,
    headers: { "Content-Type": "application/octet-stream", "X-Labeller-Session": SESSION,
               "X-Mask-Revision": String(item.rev) },
  });
}

/** Send everything queued now; resolves when the queue is empty or a send failed. */
export function flushSaves() {
  clearTimeout(Q.saveTimer);
  Q.saveTimer = null;
  if (Q.saving) return Q.saving; // the running loop sends whatever was queued meanwhile
  if (!Q.pending.size) return Promise.resolve();
  Q.saving = (async () => {
    while (Q.pending.size) {
      const [name, item] = Q.pending.entries().next().value;
      Q.pending.delete(name);
      Q.inflight = { name, item };
      try {
        const r = await putMask(name, item, false);
        const j = await r.json().catch(() => ({}));
        if (!r.ok && !j.stale) { // stale: a newer state of this image is already on disk
          const err = new Error(j.error || `HTTP ${r.status}`);
          err.fatal = r.status >= 400 && r.status < 500; // the server refused this mask: retrying cannot help
          throw err;
        }
        Q.saveError = "";
        if (r.ok) applyStatus(name, j);
      } catch (err) {
        if (!Q.pending.has(name)) Q.pending.set(name, item);
        Q.saveError = String(err.message || err);
        Q.saveErrorFatal = !!err.fatal;
        break;
      } finally {
        Q.inflight = null;
      }
    }
  })().finally(() => {
    Q.saving = null;
    if (Q.saveError && !Q.saveErrorFatal && !Q.saveTimer) Q.saveTimer = setTimeout(flushSaves, RETRY_MS);
    setSaveState();
  });
  setSaveState();
  return Q.saving;
}

function unsaved() {
  const items = new Map(Q.pending);
  if (Q.inflight && !items.has(Q.inflight.name)) items.set(Q.inflight.name, Q.inflight.item);
  return items;
}

/** The tab is closing: hand what is not saved yet to keepalive requests, which outlive the page (the browser
 * caps their bodies at 64 KiB in all; returns false when that is not enough). */
export function flushOnExit() {
  const items = unsaved();
  let bytes = 0;
  for (const item of items.values()) bytes += item.data.length;
  if (!items.size) return true;
  if (bytes > KEEPALIVE_BYTES) {
    flushSaves();
    return false;
  }
  for (const [name, item] of items) putMask(name, item, true).catch(() => {});
  Q.pending.clear();
  return true;
}

function applyStatus(name, j) {
  const img = S.images.find((i) => i.name === name);
  if (img && typeof j.annotated === "boolean") img.annotated = j.annotated;
  if (j.progress) S.progress = j.progress;
  updateProgress();
  updateImageList();
}
