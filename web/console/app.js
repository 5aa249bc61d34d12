// The console: sign-in, what is live, servers, a server's day, booking, a reservation's page. Everything it
// shows comes from the API as the signed-in token may see it (the API decides; the page only
// hides the forms a role may not use). Errors are shown as the API words them (api.js).

import { ApiError, call, token } from "./api.js";
import { describe as describeClock, measure } from "./clock.js";
import { startLive, stopLive } from "./live.js";
import { openReservation } from "./reservation.js";
import { renderServers, wireRegister } from "./servers.js";
import { forgetSettings, showSetting } from "./setting.js";
import { dayBounds, moveNow, render as renderTimeline, renderWeek, weekDays } from "./timeline.js";
import { $, announce, el, local, localTime, showError } from "./ui.js";

const state = { me: null, servers: [], offset: 0, nowLines: [], span: "day", lastBooking: null, sinceDays: 7 };

/** The reservations list asks for this many at most, in start order. */
const RESERVATIONS_MAX = 500;

const serverNow = () => Date.now() + state.offset;

// ---- sign-in ----

async function signIn(t) {
  token.set(t);
  try {
    const { body } = await call("GET", "/v1/me");
    state.me = body;
  } catch (err) {
    token.clear();
    throw err;
  }
  $("#who").textContent = `Signed in as ${state.me.name} (${state.me.role === "operator" ? "operator" : "broadcaster"})`;
  $("#sign-in").hidden = true;
  $("#signed-in").hidden = false;
  $("#sign-out").hidden = false;
  $("#register-form").hidden = state.me.role !== "operator";
  $("#booking").hidden = state.me.role !== "distributor";
  document.body.dataset.role = state.me.role;
  await Promise.all([measureClock(), loadServers(), loadReservations()]);
  startLive($("#live"), { servers: () => state.servers, open });
  const wanted = /^#reservation=(.+)$/.exec(location.hash);
  if (wanted) open(decodeURIComponent(wanted[1]));
}

function signOut() {
  token.clear();
  state.me = null;
  state.sinceDays = 7;
  stopLive();
  $("#who").textContent = "";
  $("#signed-in").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  forgetSettings();
  $("#refusal").hidden = true;
  $("#reservation").hidden = true;
  $("#reservation-view").replaceChildren();
  history.replaceState(null, "", location.pathname);
  $("#timeline-view").replaceChildren();
  state.nowLines = [];
  delete document.body.dataset.role;
  $("#token").value = "";
  $("#token").focus();
  announce("Signed out.");
}

// ---- clock ----

async function measureClock() {
  const section = $("#clock");
  showError(section, null);
  try {
    const m = await measure(async () => (await call("GET", "/v1/time", { auth: false })).body, 8);
    state.offset = m.offset;
    const out = $("#clock-offset");
    out.textContent = `${describeClock(m.offset, m.delay)}; best of ${m.samples} exchanges.`;
    out.dataset.offsetMs = String(m.offset);
    out.dataset.delayMs = String(m.delay);
    const s = m.server;
    $("#server-clock-state").textContent = `(${s.source}, ${s.state}${s.ntp ? `, NTP ${s.ntp.server}` : ""})`;
  } catch (err) {
    showError(section, err);
  }
}

function tick() {
  if (!state.me) return;
  $("#server-now").textContent = new Date(serverNow()).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
  for (const line of state.nowLines) moveNow(line, serverNow());
}

// ---- servers ----

async function loadServers() {
  const section = $("#servers");
  try {
    const { body } = await call("GET", "/v1/servers");
    state.servers = body.servers;
    showError(section, null);
  } catch (err) {
    showError(section, err);
    return;
  }
  renderServers($("#server-list"), state.servers, {
    operator: state.me.role === "operator",
    timeline: (id) => showDay(id, serverNow()),
    changed: loadServers,
  });
  for (const sel of [$("#timeline-server"), $("#book-server")]) {
    const keep = sel.value;
    sel.replaceChildren(...state.servers.map((s) => el("option", { value: s.id }, `${s.name} (${s.id})`)));
    if (keep && state.servers.some((s) => s.id === keep)) sel.value = keep;
  }
  if (state.servers.length && !state.nowLines.length) await showDay($("#timeline-server").value, serverNow());
}

// ---- timeline ----

function dayInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

