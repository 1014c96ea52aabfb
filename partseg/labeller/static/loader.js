// Reading from the server: the kit listing, and an image with its stored mask when it is opened.

import { enc, showMessage } from "./dom.js";
import { updateButtons, updateHeader, updateImageList, updateProgress } from "./controls.js";
import { refreshMask, requestRender, resetMaskLayer } from "./render.js";
import { flushSaves } from "./saves.js";
import { IGNORE, S } from "./state.js";
import { fit } from "./viewport.js";

/** GET /api/kit: labels, images, progress, suggest availability; throws with the server's message. */
export async function fetchKit() {
  const r = await fetch("/api/kit");
  const kit = await r.json();
  if (!r.ok) throw new Error(kit.error || `HTTP ${r.status}`);
  return kit;
}

function loadImageElement(url) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = () => reject(new Error(`cannot load ${url}`));
    im.src = url;
  });
}

async function refreshKit() {
  // statuses can change outside this tab (another tab, an import): re-read them when an image is opened
  try {
    const r = await fetch("/api/kit");
    if (!r.ok) return;
    const kit = await r.json();
    const byName = new Map(kit.images.map((i) => [i.name, i]));
    for (const info of S.images) {
      const now = byName.get(info.name);
      if (now) Object.assign(info, { annotated: now.annotated, error: now.error });
    }
    S.progress = kit.progress;
    updateProgress();
    updateImageList();
  } catch (e) {
    // the server is gone: the save status already says so when it matters
  }
}

/** Show image `idx` of the kit with its stored mask (an empty one when there is none yet). */
export async function openImage(idx) {
  if (idx < 0 || idx >= S.images.length) return;
  const token = ++S.loadToken;
  S.polygon = [];
  S.stroke = null;
  S.editable = false;
  S.ready = false;
  S.index = idx;
  const info = S.images[idx];
  S.name = info.name;
  history.replaceState(null, "", `#${enc(info.name)}`);
  updateHeader();
  await flushSaves(); // the mask read below must include every save of this image already made
  refreshKit();
  try {
    const [img, r] = await Promise.all([
      loadImageElement(`/api/image/${enc(info.name)}`),
      fetch(`/api/mask/${enc(info.name)}?format=raw`),
    ]);
    if (token !== S.loadToken) return;
    const W = img.naturalWidth, H = img.naturalHeight;
    let mask = new Uint8Array(W * H).fill(IGNORE), err = "";
    if (r.ok) {
      const bytes = new Uint8Array(await r.arrayBuffer());
      if (bytes.length === W * H) mask = bytes;
      else err = `the stored mask has ${bytes.length} pixels, the image ${W * H}`;
    } else if (r.status !== 404) {
      err = (await r.json().catch(() => ({}))).error || `HTTP ${r.status}`;
    }
    if (token !== S.loadToken) return;
    S.img = img;
    S.width = W;
    S.height = H;
    S.mask = mask;
    resetMaskLayer(W, H);
    refreshMask();
    if (S.viewFor !== `${W}x${H}`) fit();
    S.editable = !err; // a mask on disk that does not fit is shown as a problem, never painted over
    S.loadError = err;
    showMessage(err ? `${info.name}: ${err} (editing disabled; fix or remove masks/${info.name}.png)` : "");
    S.ready = true;
  } catch (e) {
    if (token !== S.loadToken) return;
    showMessage(String(e.message || e));
  }
  updateButtons();
  updateImageList();
  requestRender();
}
