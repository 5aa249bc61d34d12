#!/usr/bin/env node
// Watch a slotcast watch page in Debian's headless Chromium and say whether the video played.
//
//   node tests/browser/watch.mjs <watch-url> [--seconds N] [--min-advance S]
//        [--expect-state waiting|live|ended] [--expect-engine hls.js|whep] [--screenshot FILE]
//
// Opens the page, then once a second samples video.currentTime, window.slotcastPlayer.state
// and its errors, for N seconds (default 20; less when the stream has ended and played out).
// Prints one JSON line:
//   {"ok":bool,"first_time":x,"last_time":y,"advanced":y-x,"state":"…","errors":[…],
//    "console_errors":[…], …}
// first_time is the first sample at which the video was playing, so the jump to the live edge
// does not count as playback. Exit 0 only when the video advanced by at least --min-advance
// seconds (default 2), the page recorded no fatal player error and, with --expect-state, the
// last state is that one; with --expect-engine, the page played with that engine, and for
// whep (real time, WebRTC) its peer connection decoded video frames and received audio
// samples (the "whep" field: framesDecoded, totalSamplesReceived, packetsLost from getStats);
// exit 1 otherwise, 2 on bad arguments.
//
// Needs `npm ci --prefix web` (scripts/services does it) for playwright-core, and
// /usr/bin/chromium (or $CHROMIUM). Never downloads a browser. Bounded: a hard timeout of
// N + 60 s covers launch and navigation, and the browser is always closed.
import { launch, runner } from "./chromium.mjs";

const USAGE = "usage: node tests/browser/watch.mjs <watch-url> [--seconds N] [--min-advance S]"
  + " [--expect-state waiting|live|ended] [--expect-engine hls.js|whep] [--screenshot FILE]";
function parseArgs(argv) {
  const opts = {
    url: null, seconds: 20, minAdvance: 2, expectState: null, expectEngine: null, screenshot: null,
  };
  const number = (flag, value) => {
    const n = Number(value);
    if (value === undefined || !Number.isFinite(n) || n < 0) usage(`${flag} needs a number >= 0`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--seconds") opts.seconds = number(arg, argv[++i]);
    else if (arg === "--min-advance") opts.minAdvance = number(arg, argv[++i]);
    else if (arg === "--expect-state") opts.expectState = argv[++i] ?? usage(`${arg} needs a state`);
    else if (arg === "--expect-engine") opts.expectEngine = argv[++i] ?? usage(`${arg} needs an engine`);
    else if (arg === "--screenshot") opts.screenshot = argv[++i] ?? usage(`${arg} needs a file`);
    else if (arg === "-h" || arg === "--help") { console.log(USAGE); process.exit(0); }
    else if (arg.startsWith("-") || opts.url !== null) usage(`unexpected argument: ${arg}`);
    else opts.url = arg;
  }
  if (opts.url === null) usage("missing <watch-url>");
  return opts;
}

function usage(message) {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const result = {
  ok: false, url: opts.url, first_time: null, last_time: null, advanced: 0, state: null,
  engine: null, samples: 0, errors: [], console_errors: [], whep: null,
};
const round = (x) => Math.round(x * 1000) / 1000;

const { finish, started } = runner(result, (opts.seconds + 60) * 1000);

async function main() {
  let browser;
  try {
    browser = await launch();
  } catch (err) {
    return finish(err.message);
  }
  started(browser);
  const { page } = browser;
  page.on("console", (msg) => {
    if (msg.type() === "error") result.console_errors.push(msg.text());
  });
  page.on("pageerror", (err) => result.console_errors.push(`uncaught: ${err.message}`));

  const response = await page.goto(opts.url, { waitUntil: "domcontentloaded", timeout: 20000 });
  if (!response || !response.ok()) {
    return finish(`page answered ${response ? response.status() : "nothing"}`);
  }

  const deadline = Date.now() + opts.seconds * 1000;
  while (Date.now() < deadline) {
    const s = await page.evaluate(async () => {
      const v = document.querySelector("video");
      const p = window.slotcastPlayer || {};
      let whep = null;
      if (p.peer) {
        whep = { framesDecoded: 0, totalSamplesReceived: 0, packetsLost: 0 };
        for (const r of (await p.peer.getStats()).values()) {
          if (r.type !== "inbound-rtp") continue;
          whep.framesDecoded += r.framesDecoded ?? 0;
          whep.totalSamplesReceived += r.totalSamplesReceived ?? 0;
          whep.packetsLost += r.packetsLost ?? 0;
        }
      }
      return {
        whep,
        time: v ? v.currentTime : null,
        playing: !!v && !v.paused && v.readyState >= 2 && v.currentTime > 0,
        ended: !!v && v.ended,
        state: p.state ?? null,
        engine: p.engine ?? null,
        errors: Array.isArray(p.errors) ? p.errors : [],
      };
    });
    result.samples++;
    result.state = s.state;
    result.engine = s.engine;
    result.errors = s.errors;
    if (s.whep) result.whep = s.whep;
    if (s.time !== null && (result.first_time !== null || s.playing)) {
      if (result.first_time === null) result.first_time = round(s.time);
      result.last_time = round(s.time);
    }
    // Nothing more can happen: the stream is over and played out, or the page gave up.
    if ((s.state === "ended" && (s.ended || result.first_time === null && result.samples > 5))
      || s.errors.some((e) => e.type === "setup")) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  if (result.first_time !== null) result.advanced = round(result.last_time - result.first_time);
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot });

  const problems = [];
  if (result.advanced < opts.minAdvance) problems.push(`advanced ${result.advanced} s < ${opts.minAdvance} s`);
  if (result.errors.length) problems.push(`${result.errors.length} fatal player error(s)`);
  if (opts.expectState && result.state !== opts.expectState) {
    problems.push(`state ${result.state}, expected ${opts.expectState}`);
  }
  if (opts.expectEngine && result.engine !== opts.expectEngine) {
    problems.push(`engine ${result.engine}, expected ${opts.expectEngine}`);
  }
  if (opts.expectEngine === "whep" && !(result.whep?.framesDecoded > 0)) problems.push("no video frame decoded");
  if (opts.expectEngine === "whep" && !(result.whep?.totalSamplesReceived > 0)) problems.push("no audio received");
  result.ok = problems.length === 0;
  return finish(problems.join("; ") || undefined);
}

main().catch((err) => finish(`${err.name}: ${err.message.split("\n")[0]}`));
