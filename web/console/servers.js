// The servers: their list (rules, carriers, the protocols each takes, where viewers watch),
// and for an operator the forms that register one and change one. Both forms are built from
// one list of fields, so a rule is named and read the same way in each; what is sent is what
// the API takes (docs/api.md, "Servers"), and what it refuses is shown as it says it.

import { call } from "./api.js";
import { $, announce, el, showError } from "./ui.js";

/** Each rule: its field, its name, its unit in the form, how a card shows it, its least value, the API's default. */
const RULES = [
  { key: "capacity", name: "Capacity", unit: "", show: (v) => String(v), min: 1, default: 1 },
  { key: "min_lead_s", name: "Minimum lead", unit: " (s)", show: (v) => `${v} s`, min: 0, default: 30 },
  { key: "max_duration_s", name: "Longest slot", unit: " (s)", show: (v) => `${v} s`, min: 1, default: 43200 },
  { key: "horizon_s", name: "Horizon", unit: " (s)", show: (v) => `${Math.round(v / 86400)} days`, min: 1, default: 7776000 },
  { key: "preroll_s", name: "Pre-roll", unit: " (s)", show: (v) => `${v} s`, min: 0, default: 30 },
  { key: "grace_s", name: "Grace", unit: " (s)", show: (v) => `${v} s`, min: 0, default: 10 },
];
const OPTIONAL_URLS = [["rtmp_url", "RTMP URL (optional)", "rtmp://host:1935"], ["srt_url", "SRT URL (optional)", "srt://host:9000"], ["whip_url", "WHIP URL (optional)", "http://host:8889"]];

export function protocolsOf(c) {
  return ["RTSP", c.rtmp_url && "RTMP", c.srt_url && "SRT", c.whip_url && "WHIP"].filter(Boolean);
}

/** The fields of a server's form: its name, rules and viewer URL, filled from `s` if given. */
function fields(s) {
  const input = (name, attrs) => el("input", { name, autocomplete: "off", ...attrs });
  return el("div", { className: "grid" },
    s ? null : el("label", {}, "Id", input("id", { required: true })),
    el("label", {}, "Name", input("name", { required: true, value: s ? s.name : "" })),
    ...RULES.map((r) => el("label", {}, r.name + r.unit, input(r.key, {
      type: "number", min: String(r.min), placeholder: String(r.default), value: s ? String(s[r.key]) : "",
    }))),
    el("label", {}, "Viewer URL", input("viewer_url", { type: "url", placeholder: "http://host:8888", value: s?.viewer_url ?? "" })));
}

/** One carrier's row (its number `n`), filled from `c` if given. */
function carrierRow(n, c) {
  const field = (name, label, attrs = {}) => el("label", {}, label, el("input", { name, autocomplete: "off", ...attrs }));
  return el("div", { className: "carrier grid" },
    field("c_name", `Carrier ${n} name`, { required: true, value: c?.name ?? "" }),
    field("c_ingest_url", "RTSP ingest URL", { required: true, placeholder: "rtsp://host:8554", value: c?.ingest_url ?? "" }),
    ...OPTIONAL_URLS.map(([k, label, placeholder]) => field(`c_${k}`, label, { placeholder, value: c?.[k] ?? "" })));
}

function addCarrier(fieldset, c) {
  const row = carrierRow(fieldset.querySelectorAll(".carrier").length + 1, c);
  fieldset.append(row);
  return row;
}

/** The form's rules (empty ones left out), viewer URL and carriers, as the API takes them. */
function read(form) {
  const f = new FormData(form);
  const body = { name: f.get("name").trim(), carriers: [] };
  for (const { key } of RULES) if (f.get(key) !== "") body[key] = Number(f.get(key));
  const viewer = f.get("viewer_url").trim();
  body.viewer_url = viewer || null;
  for (const row of form.querySelectorAll(".carrier")) {
    const v = (n) => $(`[name=${n}]`, row).value.trim();
    const c = { name: v("c_name"), ingest_url: v("c_ingest_url") };
    for (const [p] of OPTIONAL_URLS) if (v(`c_${p}`)) c[p] = v(`c_${p}`);
    body.carriers.push(c);
  }
  return body;
}

