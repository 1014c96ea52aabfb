// Small page helpers every module uses: element lookup, the message box, image names in URLs.

export const $ = (id) => document.getElementById(id);

/** An image name as one URL path segment (names are file stems: any character may occur). */
export const enc = (name) => encodeURIComponent(name);

/** Show a problem over the canvas; an empty text hides the box. */
export function showMessage(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}
