// Input: pointer and wheel on the canvas, keyboard shortcuts, and the buttons and sliders of the page.

import { $ } from "./dom.js";
import {
  selectClass, selectTool, setBrush, setOpacity, toggleHelp, toggleMask, updateButtons,
} from "./controls.js";
import { redo, undo } from "./history.js";
import { openImage } from "./loader.js";
import { requestRender, view } from "./render.js";
import { flushOnExit, saveRefused } from "./saves.js";
import { S, className } from "./state.js";
import {
  cancelPolygon, closePolygon, endStroke, floodFill, polygonClick, popPolygonPoint, startStroke, strokeTo, suggest,
} from "./tools.js";
import { clientToImage, fit, zoomAt } from "./viewport.js";

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
    startStroke(p);
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
  if (S.stroke) endStroke(clientToImage(e.clientX, e.clientY));
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
    case "?": toggleHelp(); break;
    case "Enter": if (S.polygon.length) closePolygon(); else return; break;
    case "Escape": if (S.polygon.length) cancelPolygon(); else $("help").hidden = true; break;
    case "Backspace": if (S.polygon.length) popPolygonPoint(); else return; break;
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

/** Attach every listener of the page (once, at start-up). */
export function wire() {
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
    if (!flushOnExit() || saveRefused()) { // ask before losing work that could not be handed over
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
  $("help-toggle").addEventListener("click", toggleHelp);
  $("help-close").addEventListener("click", () => { $("help").hidden = true; });
  // buttons keep no focus, so Space and Enter keep meaning pan and close-polygon after a click
  for (const b of document.querySelectorAll("button")) b.addEventListener("mouseup", () => b.blur());
}