async function showDay(serverId, dayMs, conflicts = []) {
  const section = $("#timeline");
  const server = state.servers.find((s) => s.id === serverId);
  if (!server) return;
  $("#timeline-server").value = serverId;
  $("#timeline-day").value = dayInput(dayMs);
  const week = state.span === "week";
  const { start, end } = week ? { start: weekDays(dayMs)[0].start, end: weekDays(dayMs)[6].end } : dayBounds(dayMs);
  const q = new URLSearchParams({ from: new Date(start).toISOString(), to: new Date(end).toISOString() });
  try {
    const { body } = await call("GET", `/v1/servers/${encodeURIComponent(serverId)}/schedule?${q}`);
    const view = $("#timeline-view");
    const what = { server, slots: body.slots, dayMs, conflicts, open };
    state.nowLines = week ? renderWeek(view, what) : [renderTimeline(view, what)];
    view.dataset.span = state.span;
    $("#timeline-view").dataset.server = serverId;
    showError(section, null);
    tick();
  } catch (err) {
    showError(section, err);
  }
}

// ---- booking ----

function zoneName() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone";
}

/** The request the form describes: its start read in the user's time zone. */
function bookingRequest(form) {
  const f = new FormData(form);
  const start = new Date(f.get("start")); // datetime-local: read as local time
  if (Number.isNaN(start.getTime())) throw new Error("The start is not a time.");
  const end = new Date(start.getTime() + Number(f.get("minutes")) * 60000);
  const body = { server_id: f.get("server_id"), start: start.toISOString(), end: end.toISOString() };
  const title = f.get("title").trim();
  if (title) body.title = title;
  if (f.get("source") === "pull") {
    const source = { pull_url: f.get("pull_url").trim(), transport: f.get("pull_transport") };
    if (!source.pull_url) throw new Error("Give the camera's URL (rtsp://…), or choose a publisher.");
    if (f.get("pull_username")) source.username = f.get("pull_username");
    if (f.get("pull_password")) source.password = f.get("pull_password");
    body.source = source;
  }
  return body;
}

/** Books `body`; a retry of the same request (after a network failure, a 503) reuses its key. */
async function book(body) {
  const text = JSON.stringify(body);
  if (!state.lastBooking || state.lastBooking.text !== text) {
    state.lastBooking = { text, key: crypto.randomUUID() };
  }
  const { status, body: answer } = await call("POST", "/v1/reservations", {
    body, headers: { "Idempotency-Key": state.lastBooking.key }, accept: [409],
  });
  if (status === 409 && answer && answer.error) throw new ApiError(409, answer, "");
  state.lastBooking = null;
  $("#refusal").hidden = true;
  $("#refusal").replaceChildren();
  if (status === 409) return refused(body, answer);
  accepted(answer);
  await refresh(body.server_id, body.start);
}

function refused(request, r) {
  const box = $("#refusal");
  const len = Date.parse(request.end) - Date.parse(request.start);
  box.replaceChildren(
    el("h3", {}, "Refused"),
    el("p", {}, `${r.reason}: ${r.message}`),
    el("p", {}, "It overlaps:"),
    el("ul", { className: "conflicts" }, ...r.conflicts.map((c) => el("li", {}, `${local(c.start)} – ${localTime(c.end)}`))),
    r.suggestions.length ? el("p", {}, "Free windows of the same length (book one):") : el("p", {}, "No free window of that length nearby."),
    el("div", { className: "row suggestions" }, ...r.suggestions.map((s) => el("button", {
      type: "button",
      className: "suggestion",
      "data-start": s.start,
      onclick: (e) => {
        e.target.disabled = true;
        book({ ...request, start: s.start, end: new Date(Date.parse(s.start) + len).toISOString() })
          .catch((err) => showError($("#book-form"), err))
          .finally(() => { e.target.disabled = false; });
      },
    }, `Book ${local(s.start)} – ${localTime(s.end)}`))));
  box.hidden = false;
  showDay(request.server_id, Date.parse(request.start), r.conflicts);
  const first = $("button.suggestion", box);
  if (first) first.focus();
}

/**
 * The setting info, shown this once: the API never repeats the key. A camera's booking needs
 * no publisher: it says what the streamer will pull, and when.
 */
