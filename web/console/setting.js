// The setting info of an acceptance or a key rotation, shown this once: the API never repeats
// the stream key, and the page keeps it nowhere but in this box, emptied when closed (the
// document copied for `slotcast import` is built from it and shown only inside it too).

import { importDocument, publishers, terminalCommands } from "./publish.js";
import { announce, copyable, el, local, localTime } from "./ui.js";

/** Fills `box` with reservation `a`'s setting (with its key); `after` gets focus on close. */
export function showSetting(box, a, heading, after) {
  const s = a.setting;
  box.replaceChildren(
    el("h3", {}, `${heading}: ${a.title ?? a.id}, ${local(a.start)} – ${localTime(a.end)}`),
    el("p", { className: "once" }, "The stream key is shown this once: copy what you need now. slotcast keeps only its hash; a lost key is replaced with “Rotate key”."),
    copyable("Reservation", a.id),
    copyable("Stream key", s.stream_key),
    el("p", {}, `Ingest opens ${local(s.opens_at)} and closes ${localTime(s.closes_at)} (your time zone).`),
    ...publishers(a).map((p) => el("div", { className: "publisher", "data-protocol": p.protocol, "data-carrier": p.carrier },
      el("h4", {}, `${p.protocol} on ${p.carrier}`),
      el("p", { className: "hint" }, p.note),
      ...p.fields.map(([label, value]) => copyable(label, value, `${p.protocol} ${p.carrier} ${label}`)))),
    el("div", { className: "publisher", "data-protocol": "slotcast" },
      el("h4", {}, "slotcast live (the terminal)"),
      el("p", { className: "hint" }, "The terminal publishes with setting info it has stored. Copy it with the button below, run slotcast import, paste and press Ctrl-D (or save it to a file and run slotcast import FILE), then slotcast live. It publishes with the key above: nothing is rotated."),
      importCopy(importDocument(a, location.origin)),
      ...terminalCommands(a).map(([label, c], i) => copyable(label, c, `slotcast command ${i + 1}`))),
    el("button", {
      type: "button", className: "setting-done",
      onclick: () => {
        box.replaceChildren();
        box.hidden = true;
        announce("Setting info closed; the key is no longer shown.");
        if (after) after.focus();
      },
    }, "I have stored it: close"));
  box.hidden = false;
  box.focus();
}

/**
 * "Copy for slotcast import": the document on the clipboard; where the browser will not
 * (a page not served over HTTPS or from localhost), shown and selected for Ctrl+C.
 */
function importCopy(doc) {
  const text = el("pre", { className: "import-document", style: { whiteSpace: "pre-wrap", overflowWrap: "anywhere" } }, doc);
  const shown = el("details", {}, el("summary", {}, "Show what is copied (JSON, the key inside)"), text);
  const button = el("button", {
    type: "button", className: "import-copy",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(doc);
        announce("Setting info for slotcast import copied.");
      } catch {
        shown.open = true;
        getSelection().selectAllChildren(text);
        announce("Setting info for slotcast import selected: press Ctrl+C to copy.");
      }
    },
  }, "Copy for slotcast import");
  return el("div", { className: "import" }, button, shown);
}

/** Empties every setting box (signing out). */
export function forgetSettings() {
  for (const box of document.querySelectorAll(".setting")) {
    box.replaceChildren();
    box.hidden = true;
  }
}
