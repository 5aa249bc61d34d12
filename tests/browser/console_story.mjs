#!/usr/bin/env node
// The whole story through the web console, in Debian's headless Chromium, against a running
// `slotcast server all` with its streamer, and say what happened.
//
//   node tests/browser/console_story.mjs <api-base-url> --operator TOKEN --broadcaster TOKEN
//        --server ID --rtsp rtsp://HOST:PORT --viewer http://HOST:PORT [--screenshot-dir DIR]
//
// Steps, each waiting (bounded) for what a user would see:
//   1. the operator signs in, registers server ID (its carrier the streamer's RTSP listener,
//      a pre-roll of 10 minutes, no viewer URL yet); the live view says it has nothing live;
//      edits the server: a new name and the streamer's viewer URL; the card shows both;
//   2. the broadcaster signs in on a fresh page (whose policy now lets it reach the viewer
//      URL), books ID from the next minutes with a title (its ingest window already open),
//      is refused on the same window, books the first suggestion; each time sees the setting
//      info once;
//   3. publishes into the first with the ffmpeg command the console gave for RTSP (its input
//      replaced by a test picture and tone);
//   4. "Live now" lists it: ingest connected via the carrier, by RTSP, its codec, a bitrate
//      and frames going up; "Watch here" plays it inline (the watch page's video advancing in the
//      frame); the viewer counted;
//   5. an operator's tab served before the viewer URL was set says to reload it;
//   6. the publisher stops; the reservation's page reads the story newest first: the reports
//      (connected, disconnected), the window opened, the acceptance.
// Prints one JSON line ({"ok", "steps", "bookings": [{id}], "live": {...}, "trail": [...]});
// exit 0 only when every step passed, 1 otherwise, 2 on bad arguments.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { Chromium, ending } from "./chromium.mjs";
import { check, consolePage, Failed, localInput, parseArgs, signIn } from "./console_steps.mjs";

const USAGE = "usage: node tests/browser/console_story.mjs <api-base-url> --operator TOKEN"
  + " --broadcaster TOKEN --server ID --rtsp URL --viewer URL [--screenshot-dir DIR]";
const WAIT = 20000;
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
// The console's `INPUT.mp4`, as a camera that needs no file: a test picture and a tone.
const TEST_INPUT = "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100";

const opts = parseArgs(process.argv.slice(2), {
  "--operator": "operator", "--broadcaster": "broadcaster", "--server": "server",
  "--rtsp": "rtsp", "--viewer": "viewer", "--screenshot-dir": "shots",
}, ["operator", "broadcaster", "server", "rtsp", "viewer"], USAGE);
const result = { ok: false, steps: [], bookings: [], live: null, trail: null, console_errors: [] };
const browser = new Chromium();
let publisher = null;
const end = ending(browser, result, 240000);
const finish = (reason) => {
  if (publisher) publisher.kill("SIGKILL");
  return end(reason);
};
const step = (name) => result.steps.push(name);

