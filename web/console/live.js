// Live now: the slots live at this moment, as the signed-in token may see them
// (`GET /v1/reservations?status=live`: an operator every tenant's, a broadcaster its own),
// each with its ingest state and carrier from slotcast, and from its server's streamer
// (`<viewer_url>/hls/<id>/status.json`, the watch page's own source) the protocol it comes in
// by, its codec, bitrate, frames and viewers; "Watch here" opens the streamer's watch page inline.
//
// Contract: the token goes to the API only, never to a streamer; a card keeps its player
// across refreshes (only its figures change); polling stops on sign-out (`stopLive`).

import { call } from "./api.js";
import { $, el, localTime, showError } from "./ui.js";

const LIST_EVERY_MS = 5000;
const STATUS_EVERY_MS = 2000;

const live = { timers: [], cards: new Map(), servers: () => [], open: () => {} };

// Origins the page's policy refused: viewer URLs registered after the page was served.
const refused = new Set();
document.addEventListener("securitypolicyviolation", (e) => {
  try {
    refused.add(new URL(e.blockedURI).origin);
  } catch {
    // not a URL (inline, eval): nothing of the live view's
  }
});

/** Starts the view in `section`; `servers()` gives the known servers, `open(id)` a reservation's page. */
export function startLive(section, { servers, open }) {
  stopLive();
  Object.assign(live, { section, servers, open });
  refreshList();
  live.timers.push(setInterval(refreshList, LIST_EVERY_MS), setInterval(() => refreshFigures(), STATUS_EVERY_MS));
}

/** Stops polling and empties the view (signing out). */
export function stopLive() {
  for (const t of live.timers) clearInterval(t);
  live.timers = [];
  live.cards.clear();
  const list = $("#live-list");
  if (list) list.replaceChildren();
}

/** `1 234 kbit/s`, or a dash before the first figure. */
export function bitrate(bps) {
  if (bps == null) return "–";
  if (bps >= 10_000_000) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bps / 1000).toLocaleString("en")} kbit/s`;
}

async function refreshList() {
  const section = live.section;
  let rows;
  try {
    ({ body: { reservations: rows } } = await call("GET", "/v1/reservations?status=live&limit=200"));
    showError(section, null);
  } catch (err) {
    showError(section, err);
    return;
  }
  const list = $("#live-list", section);
  const ids = new Set(rows.map((r) => r.id));
  for (const [id, card] of live.cards) {
    if (!ids.has(id)) {
      card.node.remove();
      live.cards.delete(id);
    }
  }
  const fresh = [];
  for (const r of rows) {
    let card = live.cards.get(r.id);
    if (!card) fresh.push([r.id, (card = makeCard(r))]);
    card.update(r);
    if (!card.node.isConnected) list.append(card.node);
  }
  const empty = $(".empty", list);
  if (!rows.length && !empty) list.append(el("li", { className: "empty muted" }, "Nothing is live right now."));
  if (rows.length && empty) empty.remove();
  // A new card's figures at once; the others' come with the next status round.
  refreshFigures(fresh);
}

function makeCard(r) {
  const server = live.servers().find((s) => s.id === r.server_id);
  const viewer = server?.viewer_url ?? null;
  const figure = (name) => el("dd", { "data-figure": name }, "–");
  const figures = el("dl", { className: "rules figures" },
    el("dt", {}, "Ingest"), figure("ingest"),
    el("dt", {}, "Stream"), figure("state"),
    el("dt", {}, "Protocol"), figure("protocol"),
    el("dt", {}, "Codec"), figure("codec"),
    el("dt", {}, "Bitrate"), figure("bitrate"),
    el("dt", {}, "Frames"), figure("frames"),
    el("dt", {}, "Viewers"), figure("viewers"));
  const note = el("p", { className: "muted streamer-note" });
  const heading = el("h3", {});
  const when = el("p", { className: "muted" });
  const player = el("div", { className: "player" });
  const buttons = el("div", { className: "row" },
    el("button", { type: "button", className: "secondary", onclick: () => live.open(r.id) }, "Open reservation"));
  if (viewer) {
    const page = `${viewer}/watch/${encodeURIComponent(r.id)}`;
    const watch = el("button", { type: "button", "aria-expanded": "false" }, "Watch here");
    watch.onclick = () => {
      const shown = player.firstChild != null;
      player.replaceChildren(...(shown ? [] : [el("iframe", {
        src: page, title: `Player of ${r.title ?? r.id}`, allow: "autoplay; fullscreen", loading: "lazy",
      })]));
      watch.textContent = shown ? "Watch here" : "Close the player";
      watch.setAttribute("aria-expanded", String(!shown));
    };
    buttons.append(watch, el("a", { href: page, target: "_blank", rel: "noopener" }, "Open the watch page"));
  } else {
    note.textContent = `Server ${r.server_id} has no viewer URL, so its streamer's figures and player cannot be shown here (an operator sets one with "Edit").`;
  }
  const node = el("li", { "data-reservation": r.id }, el("div", { className: "info" }, heading, when, figures, note, buttons), player);
  const set = (name, text) => { $(`[data-figure="${name}"]`, figures).textContent = text; };
  const card = {
    node, viewer,
    update(row) {
      heading.replaceChildren(el("span", { className: "badge status-live" }, "live"), ` ${row.title ?? row.id} `,
        el("span", { className: "muted" }, `on ${row.server_id}`));
      when.textContent = `until ${localTime(row.end)} · ${row.owner}`;
      const i = row.ingest;
      set("ingest", i ? `${i.state}${i.carrier ? ` via ${i.carrier}` : ""} since ${localTime(i.at)}` : "no report yet");
    },
    figures(s) {
      node.dataset.stream = s.state;
      set("state", s.state);
      set("protocol", s.protocol ? s.protocol.toUpperCase() : "–");
      set("codec", s.codec ?? "–");
      set("bitrate", bitrate(s.bitrate_bps));
      set("frames", s.frames == null ? "–" : s.frames.toLocaleString("en"));
      set("viewers", String(s.viewers ?? 0));
      note.textContent = "";
    },
    unreachable(why) {
      note.textContent = refused.has(new URL(viewer).origin)
        ? `This page was loaded before ${viewer} became a viewer URL: reload it to see this stream's figures and player.`
        : `The streamer at ${viewer} did not answer (${why}).`;
    },
  };
  live.cards.set(r.id, card);
  return card;
}

/** Asks each card's streamer for its figures (by default every card's). */
async function refreshFigures(cards = [...live.cards]) {
  await Promise.all(cards.filter(([, c]) => c.viewer).map(async ([id, card]) => {
    try {
      const resp = await fetch(`${card.viewer}/hls/${encodeURIComponent(id)}/status.json`, { cache: "no-store", credentials: "omit" });
      if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
      card.figures(await resp.json());
    } catch (err) {
      card.unreachable(err.message);
    }
  }));
}
