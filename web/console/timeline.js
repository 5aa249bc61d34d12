// A server's day on a line: each slot a block coloured by its status, the ingest window (the
// slot widened by the pre-roll and grace it was booked with) drawn around it, and a "now" line on the
// server's clock. `layout` is pure (times in, percentages out); `render` draws it, beside a
// plain list of the same slots for screen readers and for reading on a phone.

import { el } from "./ui.js";

const DAY_MS = 24 * 3600 * 1000;

/** Local midnight of the day holding `ms`, and the next midnight (23 or 25 h across a DST change). */
export function dayBounds(ms) {
  const d = new Date(ms);
  const start = new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const end = new Date(d.getFullYear(), d.getMonth(), d.getDate() + 1).getTime();
  return { start, end };
}

/** The seven local days of the week (Monday first) holding `ms`: `[{start, end}]`. */
export function weekDays(ms) {
  const d = new Date(ms);
  const monday = d.getDate() - ((d.getDay() + 6) % 7);
  return Array.from({ length: 7 }, (_, i) =>
    dayBounds(new Date(d.getFullYear(), d.getMonth(), monday + i, 12).getTime()));
}

const pct = (x) => Math.round(x * 10000) / 100;

/**
 * Where each slot falls on [from, to): `left` and `width` of the slot and of its window, in
 * percent of the span, clipped to it; slots wholly outside are left out.
 */
export function layout(slots, from, to, prerollS, graceS) {
  const span = to - from;
  const place = (a, b) => {
    const l = Math.max(a, from);
    const r = Math.min(b, to);
    return { left: pct((l - from) / span), width: pct(Math.max(0, r - l) / span) };
  };
  const out = [];
  for (const s of slots) {
    const start = Date.parse(s.start);
    const end = Date.parse(s.end);
    // The window as booked; a slot from an api without it, widened by today's rules.
    const opens = s.opens_at ? Date.parse(s.opens_at) : start - prerollS * 1000;
    const closes = s.closes_at ? Date.parse(s.closes_at) : end + graceS * 1000;
    if (closes <= from || opens >= to) continue;
    out.push({ ...s, slot: place(start, end), window: place(opens, closes), opens, closes });
  }
  return out;
}

/** The "now" line's place in percent, or null when now is not on [from, to). */
export function nowAt(serverNow, from, to) {
  if (serverNow < from || serverNow >= to) return null;
  return pct((serverNow - from) / (to - from));
}

const time = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

/**
 * Draws `slots` for the day of `dayMs` into `container`, for `server` (its
 * pre-roll and grace); `conflicts` (windows) are marked; a slot the caller may see (its title
 * or owner is shown) gets an Open button calling `open(id)`. Returns the now line, which the
 * caller moves with `moveNow`.
 */
export function render(container, { server, slots, dayMs, conflicts = [], open = null }) {
  const { start: from, end: to } = dayBounds(dayMs);
  const placed = layout(slots, from, to, server.preroll_s, server.grace_s);
  const isConflict = (s) => conflicts.some((c) => c.start === s.start && c.end === s.end);
  const track = el("div", { className: "track", "data-from": String(from), "data-to": String(to) });
  track.setAttribute("aria-hidden", "true");
  for (let h = 0; h <= 24; h += 3) {
    track.append(el("span", { className: "tick", style: { left: `${(h / 24) * 100}%` } }, `${String(h).padStart(2, "0")}`));
  }
  for (const s of placed) {
    track.append(el("div", {
      className: "window", title: "ingest window",
      style: { left: `${s.window.left}%`, width: `${s.window.width}%` },
    }));
    track.append(el("div", {
      className: `slot status-${s.status}${isConflict(s) ? " conflict" : ""}`,
      title: `${s.title ?? s.reservation_id} (${s.status})`,
      "data-status": s.status,
      "data-reservation": s.reservation_id,
      style: { left: `${s.slot.left}%`, width: `${s.slot.width}%` },
    }));
  }
  const now = el("div", { className: "now", title: "now, on the server's clock" });
  track.append(now);
  const list = el("ol", { className: "slots" });
  for (const s of placed) {
    const a = Date.parse(s.start);
    const b = Date.parse(s.end);
    list.append(el("li", { "data-reservation": s.reservation_id },
      el("span", { className: `badge status-${s.status}` }, s.status),
      ` ${time(a)}–${time(b)} `,
      s.title ? el("strong", {}, s.title) : el("span", {}, s.reservation_id),
      isConflict(s) ? el("em", {}, " (conflicts with your request)") : null,
      el("span", { className: "muted" },
        ` · ingest ${time(s.opens)}–${time(s.closes)} `),
      open && (s.title || s.owner)
        ? el("button", { type: "button", className: "secondary", "aria-label": `Open ${s.title ?? s.reservation_id}, ${time(a)}`, onclick: () => open(s.reservation_id) }, "Open")
        : null));
  }
  const empty = el("p", { className: "muted" }, "No slots on this day.");
  container.replaceChildren(track, placed.length ? list : empty);
  return now;
}

/** Places the now line for the server's clock reading `serverNow`; hides it off the day. */
export function moveNow(line, serverNow) {
  const track = line.parentElement;
  if (!track) return;
  const at = nowAt(serverNow, Number(track.dataset.from), Number(track.dataset.to));
  line.hidden = at === null;
  if (at !== null) line.style.left = `${at}%`;
  line.dataset.serverNow = new Date(serverNow).toISOString();
}

export { DAY_MS };

/**
 * Draws the week (Monday to Sunday) holding `dayMs`, a day per row, each as `render` draws
 * one; returns the seven now lines (each hidden off its day).
 */
export function renderWeek(container, { dayMs, ...rest }) {
  const lines = [];
  const days = weekDays(dayMs).map(({ start }) => {
    const day = el("div", { className: "day" });
    lines.push(render(day, { ...rest, dayMs: start }));
    const label = new Date(start).toLocaleDateString([], { weekday: "long", month: "short", day: "numeric" });
    return el("section", { className: "week-day", "aria-label": label }, el("h3", {}, label), day);
  });
  container.replaceChildren(...days);
  return lines;
}