/** The registration form's fields and its first carrier; `changed` after a registration. */
export function wireRegister(form, changed) {
  $("#register-fields", form).replaceWith(fields(null));
  const carriers = $("#carriers", form);
  addCarrier(carriers);
  $("#add-carrier", form).addEventListener("click", () => $("input", addCarrier(carriers)).focus());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(form, null);
    try {
      const body = { id: new FormData(form).get("id").trim(), ...read(form) };
      if (body.viewer_url === null) delete body.viewer_url;
      await call("POST", "/v1/servers", { body });
      form.reset();
      announce(`Server ${body.id} registered.`);
      await changed();
    } catch (err) {
      showError(form, err);
    }
  });
}

/** A form changing server `s` in place of its card's details; `done` after a save or "Cancel". */
function editForm(s, done) {
  const carriers = el("fieldset", {}, el("legend", {}, "Carriers (ingest networks)"));
  for (const c of s.carriers) addCarrier(carriers, c);
  const form = el("form", { className: "edit-server", "aria-label": `Edit ${s.id}` },
    fields(s), carriers,
    el("button", { type: "button", className: "secondary", onclick: () => $("input", addCarrier(carriers)).focus() }, "Add a carrier"), " ",
    el("button", { type: "submit" }, "Save"), " ",
    el("button", { type: "button", className: "secondary", onclick: () => done(false) }, "Cancel"),
    el("p", { className: "hint" }, "New rules apply to later bookings; a booked slot keeps its window. An empty rule keeps its value; an empty viewer URL removes it."),
    el("p", { className: "error", role: "alert", "data-error": "" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(form, null);
    try {
      await call("PATCH", `/v1/servers/${encodeURIComponent(s.id)}`, { body: read(form) });
      announce(`Server ${s.id} saved.`);
      await done(true);
    } catch (err) {
      showError(form, err);
    }
  });
  return form;
}

/**
 * Fills `list` with a card per server; an operator's cards have "Edit". `timeline(id)` shows a
 * server's day; `changed()` reloads the list after a save.
 */
export function renderServers(list, servers, { operator, timeline, changed }) {
  list.replaceChildren(...servers.map((s) => {
    const details = el("div", {},
      el("dl", { className: "rules" }, ...RULES.flatMap((r) => [el("dt", {}, r.name), el("dd", {}, r.show(s[r.key]))])),
      el("p", {}, "Carriers:"),
      el("ul", {}, ...s.carriers.map((c) => el("li", {}, el("strong", {}, c.name), ` ${protocolsOf(c).join(", ")} · `, el("code", {}, c.ingest_url)))),
      el("p", { className: "muted" }, s.viewer_url ? `Viewers: ${s.viewer_url}` : "No viewer URL: the live view cannot show its streams."));
    const buttons = el("div", { className: "row" },
      el("button", { type: "button", className: "secondary", onclick: () => timeline(s.id) }, `Timeline of ${s.id}`));
    const card = el("li", { "data-server": s.id }, el("h3", {}, `${s.name} `, el("span", { className: "muted" }, s.id)), details, buttons);
    if (operator) {
      const edit = el("button", { type: "button", className: "secondary", "aria-label": `Edit ${s.id}` }, "Edit");
      edit.onclick = () => {
        const form = editForm(s, async (saved) => {
          if (saved) return changed();
          form.replaceWith(details);
          buttons.hidden = false;
          edit.focus();
        });
        details.replaceWith(form);
        buttons.hidden = true;
        $("input", form).focus();
      };
      buttons.append(edit);
    }
    return card;
  }));
  if (!servers.length) list.append(el("li", { className: "muted" }, "No servers registered yet."));
}