/** Polls `read` until `ok(value)`, at most `ms`; the last value either way. */
async function until(read, ok, ms = WAIT) {
  const deadline = Date.now() + ms;
  let value = await read();
  while (!ok(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    value = await read();
  }
  return value;
}

async function main() {
  let page;
  try {
    // The refusal this run asks for (a 409), and the watch page's 404s until the stream is on.
    page = await consolePage(browser, result, [409, 404]);
  } catch (err) {
    return finish(err.message);
  }
  page.setDefaultTimeout(WAIT);

  // 1. The operator: register, then edit.
  await page.goto(`${opts.base}/`, { waitUntil: "domcontentloaded" });
  await signIn(page, opts.operator, "operator");
  const form = page.locator("#register-form");
  await form.getByLabel("Id", { exact: true }).fill(opts.server);
  await form.getByLabel("Name", { exact: true }).fill("Story server");
  await form.getByLabel("Pre-roll (s)").fill("600");
  await form.getByLabel("Carrier 1 name").fill("carrier-a");
  await form.getByLabel("RTSP ingest URL").fill(opts.rtsp);
  await form.getByRole("button", { name: "Register" }).click();
  const card = page.locator(`#server-list li[data-server="${opts.server}"]`);
  await card.filter({ hasText: "No viewer URL" }).waitFor();
  await page.locator("#live-list .empty", { hasText: "Nothing is live" }).waitFor();
  step("operator registered the server; nothing live");

  // A second tab, served before the server has a viewer URL: its policy does not name it.
  const stale = await browser.context.newPage();
  await stale.goto(`${opts.base}/`, { waitUntil: "domcontentloaded" });
  await card.getByRole("button", { name: `Edit ${opts.server}` }).click();
  const edit = card.locator("form.edit-server");
  check(await edit.getByLabel("Pre-roll (s)").inputValue() === "600", "the edit form is not filled in");
  await edit.getByLabel("Name", { exact: true }).fill("Story server, studio B");
  await edit.getByLabel("Viewer URL").fill(opts.viewer);
  await edit.getByRole("button", { name: "Save" }).click();
  await card.filter({ hasText: "Story server, studio B" }).filter({ hasText: `Viewers: ${opts.viewer}` }).waitFor();
  check((await card.textContent()).includes("600 s"), "the edit lost the pre-roll");
  step("operator edited the server: a new name and its viewer URL");
  await page.getByRole("button", { name: "Sign out" }).click();

  // 2. The broadcaster, on a page served now that the server has a viewer URL.
  const resp = await page.goto(`${opts.base}/`, { waitUntil: "domcontentloaded" });
  const csp = resp.headers()["content-security-policy"] ?? "";
  check(csp.includes(`frame-src ${opts.viewer}`), `the viewer origin is not in the policy: ${csp}`);
  await signIn(page, opts.broadcaster, "broadcaster");
  const startMs = Math.ceil((Date.now() + 2 * 60000) / 60000) * 60000;
  const book = page.locator("#book-form");
  await book.getByLabel("Server").selectOption(opts.server);
  await book.getByLabel(/^Start/).fill(localInput(startMs, ZONE));
  await book.getByLabel("Duration (minutes)").fill("20");
  await book.getByLabel("Title").fill("The story show");
  await book.getByRole("button", { name: "Book" }).click();
  const setting = page.locator("#setting");
  const shown = async () => {
    await setting.locator(".copyable").first().waitFor();
    const codes = setting.locator(".copyable code");
    return { id: await codes.nth(0).textContent(), key: await codes.nth(1).textContent() };
  };
  const first = await shown();
  const command = await setting.locator('[data-protocol="RTSP"] code', { hasText: "ffmpeg" }).first().textContent();
  check(command.includes(first.key) && command.includes(opts.rtsp), `the RTSP command: ${command}`);
  result.bookings.push({ id: first.id });
  await page.getByRole("button", { name: /I have stored it/ }).click();
  await setting.waitFor({ state: "hidden" });
  step("booked: the setting info shown once, with an ffmpeg command for RTSP");

  await book.getByRole("button", { name: "Book" }).click();
  const suggestion = page.locator("#refusal button.suggestion").first();
  await suggestion.click();
  const second = await shown();
  check(second.id !== first.id, "the suggestion did not book");
  result.bookings.push({ id: second.id });
  await page.getByRole("button", { name: /I have stored it/ }).click();
  check(!(await page.content()).includes(first.key), "the first key is still in the page");
  step("refused on the same window; a suggestion booked");

  // 3. Publish with the console's own command.
  check(command.includes("INPUT.mp4"), `no input to replace in: ${command}`);
  publisher = spawn("sh", ["-c", `exec ${command.replace("-i INPUT.mp4", TEST_INPUT).replace(/^ffmpeg /, "ffmpeg -nostdin -loglevel error ")}`], { stdio: ["ignore", "ignore", "pipe"] });
  let publisherLog = "";
  publisher.stderr.on("data", (d) => { publisherLog = (publisherLog + d).slice(-2000); });
  publisher.on("exit", (code) => { result.publisher_exit = code; result.publisher_log = publisherLog; });

  // 4. Live now.
  const live = page.locator(`#live-list li[data-reservation="${first.id}"]`);
  await live.waitFor({ timeout: 60000 });
  const figure = (name) => live.locator(`[data-figure="${name}"]`).textContent();
  await live.locator('[data-figure="ingest"]', { hasText: "connected via carrier-a" }).waitFor({ timeout: 30000 });
  await live.locator('[data-figure="codec"]', { hasText: "avc1" }).waitFor({ timeout: 30000 });
  const frames = async () => Number((await figure("frames")).replaceAll(",", "")) || 0;
  const before = await until(frames, (n) => n > 0);
  const after = await until(frames, (n) => n > before + 25);
  check(after > before, `frames not going up: ${before} then ${after}`);
  const bitrate = await figure("bitrate");
  check(/\d+ kbit\/s|Mbit\/s/.test(bitrate) && !bitrate.startsWith("0 "), `bitrate: ${bitrate}`);
  check((await live.textContent()).includes("The story show"), "the title is not shown");
  check(await figure("protocol") === "RTSP", `protocol: ${await figure("protocol")}`);
  step("Live now lists it: connected via the carrier by RTSP, its codec, bitrate and frames going up");

  await live.getByRole("button", { name: "Watch here" }).click();
  const iframe = live.locator("iframe");
  await iframe.waitFor();
  const player = await iframe.elementHandle().then((h) => h.contentFrame());
  const position = () => player.evaluate(() => document.querySelector("video")?.currentTime ?? 0).catch(() => 0);
  const started = await until(position, (t) => t > 0, 45000);
  const later = await until(position, (t) => t > started + 2, 20000);
  check(later > started + 2, `the inline player does not advance: ${started} then ${later}`);
  const viewers = await until(async () => Number(await figure("viewers")), (n) => n >= 1);
  check(viewers >= 1, `viewers: ${viewers}`);
  result.live = { frames: await frames(), bitrate: await figure("bitrate"), codec: await figure("codec"), viewers, played_s: later };
  step("the inline player plays it; the viewer is counted");

  // The tab served before the viewer URL existed says to reload, rather than "no answer".
  await signIn(stale, opts.operator, "operator");
  await stale.locator(`#live-list li[data-reservation="${first.id}"] .streamer-note`, { hasText: "reload it" }).waitFor();
  await stale.close();
  step("a page served before the viewer URL was set says to reload it");
  if (opts.shots) {
    // Chromium paints the frame's video into a capture of the viewport, not of an element.
    await page.setViewportSize({ width: 1100, height: 1100 });
    await page.locator("#live").evaluate((e) => e.scrollIntoView());
    const box = await page.locator("#live").boundingBox();
    await page.screenshot({ path: join(opts.shots, "console-live.png"), clip: { ...box, height: Math.min(box.height, 1100 - box.y) } });
  }

  // 5. The publisher stops; the story in the audit trail.
  publisher.kill("SIGINT");
  await live.locator('[data-figure="ingest"]', { hasText: "disconnected" }).waitFor({ timeout: 30000 });
  await live.getByRole("button", { name: "Open reservation" }).click();
  const view = page.locator("#reservation-view");
  await view.locator("code", { hasText: first.id }).first().waitFor();
  const trail = () => view.locator("ol.history li").evaluateAll((lis) => lis.map((li) => `${li.dataset.type} ${li.querySelector(".facts")?.textContent ?? ""}`));
  result.trail = await until(trail, (t) => t.some((e) => /disconnected/.test(e)));
  const types = result.trail.map((e) => e.split(" ")[0]);
  check(types.at(-1) === "ReservationAccepted", `the trail does not start with the booking: ${types}`);
  check(types.includes("WindowOpened"), `no window opened in the trail: ${types}`);
  const reports = result.trail.filter((e) => e.startsWith("IngestReported"));
  check(reports.some((e) => /connected/.test(e) && !/disconnected/.test(e)) && /disconnected/.test(reports[0] ?? ""), `reports: ${reports}`);
  step("the reservation's trail tells the story newest first: disconnected, connected, the window, the booking");
  result.ok = result.console_errors.length === 0;
  return finish(result.ok ? undefined : "console errors");
}

main().catch((err) => finish(err instanceof Failed ? err.message : `${err.name}: ${err.message.split("\n")[0]}`));
