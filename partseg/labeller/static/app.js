// partseg labeller: paint part masks over a kit's images; every change is saved to the kit at once.
//
// The mask is edited at the image's native resolution as a Uint8Array of class indices (255 = unlabelled),
// and drawn over the image with a nearest-neighbour transform, so what is painted is exactly what is saved.
// Saves are raw H*W bytes PUT to /api/mask/NAME, one request at a time in order (a later state can never be
// overwritten by an earlier one that arrived late); the server validates and writes them atomically.
"use strict";

(() => {
  const IGNORE = 255;
  const SAVE_DELAY_MS = 150; // debounce: one save per action (stroke, polygon, fill, undo), not per pointer move
  const RETRY_MS = 2000;
  const HISTORY_BYTES = 64 << 20;
  const KEEPALIVE_BYTES = 60000; // browsers allow 64 KiB of keepalive bodies in flight
  const SESSION = Math.random().toString(36).slice(2) + Date.now().toString(36); // this tab, for revisions
  const $ = (id) => document.getElementById(id);

  const S = {
    labels: [], images: [], index: -1, name: null, width: 0, height: 0, img: null,
    mask: null, editable: false, ready: false, loadError: "",
    tool: "brush", cls: 0, brush: 3, opacity: 0.6, showMask: true,
    scale: 1, tx: 0, ty: 0, viewFor: null,
    history: new Map(), // image name -> {undo: [Uint8Array], redo: [Uint8Array]}
    polygon: [], lastPolyClick: { t: 0, x: 0, y: 0 },
    stroke: null, pan: null, spaceDown: false, hover: null,
    pending: new Map(), inflight: null, rev: 0, saving: null, saveTimer: null, saveError: "", saveErrorFatal: false,
    holdSaves: false, progress: { annotated: 0, total: 0 }, suggest: { available: false, reason: "" },
    loadToken: 0,
  };
  const palRGBA = new Uint8ClampedArray(256 * 4); // class -> RGBA; 255 (and unused entries) transparent
  const maskCanvas = document.createElement("canvas");
  const maskCtx = maskCanvas.getContext("2d");
  let maskData = null;
  const view = $("view");
  const ctx = view.getContext("2d");
  let frameRequested = false;

  // ------------------------------------------------------------------ small helpers

  const enc = (name) => encodeURIComponent(name);
  function showMessage(text) {
    const m = $("message");
    m.textContent = text || "";
    m.hidden = !text;
  }
  function hist() {
    let h = S.history.get(S.name);
    if (!h) {
      h = { undo: [], redo: [] };
      S.history.set(S.name, h);
    }
    return h;
  }
  function sameBytes(a, b) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  function className(v) {
    if (v === IGNORE) return "unlabelled";
    return S.labels[v] ? S.labels[v].name : `class ${v}`;
  }

  // ------------------------------------------------------------------ view transform

  function clientToImage(cx, cy) {
    const r = view.getBoundingClientRect();
    return { x: (cx - r.left - S.tx) / S.scale, y: (cy - r.top - S.ty) / S.scale };
  }
  function imageToClient(x, y) {
    const r = view.getBoundingClientRect();
    return { x: r.left + S.tx + x * S.scale, y: r.top + S.ty + y * S.scale };
  }
  function fit() {
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
  function zoomAt(cx, cy, factor) {
    const r = view.getBoundingClientRect();
    const px = cx - r.left, py = cy - r.top;
    const fitScale = Math.min(r.width / S.width, r.height / S.height);
    const s = Math.min(Math.max(S.scale * factor, fitScale * 0.25), 256);
    S.tx = px - (px - S.tx) * (s / S.scale);
    S.ty = py - (py - S.ty) * (s / S.scale);
    S.scale = s;
    requestRender();
  }

  // ------------------------------------------------------------------ drawing

  function requestRender() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      render();
    });
  }

  function render() {
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

  function stampCentre(x, y) {
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

  // the mask layer: RGBA of the class colours, unlabelled transparent; refreshed only where it changed
  function refreshMask(box) {
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

  // ------------------------------------------------------------------ editing operations

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

  function strokeTo(p) {
    // stamps every quarter pixel along the segment: pointer events arrive sparsely on a fast drag
    const a = S.stroke.last, box = emptyBox();
    const n = Math.max(1, Math.ceil(Math.hypot(p.x - a.x, p.y - a.y) / 0.25));
    for (let k = 1; k <= n; k++) stamp(a.x + ((p.x - a.x) * k) / n, a.y + ((p.y - a.y) * k) / n, S.stroke.value, box);
    S.stroke.last = p;
    refreshMask(box);
    requestRender();
  }

  function commit(before) {
    // one undo step per finished action; nothing is recorded or saved when the action changed nothing
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

  function undo() {
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

  function redo() {
    const h = hist();
    if (!S.editable || !h.redo.length) return;
    h.undo.push(S.mask.slice());
    S.mask.set(h.redo.pop());
    changed();
  }

  function floodFill(p) {
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

  function closePolygon() {
    const pts = S.polygon;
    S.polygon = [];
    if (pts.length >= 3 && S.editable) {
      const before = S.mask.slice();
      fillPolygon(pts, S.cls);
      commit(before);
    }
    requestRender();
  }

  function polygonClick(p, e) {
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

  async function suggest() {
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

  // ------------------------------------------------------------------ saving

  function setSaveState() {
    const el = $("save-status");
    let state = "saved", text = "saved";
    if (S.saveError) {
      state = "error";
      text = `save failed: ${S.saveError}`;
    } else if (S.saving) {
      state = "saving";
      text = "saving…";
    } else if (S.pending.size) {
      state = "pending";
      text = "unsaved changes";
    }
    el.dataset.state = state;
    el.textContent = text;
    el.title = text;
  }

  function queueSave() {
    // the newest state of each image, numbered: older unsent states are dropped, and the server refuses a
    // state older than one it already wrote for this tab, whatever order the requests arrive in
    S.pending.set(S.name, { data: S.mask.slice(), rev: ++S.rev });
    S.saveErrorFatal = false;
    clearTimeout(S.saveTimer);
    S.saveTimer = S.holdSaves ? null : setTimeout(flushSaves, SAVE_DELAY_MS);
    setSaveState();
  }

  function putMask(name, item, keepalive) {
    return fetch(`/api/mask/${enc(name)}`, {
      method: "PUT", body: item.data, keepalive,
      headers: { "Content-Type": "application/octet-stream", "X-Labeller-Session": SESSION,
                 "X-Mask-Revision": String(item.rev) },
    });
  }

  function flushSaves() {
    clearTimeout(S.saveTimer);
    S.saveTimer = null;
    if (S.saving) return S.saving; // the running loop sends whatever was queued meanwhile
    if (!S.pending.size) return Promise.resolve();
    S.saving = (async () => {
      while (S.pending.size) {
        const [name, item] = S.pending.entries().next().value;
        S.pending.delete(name);
        S.inflight = { name, item };
        try {
          const r = await putMask(name, item, false);
          const j = await r.json().catch(() => ({}));
          if (!r.ok && !j.stale) { // stale: a newer state of this image is already on disk
            const err = new Error(j.error || `HTTP ${r.status}`);
            err.fatal = r.status >= 400 && r.status < 500; // the server refused this mask: retrying cannot help
            throw err;
          }
          S.saveError = "";
          if (r.ok) applyStatus(name, j);
        } catch (err) {
          if (!S.pending.has(name)) S.pending.set(name, item);
          S.saveError = String(err.message || err);
          S.saveErrorFatal = !!err.fatal;
          break;
        } finally {
          S.inflight = null;
        }
      }
    })().finally(() => {
      S.saving = null;
      if (S.saveError && !S.saveErrorFatal && !S.saveTimer) S.saveTimer = setTimeout(flushSaves, RETRY_MS);
      setSaveState();
    });
    setSaveState();
    return S.saving;
  }

  function unsaved() {
    const items = new Map(S.pending);
    if (S.inflight && !items.has(S.inflight.name)) items.set(S.inflight.name, S.inflight.item);
    return items;
  }

  function flushOnExit() {
    // the tab is closing: hand what is not saved yet to keepalive requests, which outlive the page (the
    // browser caps their bodies at 64 KiB in all; returns false when that is not enough)
    const items = unsaved();
    let bytes = 0;
    for (const item of items.values()) bytes += item.data.length;
    if (!items.size) return true;
    if (bytes > KEEPALIVE_BYTES) {
      flushSaves();
      return false;
    }
    for (const [name, item] of items) putMask(name, item, true).catch(() => {});
    S.pending.clear();
    return true;
  }

  function applyStatus(name, j) {
    const img = S.images.find((i) => i.name === name);
    if (img && typeof j.annotated === "boolean") img.annotated = j.annotated;
    if (j.progress) S.progress = j.progress;
    updateProgress();
    updateImageList();
  }

  // ------------------------------------------------------------------ images

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

  async function openImage(idx) {
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
      maskCanvas.width = W;
      maskCanvas.height = H;
      maskData = maskCtx.createImageData(W, H);
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

  // ------------------------------------------------------------------ UI state

  function selectClass(c) {
    if (c < 0 || c >= S.labels.length) return;
    S.cls = c;
    if (S.tool === "eraser") selectTool("brush");
    for (const li of $("palette").children) li.classList.toggle("active", Number(li.dataset.class) === c);
    requestRender();
  }

  function selectTool(t) {
    if (t !== "polygon" && S.polygon.length) S.polygon = [];
    S.tool = t;
    for (const b of document.querySelectorAll(".tool")) b.classList.toggle("active", b.dataset.tool === t);
    requestRender();
  }

  function setBrush(n) {
    S.brush = Math.min(64, Math.max(1, Math.round(n)));
    $("brush-size").value = String(S.brush);
    $("brush-size-value").textContent = String(S.brush);
    requestRender();
  }

  function setOpacity(pct) {
    S.opacity = Math.min(100, Math.max(0, pct)) / 100;
    $("opacity").value = String(Math.round(S.opacity * 100));
    $("opacity-value").textContent = String(Math.round(S.opacity * 100));
    requestRender();
  }

  function toggleMask() {
    S.showMask = !S.showMask;
    $("toggle-mask").textContent = S.showMask ? "Hide mask" : "Show mask";
    $("toggle-mask").classList.toggle("active", !S.showMask);
    requestRender();
  }

  function updateButtons() {
    const h = S.name ? hist() : { undo: [], redo: [] };
    $("undo").disabled = !S.editable || (!h.undo.length && !S.polygon.length);
    $("redo").disabled = !S.editable || !h.redo.length;
    $("prev").disabled = S.index <= 0;
    $("next").disabled = S.index >= S.images.length - 1;
    const info = S.images[S.index];
    const can = S.suggest.available && info && info.suggest && S.editable;
    $("suggest").disabled = !can;
    $("suggest").title = can ? "Fill the unlabelled pixels with the head's prediction (undo reverts it)"
      : `Suggest is off: ${S.suggest.reason || "this image has no recorded latent"}`;
  }

  function updateHeader() {
    $("image-name").textContent = S.name ? `${S.name}  (${S.index + 1}/${S.images.length})` : "";
    document.title = S.name ? `${S.name} · partseg labeller` : "partseg labeller";
    updateButtons();
  }

  function updateProgress() {
    $("progress").textContent = `${S.progress.annotated} of ${S.progress.total} annotated`;
  }

  function updateImageList() {
    const list = $("image-list");
    for (const [i, li] of [...list.children].entries()) {
      const info = S.images[i];
      li.classList.toggle("current", i === S.index);
      li.classList.toggle("annotated", !!info.annotated);
      li.classList.toggle("error", !!info.error);
      li.title = info.error || (info.annotated ? "annotated" : "not annotated yet");
    }
  }

  function buildPalette() {
    const ol = $("palette");
    ol.textContent = "";
    for (const [i, c] of S.labels.entries()) {
      const li = document.createElement("li");
      li.dataset.class = String(i);
      li.dataset.testid = `class-${i}`;
      li.title = c.description ? `${c.name}: ${c.description}` : c.name;
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = i < 10 ? String(i) : "";
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = `rgb(${c.color[0]}, ${c.color[1]}, ${c.color[2]})`;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = c.name;
      li.append(key, sw, name);
      li.addEventListener("click", () => selectClass(i));
      ol.append(li);
    }
  }

  function buildImageList() {
    const ol = $("image-list");
    ol.textContent = "";
    for (const [i, info] of S.images.entries()) {
      const li = document.createElement("li");
      li.dataset.testid = `image-${info.name}`;
      const dot = document.createElement("span");
      dot.className = "dot";
      const name = document.createElement("span");
      name.textContent = info.name;
      li.append(dot, name);
      li.addEventListener("click", () => openImage(i));
      ol.append(li);
    }
  }

  // ------------------------------------------------------------------ input

  function onPointerDown(e) {
    view.focus();
    if (e.button === 1 || (e.button === 0 && S.spaceDown)) {
      S.pan = { x: e.clientX, y: e.clientY, tx: S.tx, ty: S.ty };
      view.classList.add("dragging");
      view.setPointerCapture(e.pointerId);
      e.preventDefault();
      return;
    }
    if (e.button !== 0 || !S.editable) return;
    const p = clientToImage(e.clientX, e.clientY);
    if (S.tool === "brush" || S.tool === "eraser") {
      S.stroke = { before: S.mask.slice(), last: p, value: S.tool === "eraser" ? IGNORE : S.cls };
      const box = emptyBox();
      stamp(p.x, p.y, S.stroke.value, box);
      refreshMask(box);
      view.setPointerCapture(e.pointerId);
      requestRender();
    } else if (S.tool === "polygon") {
      polygonClick(p, e);
      updateButtons();
    } else if (S.tool === "fill") {
      floodFill(p);
    }
    e.preventDefault();
  }

  function onPointerMove(e) {
    const p = clientToImage(e.clientX, e.clientY);
    S.hover = p;
    if (S.pan) {
      S.tx = S.pan.tx + e.clientX - S.pan.x;
      S.ty = S.pan.ty + e.clientY - S.pan.y;
    } else if (S.stroke) {
      const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
      for (const ce of events.length ? events : [e]) strokeTo(clientToImage(ce.clientX, ce.clientY));
    }
    const x = Math.floor(p.x), y = Math.floor(p.y);
    const inside = S.mask && x >= 0 && y >= 0 && x < S.width && y < S.height;
    $("cursor-info").textContent = inside
      ? `x ${x}, y ${y} · ${className(S.mask[y * S.width + x])} · zoom ${S.scale.toFixed(S.scale < 1 ? 2 : 0)}×`
      : "";
    requestRender();
  }

  function onPointerUp(e) {
    if (S.pan) {
      S.pan = null;
      view.classList.remove("dragging");
    }
    if (S.stroke) {
      strokeTo(clientToImage(e.clientX, e.clientY));
      const before = S.stroke.before;
      S.stroke = null;
      commit(before);
    }
  }

  function onKeyDown(e) {
    const inInput = e.target instanceof HTMLInputElement;
    const ctrl = e.ctrlKey || e.metaKey;
    const k = e.key;
    if (ctrl && (k === "z" || k === "Z")) {
      e.preventDefault();
      if (e.shiftKey) redo(); else undo();
      return;
    }
    if (ctrl && (k === "y" || k === "Y")) {
      e.preventDefault();
      redo();
      return;
    }
    if (ctrl || e.altKey) return;
    if (inInput && k.startsWith("Arrow")) return;
    if (/^[0-9]$/.test(k)) {
      selectClass(Number(k));
      e.preventDefault();
      return;
    }
    switch (k) {
      case " ":
        if (!S.spaceDown) {
          S.spaceDown = true;
          view.classList.add("panning");
          requestRender();
        }
        break;
      case "b": case "B": selectTool("brush"); break;
      case "e": case "E": selectTool("eraser"); break;
      case "p": case "P": selectTool("polygon"); break;
      case "g": case "G": selectTool("fill"); break;
      case "m": case "M": toggleMask(); break;
      case "f": case "F": fit(); break;
      case "[": setBrush(S.brush - 1); break;
      case "]": setBrush(S.brush + 1); break;
      case "?": $("help").hidden = !$("help").hidden; break;
      case "Enter": if (S.polygon.length) closePolygon(); else return; break;
      case "Escape":
        if (S.polygon.length) { S.polygon = []; requestRender(); } else $("help").hidden = true;
        break;
      case "Backspace": if (S.polygon.length) { S.polygon.pop(); requestRender(); } else return; break;
      case "ArrowLeft": case "PageUp": openImage(S.index - 1); break;
      case "ArrowRight": case "PageDown": openImage(S.index + 1); break;
      default: return;
    }
    e.preventDefault();
    updateButtons();
  }

  function onKeyUp(e) {
    if (e.key === " ") {
      S.spaceDown = false;
      view.classList.remove("panning");
      e.preventDefault(); // a focused button must not be "clicked" by the space used for panning
      requestRender();
    }
  }

  function wire() {
    view.tabIndex = 0;
    view.addEventListener("pointerdown", onPointerDown);
    view.addEventListener("pointermove", onPointerMove);
    view.addEventListener("pointerup", onPointerUp);
    view.addEventListener("pointercancel", onPointerUp);
    view.addEventListener("pointerleave", () => {
      S.hover = null;
      $("cursor-info").textContent = "";
      requestRender();
    });
    view.addEventListener("mousedown", (e) => { if (e.button === 1) e.preventDefault(); }); // no autoscroll
    view.addEventListener("dblclick", (e) => {
      if (S.tool === "polygon" && S.polygon.length >= 3) closePolygon();
      e.preventDefault();
    });
    view.addEventListener("contextmenu", (e) => e.preventDefault());
    view.addEventListener("wheel", (e) => {
      e.preventDefault();
      const dy = e.deltaMode === 1 ? e.deltaY * 33 : e.deltaY;
      zoomAt(e.clientX, e.clientY, Math.exp(-dy * 0.0015));
    }, { passive: false });
    document.addEventListener("keydown", onKeyDown);
    document.addEventListener("keyup", onKeyUp);
    window.addEventListener("resize", requestRender);
    window.addEventListener("pagehide", flushOnExit);
    window.addEventListener("beforeunload", (e) => {
      if (!flushOnExit() || S.saveErrorFatal) { // ask before losing work that could not be handed over
        e.preventDefault();
        e.returnValue = "";
      }
    });
    for (const b of document.querySelectorAll(".tool")) b.addEventListener("click", () => selectTool(b.dataset.tool));
    $("brush-size").addEventListener("input", (e) => setBrush(Number(e.target.value)));
    $("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value)));
    $("toggle-mask").addEventListener("click", toggleMask);
    $("fit").addEventListener("click", fit);
    $("undo").addEventListener("click", undo);
    $("redo").addEventListener("click", redo);
    $("prev").addEventListener("click", () => openImage(S.index - 1));
    $("next").addEventListener("click", () => openImage(S.index + 1));
    $("suggest").addEventListener("click", suggest);
    $("help-toggle").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
    $("help-close").addEventListener("click", () => { $("help").hidden = true; });
    // buttons keep no focus, so Space and Enter keep meaning pan and close-polygon after a click
    for (const b of document.querySelectorAll("button")) b.addEventListener("mouseup", () => b.blur());
  }

  // ------------------------------------------------------------------ start

  async function start() {
    wire();
    selectTool("brush");
    setBrush(3);
    setOpacity(60);
    let kit;
    try {
      const r = await fetch("/api/kit");
      kit = await r.json();
      if (!r.ok) throw new Error(kit.error || `HTTP ${r.status}`);
    } catch (e) {
      showMessage(`cannot load the kit: ${e.message || e}`);
      return;
    }
    S.labels = kit.labels;
    S.images = kit.images;
    S.progress = kit.progress;
    S.suggest = kit.suggest;
    palRGBA.fill(0);
    for (const [i, c] of S.labels.entries()) palRGBA.set([c.color[0], c.color[1], c.color[2], 255], i * 4);
    buildPalette();
    buildImageList();
    selectClass(S.labels.length > 1 ? 1 : 0); // class 0 is usually the background
    updateProgress();
    const want = decodeURIComponent(location.hash.slice(1));
    const idx = Math.max(0, S.images.findIndex((i) => i.name === want));
    if (S.images.length) await openImage(idx);
    else showMessage("this kit has no images");
  }

  // a small, stable surface for tests and for the curious (browser console)
  window.labeller = {
    state: () => ({
      ready: S.ready, name: S.name, index: S.index, width: S.width, height: S.height, tool: S.tool, cls: S.cls,
      brush: S.brush, scale: S.scale, tx: S.tx, ty: S.ty, opacity: S.opacity, showMask: S.showMask,
      editable: S.editable, polygon: S.polygon.length, pending: S.pending.size, progress: S.progress,
      saveError: S.saveError,
      undo: S.name ? hist().undo.length : 0, redo: S.name ? hist().redo.length : 0,
      idle: !S.saving && !S.pending.size && !S.saveTimer && !S.inflight,
    }),
    imageToClient: (x, y) => imageToClient(x, y),
    maskAt: (x, y) => S.mask[y * S.width + x],
    mask: () => Array.from(S.mask || []),
    viewPixel: (cx, cy) => {
      const r = view.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
      render();
      return Array.from(ctx.getImageData(Math.floor((cx - r.left) * dpr), Math.floor((cy - r.top) * dpr), 1, 1).data);
    },
    flush: () => flushSaves(),
    open: (name) => openImage(S.images.findIndex((i) => i.name === name)),
    setOpacity: (pct) => setOpacity(pct),
    // tests: keep changes queued (as if the tab closed within the autosave delay) to test the exit path
    holdSaves: (on) => { S.holdSaves = !!on; },
  };

  start();
})();
