// The console's small DOM helpers, shared by its parts: building elements (never from HTML
// text, so a title cannot inject markup), error lines, announcements, Copy buttons, times in
// the user's zone.

import { ApiError } from "./api.js";

export const $ = (sel, root = document) => root.querySelector(sel);

/** `tag` with properties (`data-*` and `aria-*` as attributes, `style` merged) and children. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") Object.assign(e.style, v);
    else if (k.startsWith("data-") || k.startsWith("aria-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children.filter((c) => c != null));
  return e;
}

/** Shows `err` in the error line (`[data-error]`) inside `where`; `null` clears it. */
export function showError(where, err) {
  const line = $("[data-error]", where);
  if (!line) return;
  line.textContent = err == null ? "" : err instanceof ApiError ? err.describe() : String(err.message ?? err);
}

/** Says `text` to screen readers (the page's polite live region). */
export function announce(text) {
  $("#status").textContent = text;
}

export const local = (iso) => new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
export const localTime = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/** A value with its Copy button; `full` names it for screen readers (default: `label`). */
export function copyable(label, value, full = label) {
  const code = el("code", {}, value);
  return el("div", { className: "copyable" },
    el("span", { className: "label" }, `${label}:`), code,
    el("button", {
      type: "button", className: "secondary", "aria-label": `Copy ${full}`,
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(value);
          announce(`${full} copied.`);
        } catch {
          getSelection().selectAllChildren(code);
          announce(`${full} selected: press Ctrl+C to copy.`);
        }
      },
    }, "Copy"));
}

/**
 * Asks before doing: `button` is replaced by "`question` [yes] [no]" until one is pressed;
 * `yes` runs `action`. Keyboard focus moves to the question's "no" (the safe answer).
 */
export function confirmFirst(button, question, yes, action) {
  const box = el("span", { className: "confirm", role: "group", "aria-label": question });
  const back = () => { box.replaceWith(button); button.focus(); };
  const no = el("button", { type: "button", className: "secondary", onclick: back }, "No");
  box.append(el("span", {}, `${question} `),
    el("button", { type: "button", onclick: () => { box.replaceWith(button); action(); } }, yes), " ", no);
  button.replaceWith(box);
  no.focus();
}
