// A reservation's page: its state, window, ingest window, carriers and last ingest report,
// its audit trail newest first (a page at a time), and rotate key, reschedule and cancel,
// each asked again before it is sent. What the API refuses is shown as it says it.

import { ApiError, call } from "./api.js";
import { showSetting } from "./setting.js";
import { $, announce, confirmFirst, el, local, localTime, showError } from "./ui.js";

const PAGE = 20;
const NEWEST = String(Number.MAX_SAFE_INTEGER);
const TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

/** The local `YYYY-MM-DDTHH:MM` a datetime-local input shows for `iso`. */
function inputTime(iso) {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** One event in words: its type, when, by whom, and its data in short. */
function eventItem(e) {
  const data = e.data && typeof e.data === "object" ? e.data : {};
  const facts = Object.entries(data)
    .filter(([k, v]) => v != null && typeof v !== "object" && !/hash|ha1|sealed|digest/i.test(k))
    .map(([k, v]) => `${k}: ${typeof v === "string" && TIME.test(v) ? local(v) : v}`);
  return el("li", { "data-sequence": String(e.sequence), "data-type": e.type },
    el("strong", {}, e.type), " ",
    el("span", { className: "muted" }, `#${e.sequence} · ${e.recorded_at ? local(e.recorded_at) : "time not recorded"}${e.actor ? ` · ${e.actor}` : ""}`),
    facts.length ? el("div", { className: "facts" }, facts.join(" · ")) : null);
}

/**
 * Opens reservation `id` in `section`; `changed` is told after a change (to redraw the
 * timeline and lists).
 */
export async function openReservation(section, id, changed) {
  section.hidden = false;
  const view = $("#reservation-view", section);
  showError(section, null);
  let r;
  try {
    ({ body: r } = await call("GET", `/v1/reservations/${encodeURIComponent(id)}`));
  } catch (err) {
    view.replaceChildren();
    showError(section, err);
    return;
  }
  const active = ["accepted", "live"].includes(r.status);
  const s = r.setting;
  const actions = el("div", { className: "row actions" });
  const settingBox = el("div", { className: "setting", hidden: true, tabIndex: -1 });
  const refusal = el("div", { className: "refusal", role: "alert", hidden: true });
  const history = el("ol", { className: "history", reversed: true });
  const older = el("button", { type: "button", className: "secondary", hidden: true }, "Older events");

  const reload = async () => {
    await openReservation(section, id, changed);
    changed(r.server_id, r.start);
  };
  const failed = (err) => showError(section, err);

  let move = null;
  if (active) {
    const rotate = el("button", { type: "button", className: "rotate" }, "Rotate key");
    rotate.onclick = () => confirmFirst(rotate, "Issue a new stream key? The current one stops working at once.", "Yes, rotate", async () => {
      try {
        const { body } = await call("POST", `/v1/reservations/${encodeURIComponent(id)}/rotate-key`);
        showSetting(settingBox, { ...r, setting: body.setting }, "New stream key", rotate);
        announce("A new stream key was issued.");
        await newestHistory();
      } catch (err) { failed(err); }
    });
    const cancel = el("button", { type: "button", className: "cancel" }, "Cancel reservation");
    cancel.onclick = () => confirmFirst(cancel, "Cancel this reservation? This cannot be undone.", "Yes, cancel it", async () => {
      try {
        await call("POST", `/v1/reservations/${encodeURIComponent(id)}/cancel`);
        announce("Reservation cancelled.");
        await reload();
      } catch (err) { failed(err); }
    });
    const minutes = Math.round((Date.parse(r.end) - Date.parse(r.start)) / 60000);
    move = el("form", { className: "row reschedule" },
      el("label", {}, "New start", el("input", { name: "start", type: "datetime-local", step: 60, required: true, value: inputTime(r.start) })),
      el("label", {}, "Duration (minutes)", el("input", { name: "minutes", type: "number", min: 1, required: true, value: String(minutes) })),
      el("button", { type: "submit" }, "Reschedule"));
    move.onsubmit = (e) => {
      e.preventDefault();
      const submit = $("button[type=submit]", move);
      const f = new FormData(move);
      const start = new Date(f.get("start"));
      const end = new Date(start.getTime() + Number(f.get("minutes")) * 60000);
      confirmFirst(submit, `Move it to ${local(start.toISOString())} – ${localTime(end.toISOString())}?`, "Yes, move it", async () => {
        try {
          const { status, body } = await call("POST", `/v1/reservations/${encodeURIComponent(id)}/reschedule`, {
            body: { start: start.toISOString(), end: end.toISOString() }, accept: [409],
          });
          if (status === 409 && body && body.error) throw new ApiError(409, body, "");
          if (status === 409) {
            refusal.replaceChildren(el("p", {}, `Refused, the slot stays where it was. ${body.reason}: ${body.message}`),
              el("p", {}, `Free windows of that length: ${body.suggestions.map((w) => `${local(w.start)} – ${localTime(w.end)}`).join("; ") || "none nearby"}.`));
            refusal.hidden = false;
            return;
          }
          announce("Reservation moved.");
          await reload();
        } catch (err) { failed(err); }
      });
    };
    actions.append(rotate, cancel);
  }
  view.replaceChildren(
    el("h3", {}, r.title ?? r.id, " ", el("span", { className: `badge status-${r.status}`, "data-status": r.status }, r.status)),
    el("dl", { className: "rules" },
      el("dt", {}, "Reservation"), el("dd", {}, el("code", {}, r.id)),
      el("dt", {}, "Server"), el("dd", {}, r.server_id),
      el("dt", {}, "Owner"), el("dd", {}, r.owner),
      el("dt", {}, "Slot"), el("dd", {}, `${local(r.start)} – ${localTime(r.end)}`),
      s ? el("dt", {}, "Ingest window") : null, s ? el("dd", {}, `${local(s.opens_at)} – ${localTime(s.closes_at)}`) : null,
      el("dt", {}, "Ingest"), el("dd", {}, r.ingest ? `${r.ingest.state}${r.ingest.carrier ? ` on ${r.ingest.carrier}` : ""}, ${local(r.ingest.at)}` : "no report yet"),
      r.reason ? el("dt", {}, "Reason") : null, r.reason ? el("dd", {}, r.reason) : null),
    s ? el("h4", {}, "Carriers") : null,
    s ? el("ul", {}, ...s.carriers.map((c) => el("li", {}, el("strong", {}, c.carrier), " ",
      ...Object.entries(c.urls && c.urls.rtsp ? c.urls : { rtsp: c.url }).map(([p, u]) => el("span", {}, `${p.toUpperCase()} `, el("code", {}, u), " "))))) : null,
    active ? actions : null, move, refusal, settingBox,
    el("h4", {}, "Audit trail (newest first)"), history, older);

  let before = NEWEST;
  const more = async () => {
    try {
      const { body } = await call("GET", `/v1/reservations/${encodeURIComponent(id)}/history?before=${before}&limit=${PAGE}`);
      history.append(...body.events.map(eventItem));
      before = body.next ? String(body.next.before) : null;
      older.hidden = before === null;
    } catch (err) { failed(err); }
  };
  const newestHistory = async () => {
    history.replaceChildren();
    before = NEWEST;
    await more();
  };
  older.onclick = more;
  await more();
}