function accepted(a) {
  const after = $("#book-form button[type=submit]");
  if (!a.source) return showSetting($("#setting"), a, "Booked", after);
  const box = $("#setting");
  const server = state.servers.find((s) => s.id === a.server_id);
  box.replaceChildren(
    el("h3", {}, `Booked: ${a.title ?? a.id}, ${local(a.start)} – ${localTime(a.end)}`),
    el("p", {}, "The streamer pulls ", el("code", {}, a.source.pull_url), ` (${a.source.transport ?? "tcp"}) from ${local(a.setting.opens_at)} to ${localTime(a.setting.closes_at)}; nobody needs to publish.`),
    el("p", {}, "Reservation ", el("code", {}, a.id), ...(server?.viewer_url ? [" · viewers watch at ", el("code", {}, `${server.viewer_url}/watch/${a.id}`)] : [])),
    el("button", { type: "button", className: "setting-done", onclick: () => { box.replaceChildren(); box.hidden = true; after.focus(); } }, "Close"));
  box.hidden = false;
  box.focus();
}

// ---- reservations ----

/** Opens reservation `id` below, and says so in the address (a reload comes back to it). */
function open(id) {
  if (location.hash !== `#reservation=${id}`) history.replaceState(null, "", `#reservation=${encodeURIComponent(id)}`);
  openReservation($("#reservation"), id, refresh);
  $("#reservation").scrollIntoView();
}

/** After a change: the timeline of the server's day and the list of reservations again. */
async function refresh(serverId, startIso) {
  await Promise.all([showDay(serverId, Date.parse(startIso)), loadReservations()]);
}

async function loadReservations() {
  const section = $("#reservations");
  try {
    // Those still to come and the recent ones: a long history would otherwise fill the list
    // with its oldest.
    const since = new Date(serverNow() - state.sinceDays * 86400e3).toISOString();
    const q = new URLSearchParams({ from: since, limit: String(RESERVATIONS_MAX) });
    const { body } = await call("GET", `/v1/reservations?${q}`);
    const full = body.reservations.length === RESERVATIONS_MAX;
    $("#reservations-since").textContent = `Ending after ${local(since)}, in start order${full ? ` (the first ${RESERVATIONS_MAX})` : ""}; refused bookings left out.`;
    const rows = body.reservations.filter((r) => r.status !== "rejected");
    $("#reservation-list").replaceChildren(...rows.map((r) => el("li", { "data-reservation": r.id },
      el("span", { className: `badge status-${r.status}` }, r.status), ` ${local(r.start)} – ${localTime(r.end)} `,
      el("strong", {}, r.title ?? r.id), el("span", { className: "muted" }, ` on ${r.server_id} · ${r.owner} `),
      el("button", { type: "button", className: "secondary", "aria-label": `Open ${r.title ?? r.id}, ${local(r.start)}`, onclick: () => open(r.id) }, "Open"))));
    if (!rows.length) $("#reservation-list").append(el("li", { className: "muted" }, "None yet."));
    showError(section, null);
  } catch (err) {
    showError(section, err);
  }
}

// ---- wiring ----

function wire() {
  $(".zone").textContent = zoneName();
  $("#sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(e.target, null);
    try {
      await signIn($("#token").value.trim());
    } catch (err) {
      showError(e.target, err);
    }
  });
  $("#sign-out").addEventListener("click", signOut);
  $("#reservations-older").addEventListener("click", () => {
    state.sinceDays += 30;
    loadReservations();
  });
  $("#measure").addEventListener("click", measureClock);
  wireRegister($("#register-form"), loadServers);
  for (const radio of document.querySelectorAll("#book-source input[name=source]")) {
    radio.addEventListener("change", () => { $("#camera-fields").hidden = $("#book-source input[value=pull]").checked === false; });
  }
  $("#timeline-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.span = $("#timeline-span").value;
    const day = $("#timeline-day").value;
    const [y, m, d] = day.split("-").map(Number);
    showDay($("#timeline-server").value, day ? new Date(y, m - 1, d, 12).getTime() : serverNow());
  });
  $("#book-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(e.target, null);
    try {
      await book(bookingRequest(e.target));
    } catch (err) {
      showError(e.target, err);
    }
  });
  setInterval(tick, 1000);
  const saved = token.get();
  if (saved) signIn(saved).catch((err) => showError($("#sign-in-form"), err));
}

wire();
