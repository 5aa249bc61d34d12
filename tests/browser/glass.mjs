#!/usr/bin/env node
// Glass-to-glass latency as a viewer sees it: the watch page in Debian's headless Chromium,
// the clock code `slotcast-bench glass` burns into each frame read off every frame the page
// presents, against the server clock.
//
//   node tests/browser/glass.mjs <watch-url> --time-url <api>/v1/time [--seconds N]
//        [--start-limit S] [--samples K]
//
// First the server clock: K exchanges (default 8) with GET /v1/time, NTP-style (t1 and t4
// here, t2 and t3 the server's), the one with the least round trip kept: offset =
// ((t2 - t1) + (t3 - t4)) / 2, to add to this machine's clock (Node's and Chromium's Date.now
// are the same clock). Then the page: for every frame presented (video.requestVideoFrameCallback)
// the video is drawn at its intrinsic size into a canvas, the code read (glass-code.mjs's
// readCode), and server_now - code recorded, server_now = Date.now() + offset taken as the
// callback starts. Recording lasts N seconds (default 20) from the first readable frame;
// none within S seconds (default 30) ends the run, as do three refused WHEP offers with no
// frame (?mode=realtime). Prints one JSON line:
//   {"ok":bool,"count":n,"median_ms":…,"p95_ms":…,"min_ms":…,"max_ms":…,"unreadable":n,
//    "frames":n,"skipped":n,"windows_ms":[…],"offset_ms":…,"offset_delay_ms":…,
//    "whep_answers":[{"status":…,"body":"…"}],"engine":"…","errors":[…],"reason":"…",…}
// count is the frames read in the window, unreadable those whose code failed (not counted),
// skipped the frames the page presented without a callback (requestVideoFrameCallback's
// presentedFrames), windows_ms the median of each 5 s of the window. Sampled twice a second
// and given as medians, to say where the time goes: buffer_ahead_ms (media buffered past the
// playback position, LL-HLS), and hls.js's own hls_latency_ms, hls_target_latency_ms and
// the video's playback_rate; and for WHEP, webrtc: the video receiver's own counters over the
// window (getStats' inbound-rtp through window.slotcastPlayer.peer), as means per frame in ms
// (jitter_buffer_ms, jitter_buffer_target_ms; processing_ms from the first packet received to
// the frame decoded; decode_ms) and counts (frames_decoded, frames_dropped, packets_lost,
// nacks, plis). Exit 0 when frames were read, 1 otherwise, 2 on bad arguments.
//
// Needs `npm ci --prefix web` for playwright-core, and /usr/bin/chromium (or $CHROMIUM).
// Never downloads a browser. Bounded: a hard timeout of N + S + 60 s, and the browser is
// always closed.
import { Chromium, ending } from "./chromium.mjs";
import { readCode, latencyMs } from "./glass-code.mjs";

const USAGE = "usage: node tests/browser/glass.mjs <watch-url> --time-url <api>/v1/time"
  + " [--seconds N] [--start-limit S] [--samples K]";
// Beside chromium.mjs's (which let WebRTC reach a streamer on loopback): the video plays
// without a click.
const EXTRA_ARGS = ["--autoplay-policy=no-user-gesture-required"];
const WINDOW_MS = 5000;
const WHEP_REFUSALS = 3;

