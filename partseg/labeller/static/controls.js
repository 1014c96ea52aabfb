// The side panels and the header: tool, class, brush and opacity controls, button states, the image list.
//
// Each setter changes S and the controls that show it together, so the page never disagrees with S.

import { $ } from "./dom.js";
import { requestRender } from "./render.js";
import { S, hist } from "./state.js";

export function selectClass(c) {
  if (c < 0 || c >= S.labels.length) return;
  S.cls = c;
  if (S.tool === "eraser") selectTool("brush");
  for (const li of $("palette").children) li.classList.toggle("active", Number(li.dataset.class) === c);
  requestRender();
}

export function selectTool(t) {
  if (t !== "polygon" && S.polygon.length) S.polygon = [];
  S.tool = t;
  for (const b of document.querySelectorAll(".tool")) b.classList.toggle("active", b.dataset.tool === t);
  requestRender();
}

export function setBrush(n) {
  S.brush = Math.min(64, Math.max(1, Math.round(n)));
  $("brush-size").value = String(S.brush);
  $("brush-size-value").textContent = String(S.brush);
  requestRender();
}

export function setOpacity(pct) {
  S.opacity = Math.min(100, Math.max(0, pct)) / 100;
  $("opacity").value = String(Math.round(S.opacity * 100));
  $("opacity-value").textContent = String(Math.round(S.opacity * 100));
  requestRender();
}

export function toggleMask() {
  S.showMask = !S.showMask;
  $("toggle-mask").textContent = S.showMask ? "Hide mask" : "Show mask";
  $("toggle-mask").classList.toggle("active", !S.showMask);
  requestRender();
}

export function toggleHelp() {
  $("help").hidden = !$("help").hidden;
}

/** Enable what can be done now: undo/redo, prev/next, suggest (with the reason when it cannot). */
export function updateButtons() {
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

export function updateHeader() {
  $("image-name").textContent = S.name ? `${S.name}  (${S.index + 1}/${S.images.length})` : "";
  document.title = S.name ? `${S.name} · partseg labeller` : "partseg labeller";
  updateButtons();
}

export function updateProgress() {
  $("progress").textContent = `${S.progress.annotated} of ${S.progress.total} annotated`;
}

export function updateImageList() {
  const list = $("image-list");
  for (const [i, li] of [...list.children].entries()) {
    const info = S.images[i];
    li.classList.toggle("current", i === S.index);
    li.classList.toggle("annotated", !!info.annotated);
    li.classList.toggle("error", !!info.error);
    li.title = info.error || (info.annotated ? "annotated" : "not annotated yet");
  }
}

export function buildPalette() {
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

/** The list of the kit's images; clicking one calls `open(index)`. */
export function buildImageList(open) {
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
    li.addEventListener("click", () => open(i));
    ol.append(li);
  }
}