function parseArgs(argv) {
  const opts = { url: null, timeUrl: null, seconds: 20, startLimit: 30, samples: 8 };
  const number = (flag, value, min) => {
    const n = Number(value);
    if (value === undefined || !Number.isFinite(n) || n < min) usage(`${flag} needs a number >= ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--time-url") opts.timeUrl = argv[++i] ?? usage(`${arg} needs a URL`);
    else if (arg === "--seconds") opts.seconds = number(arg, argv[++i], 1);
    else if (arg === "--start-limit") opts.startLimit = number(arg, argv[++i], 1);
    else if (arg === "--samples") opts.samples = Math.floor(number(arg, argv[++i], 1));
    else if (arg === "-h" || arg === "--help") { console.log(USAGE); process.exit(0); }
    else if (arg.startsWith("-") || opts.url !== null) usage(`unexpected argument: ${arg}`);
    else opts.url = arg;
  }
  if (opts.url === null) usage("missing <watch-url>");
  if (opts.timeUrl === null) usage("missing --time-url");
  return opts;
}

function usage(message) {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const result = {
  ok: false, url: opts.url, count: 0, median_ms: null, p95_ms: null, min_ms: null, max_ms: null,
  unreadable: 0, frames: 0, skipped: 0, windows_ms: [], offset_ms: null, offset_delay_ms: null,
  first_frame_s: null, buffer_ahead_ms: null, caught_up_ms: null, hls_latency_ms: null, hls_target_latency_ms: null,
  playback_rate: null, webrtc: null, size: null, engine: null, player: null,
  browser: null, whep_answers: [], errors: [], console_errors: [],
};
const round = (x) => Math.round(x * 10) / 10;

const browser = new Chromium();
const finish = ending(browser, result, (opts.seconds + opts.startLimit + 60) * 1000);

/// An RFC 3339 time with up to microseconds, in ms since the epoch (Date.parse keeps only ms).
function parseUs(text) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) throw new Error(`not an RFC 3339 time: ${text}`);
  const whole = Date.parse(m[1] + m[3]);
  const fraction = m[2] ? Number("0." + m[2]) * 1000 : 0;
  return whole + fraction;
}

/// The server clock against this machine's, NTP-style; the least round trip's sample.
async function measureOffset() {
  let best = null;
  for (let i = 0; i < opts.samples; i++) {
    const t1 = Date.now();
    const res = await fetch(opts.timeUrl, { cache: "no-store" });
    const body = await res.json();
    const t4 = Date.now();
    if (!res.ok) throw new Error(`GET ${opts.timeUrl} answered ${res.status}`);
    const t2 = parseUs(body.t_receive), t3 = parseUs(body.t_transmit);
    const sample = { offset: ((t2 - t1) + (t3 - t4)) / 2, delay: Math.max((t4 - t1) - (t3 - t2), 0) };
    if (best === null || sample.delay < best.delay) best = sample;
  }
  return best;
}

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

// Runs in the page: reads the code off every frame presented into window.__glass.frames,
// one { at: server time, ms: server time - code (null: unreadable), p: presentedFrames }
// each. window.__glassReadCode and __glassLatency are glass-code.mjs's readCode and
// latencyMs, put in before the page's own scripts.
function install(offset) {
  const video = document.querySelector("video");
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const g = window.__glass = { frames: [], size: null };
  const onFrame = (_now, meta) => {
    const at = Date.now() + offset;
    video.requestVideoFrameCallback(onFrame);
    const w = video.videoWidth, h = video.videoHeight;
    let ms = null;
    if (w && h) {
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; g.size = w + "x" + h; }
      ctx.drawImage(video, 0, 0, w, h);
      const code = window.__glassReadCode(ctx.getImageData(0, 0, w, h).data, w, h);
      if (code !== null) ms = window.__glassLatency(code, at);
    }
    g.frames.push({ at, ms, p: meta.presentedFrames });
  };
  video.requestVideoFrameCallback(onFrame);
}

// Runs in the page before its scripts: the page keeps its hls.js player to itself, so the
// player's own view of its latency is read from the instance a subclass keeps in
// window.__glassHls (the page sees the same class, statics included).
function keepHls() {
  let kept;
  Object.defineProperty(window, "Hls", {
    configurable: true,
    get: () => kept,
    set: (Hls) => {
      kept = typeof Hls !== "function" ? Hls : class extends Hls {
        constructor(...args) { super(...args); window.__glassHls = this; }
      };
    },
  });
}

// The real-time player's counters for its video (inbound-rtp), or null (LL-HLS).
function rtcStats(page) {
  return page.evaluate(async () => {
    const pc = window.slotcastPlayer?.peer;
    if (!pc) return null;
    for (const s of (await pc.getStats()).values()) {
      if (s.type === "inbound-rtp" && s.kind === "video") return s;
    }
    return null;
  });
}

/// What WebRTC says of the window between two counters' readings: means per frame in ms.
function rtcDelta(a, b) {
  const d = (k) => (b[k] ?? 0) - (a[k] ?? 0);
  const per = (k, n) => (d(n) > 0 ? round((d(k) / d(n)) * 1000) : null);
  return {
    jitter_buffer_ms: per("jitterBufferDelay", "jitterBufferEmittedCount"),
    jitter_buffer_target_ms: per("jitterBufferTargetDelay", "jitterBufferEmittedCount"),
    processing_ms: per("totalProcessingDelay", "framesDecoded"),
    decode_ms: per("totalDecodeTime", "framesDecoded"),
    frames_decoded: d("framesDecoded"), frames_dropped: d("framesDropped"),
    packets_lost: d("packetsLost"), nacks: d("nackCount"), plis: d("pliCount"),
  };
}

async function main() {
  const clock = await measureOffset();
  result.offset_ms = round(clock.offset);
  result.offset_delay_ms = round(clock.delay);

  const page = await browser.launch({
    extraArgs: EXTRA_ARGS, consoleErrors: result.console_errors, viewport: { width: 1280, height: 800 },
  });
  page.on("response", async (res) => {
    if (res.request().method() !== "POST" || !new URL(res.url()).pathname.startsWith("/whep/")) return;
    const entry = { status: res.status(), body: "" };
    result.whep_answers.push(entry);
    if (res.status() >= 300) entry.body = (await res.text().catch(() => "")).trim().slice(0, 300);
  });

  await page.addInitScript({
    content: `window.__glassReadCode = ${readCode}; window.__glassLatency = ${latencyMs};
      (${keepHls})();`,
  });
  const started = Date.now();
  const response = await page.goto(opts.url, { waitUntil: "domcontentloaded", timeout: 20000 });
  if (!response || !response.ok()) {
    return finish(`page answered ${response ? response.status() : "nothing"}`);
  }
  await page.evaluate(install, clock.offset);
  // The user agent says only the major version.
  result.browser = await page.evaluate(async () => {
    const brands = (await navigator.userAgentData?.getHighEntropyValues(["fullVersionList"]))?.fullVersionList ?? [];
    return brands.find((b) => /Chrom/.test(b.brand))?.version ?? null;
  });

  let firstAt = null; // server time of the first readable frame
  let rtcFrom = null; // the video's WebRTC receive counters then
  const bufferAhead = [];
  const hlsViews = []; // [latency s, target latency s, playback rate] as hls.js sees them
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const s = await page.evaluate(() => {
      const v = document.querySelector("video");
      const p = window.slotcastPlayer || {};
      const b = v.buffered;
      return {
        first: window.__glass.frames.find((f) => f.ms !== null)?.at ?? null,
        ahead: b.length ? b.end(b.length - 1) - v.currentTime : null,
        hls: window.__glassHls && Number.isFinite(window.__glassHls.latency)
          ? [window.__glassHls.latency, window.__glassHls.targetLatency, v.playbackRate] : null,
        engine: p.engine ?? null, errors: Array.isArray(p.errors) ? p.errors : [],
        player: window.Hls ? "hls.js " + window.Hls.version : null,
      };
    });
    Object.assign(result, { engine: s.engine, errors: s.errors, player: s.player });
    if (firstAt === null && s.first !== null) {
      firstAt = s.first;
      rtcFrom = await rtcStats(page);
      result.first_frame_s = Math.round((Date.now() - started) / 100) / 10;
    }
    if (firstAt !== null) {
      if (s.ahead !== null && s.engine !== "whep") bufferAhead.push(s.ahead * 1000);
      if (s.hls && s.engine === "hls.js") hlsViews.push(s.hls);
      if (Date.now() + clock.offset >= firstAt + opts.seconds * 1000) break;
    } else if (Date.now() - started > opts.startLimit * 1000) {
      return finish(`no readable frame within ${opts.startLimit} s`);
    } else if (result.whep_answers.filter((a) => a.status >= 300).length >= WHEP_REFUSALS) {
      return finish(`${WHEP_REFUSALS} WHEP offers refused and no frame`);
    }
  }

  const rtcTo = await rtcStats(page);
  if (rtcFrom && rtcTo) result.webrtc = rtcDelta(rtcFrom, rtcTo);
  const g = await page.evaluate(() => window.__glass);
  const end = firstAt + opts.seconds * 1000;
  const frames = g.frames.filter((f) => f.at >= firstAt && f.at <= end);
  const read = frames.filter((f) => f.ms !== null);
  const sorted = read.map((f) => f.ms).sort((a, b) => a - b);
  let skipped = 0;
  for (let i = 1; i < frames.length; i++) skipped += Math.max(frames[i].p - frames[i - 1].p - 1, 0);
  Object.assign(result, {
    count: sorted.length, unreadable: frames.length - read.length, frames: frames.length, skipped,
    size: g.size, median_ms: round(percentile(sorted, 0.5)), p95_ms: round(percentile(sorted, 0.95)),
    min_ms: round(sorted[0]), max_ms: round(sorted[sorted.length - 1]),
  });
  for (let from = firstAt; from < end; from += WINDOW_MS) {
    const w = read.filter((f) => f.at >= from && f.at < from + WINDOW_MS).map((f) => f.ms).sort((a, b) => a - b);
    if (w.length) result.windows_ms.push(round(percentile(w, 0.5)));
  }
  if (hlsViews.length) {
    const median = (k) => percentile(hlsViews.map((h) => h[k]).sort((a, b) => a - b), 0.5);
    Object.assign(result, {
      hls_latency_ms: round(median(0) * 1000), hls_target_latency_ms: round(median(1) * 1000),
      playback_rate: Math.round(median(2) * 1000) / 1000,
    });
  }
  result.caught_up_ms = await page.evaluate(() => window.slotcastPlayer?.caughtUp ?? null)
    .then((s) => (s == null ? null : round(s * 1000))).catch(() => null);
  if (bufferAhead.length) result.buffer_ahead_ms = round(percentile(bufferAhead.sort((a, b) => a - b), 0.5));
  result.ok = sorted.length > 0;
  return finish();
}

main().catch((err) => finish(`${err.name}: ${err.message.split("\n")[0]}`));
