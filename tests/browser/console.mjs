#!/usr/bin/env node
// Drive the web console (served by the api at /) in Debian's headless Chromium, as an operator
// and then as a broadcaster, and say what happened.
//
//   node tests/browser/console.mjs <api-base-url> --operator TOKEN --broadcaster TOKEN
//        --server ID [--screenshot-dir DIR]
//
// The browser runs in Asia/Tokyo with its clock set one hour behind the machine's, so the
// console must read the start in the user's zone and place "now" on the server's clock, not
// the browser's. Steps, each waiting (bounded) for what a user would see:
//   1. a token that is no token is refused with the API's 401, shown as the API words it;
//   2. the operator signs in (role shown), registers server ID with one carrier through the
//      form and sees it listed; registering it again shows the API's 409; the clock
//      difference is measured (about +3600 s); signs out (the token leaves sessionStorage);
//   3. the broadcaster signs in and sees no registration form; books ID in 10 minutes (local
//      time in Tokyo) and gets the setting info with a key; books the same window again, is
//      refused with the conflict listed, books the first suggestion, gets a second key;
//      closes it; the timeline shows both slots and the now line at the server's time;
//   4. after a reload (the same tab), no stream key is shown anywhere; a camera is booked
//      (URL, login, UDP) and the page says what will be pulled, its password nowhere;
//   5. on the first reservation's page, a move onto the second is refused; its key is rotated
//      (after a "no", then a "yes"), the new key shown; the second is cancelled (confirmed);
//      the first is moved into the freed window; each audit trail reads newest first.
// Prints one JSON line ({"ok", "steps", "bookings": [{id, start, moved_to?}], "offset_ms", …}); exit 0
// only when every step passed, 1 otherwise, 2 on bad arguments. Needs `npm ci --prefix web`
// for playwright-core and /usr/bin/chromium (or $CHROMIUM); never downloads a browser.
import { join } from "node:path";
import { Chromium, ending } from "./chromium.mjs";
import { check, consolePage, Failed, localInput, parseArgs, signIn } from "./console_steps.mjs";

const USAGE = "usage: node tests/browser/console.mjs <api-base-url> --operator TOKEN"
  + " --broadcaster TOKEN --server ID [--screenshot-dir DIR]";
const ZONE = "Asia/Tokyo";
const BEHIND_MS = 3600 * 1000;
const WAIT = 15000;

const opts = parseArgs(process.argv.slice(2), {
  "--operator": "operator", "--broadcaster": "broadcaster", "--server": "server", "--screenshot-dir": "shots",
}, ["operator", "broadcaster", "server"], USAGE);
const result = { ok: false, steps: [], bookings: [], offset_ms: null, console_errors: [] };
const browser = new Chromium();
const finish = ending(browser, result, 150000);

const step = (name) => result.steps.push(name);

async function main() {
  let page;
  try {
    // The refusals this run asks for on purpose: a 401 and two 409s.
    page = await consolePage(browser, result, [401, 409], { timezoneId: ZONE });
  } catch (err) {
    return finish(err.message);
  }
  page.setDefaultTimeout(WAIT);
  // The browser's clock an hour behind the machine's (the server's); time still flows.
  await page.clock.install({ time: Date.now() - BEHIND_MS });

  const resp = await page.goto(`${opts.base}/`, { waitUntil: "domcontentloaded" });
  check(resp && resp.ok(), `GET / answered ${resp ? resp.status() : "nothing"}`);
  const csp = resp.headers()["content-security-policy"] ?? "";
  check(csp.includes("default-src 'none'"), `no CSP on /: ${csp}`);

  // 1. Not a token: the API's 401, in its words.
  await page.getByLabel("Token").fill("sct_" + "0".repeat(64));
  await page.getByRole("button", { name: "Sign in" }).click();
  const signInError = page.locator("#sign-in-form [data-error]");
  await signInError.filter({ hasText: "401" }).waitFor();
  result.refused_token = await signInError.textContent();
  check(/^401 unauthorized: \S/.test(result.refused_token), `401 shown as: ${result.refused_token}`);
  step("unknown token refused with the API's 401");

  // 2. The operator.
  await page.getByLabel("Token").fill(opts.operator);
  await page.getByLabel("Token").press("Enter");
  await page.locator("#who").filter({ hasText: "(operator)" }).waitFor();
  check(await page.evaluate(() => sessionStorage.getItem("slotcast.token")) === opts.operator, "token not in sessionStorage");
  const form = page.locator("#register-form");
  check(await form.isVisible(), "an operator sees no registration form");
  await form.getByLabel("Id", { exact: true }).fill(opts.server);
  await form.getByLabel("Name", { exact: true }).fill(`Console test ${opts.server}`);
  await form.getByLabel("Pre-roll (s)").fill("60");
  await form.getByLabel("Carrier 1 name").fill("carrier-a");
  await form.getByLabel("RTSP ingest URL").fill("rtsp://127.0.0.2:8554");
  await form.getByLabel("RTMP URL (optional)").fill("rtmp://127.0.0.2:1935");
  await form.getByRole("button", { name: "Register" }).click();
  const card = page.locator(`#server-list li[data-server="${opts.server}"]`);
  await card.waitFor();
  const cardText = await card.textContent();
  check(cardText.includes("carrier-a") && cardText.includes("RTSP, RTMP") && cardText.includes("60 s"), `card: ${cardText}`);
  step("operator registered the server and sees it listed with its carrier and rules");

  await form.getByLabel("Id", { exact: true }).fill(opts.server);
  await form.getByLabel("Name", { exact: true }).fill("again");
  await form.getByLabel("Carrier 1 name").fill("carrier-a");
  await form.getByLabel("RTSP ingest URL").fill("rtsp://127.0.0.2:8554");
  await form.getByRole("button", { name: "Register" }).click();
  const regError = form.locator("[data-error]");
  await regError.filter({ hasText: "409" }).waitFor();
  result.duplicate = await regError.textContent();
  step("registering it again shows the API's 409");

  const offset = page.locator("#clock-offset[data-offset-ms]");
  await offset.waitFor();
  result.offset_ms = Number(await offset.getAttribute("data-offset-ms"));
  result.offset_text = await offset.textContent();
  check(Math.abs(result.offset_ms - BEHIND_MS) < 5000, `measured ${result.offset_ms} ms, set ${BEHIND_MS}`);
  check(result.offset_text.includes("behind"), `offset shown as: ${result.offset_text}`);
  step("the browser's clock difference is measured from /v1/time");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Token").waitFor();
  check(await page.evaluate(() => sessionStorage.getItem("slotcast.token")) === null, "token kept after sign-out");
  step("signed out");

  // 3. The broadcaster.
  await signIn(page, opts.broadcaster, "broadcaster");
  await page.locator(`#server-list li[data-server="${opts.server}"]`).waitFor();
  check(!(await page.locator("#register-form").isVisible()), "a broadcaster sees the registration form");
  step("broadcaster signed in, without the registration form");

  const startMs = Math.ceil((Date.now() + 10 * 60000) / 60000) * 60000;
  const book = page.locator("#book-form");
  await book.getByLabel("Server").selectOption(opts.server);
  await book.getByLabel(/^Start/).fill(localInput(startMs, ZONE));
  await book.getByLabel("Duration (minutes)").fill("30");
  await book.getByLabel("Title").fill("Console test show");
  check((await page.locator("#title-hint").textContent()).includes("shown to viewers"), "no title hint");
  await book.getByRole("button", { name: "Book" }).click();
  const setting = page.locator("#setting");
  const keyOf = async () => {
    await setting.locator(".copyable").first().waitFor();
    const codes = setting.locator(".copyable code");
    return { id: await codes.nth(0).textContent(), key: await codes.nth(1).textContent() };
  };
  const first = await keyOf();
  check(/^[0-9a-f]{32}$/.test(first.key), `stream key shown as ${first.key}`);
  check(await setting.locator('[data-protocol="RTMP"] code', { hasText: "rtmp://127.0.0.2:1935/live" }).count() > 0, "no RTMP settings");
  const terminal = setting.locator('[data-protocol="slotcast"]');
  check(await terminal.getByRole("button", { name: /slotcast import/ }).count() > 0, "no Copy for slotcast import");
  const terminalText = await terminal.textContent();
  check(terminalText.includes("slotcast import") && terminalText.includes(`slotcast live ${first.id}`) && !terminalText.includes("rotate-key"), `the terminal's commands: ${terminalText}`);
  result.bookings.push({ id: first.id, start: new Date(startMs).toISOString() });
  step("booked: setting info shown with the stream key and publisher settings");
  await page.getByRole("button", { name: /I have stored it/ }).click();
  await setting.waitFor({ state: "hidden" });

  await book.getByRole("button", { name: "Book" }).click();
  const refusal = page.locator("#refusal");
  await refusal.waitFor();
  check((await refusal.locator("ul.conflicts li").count()) === 1, "the conflict is not listed");
  await page.locator("#timeline-view .slot.conflict").waitFor();
  const suggestion = refusal.locator("button.suggestion").first();
  const suggested = await suggestion.getAttribute("data-start");
  step("the overlapping booking is refused, its conflict listed and marked on the timeline");
  await suggestion.click();
  const second = await keyOf();
  check(second.id !== first.id && second.key !== first.key, "the suggestion did not book a new slot");
  result.bookings.push({ id: second.id, start: suggested });
  step("a suggestion booked");

  await page.locator(`#timeline-view .slot[data-reservation="${second.id}"]`).waitFor();
  check(await page.locator(`#timeline-view .slot[data-reservation="${first.id}"][data-status="accepted"]`).count() === 1, "first slot not on the timeline");
  const nowLine = page.locator("#timeline-view .now");
  const lineAt = Date.parse(await nowLine.getAttribute("data-server-now"));
  check(Math.abs(lineAt - Date.now()) < 10000, `now line at ${new Date(lineAt).toISOString()}, not on the server's clock`);
  step("the timeline shows both slots and now on the server's clock");
  if (opts.shots) {
    await page.locator("#timeline").screenshot({ path: join(opts.shots, "console-timeline.png") });
    await page.screenshot({ path: join(opts.shots, "console-booked.png"), fullPage: true });
  }
  await page.getByLabel("Span").selectOption("week");
  await page.locator("#timeline-form").getByRole("button", { name: "Show" }).click();
  await page.locator('#timeline-view[data-span="week"]').waitFor();
  check(await page.locator("#timeline-view .week-day").count() === 7, "the week has no seven days");
  check(await page.locator(`#timeline-view .slot[data-reservation="${first.id}"]`).count() === 1, "the first slot is not in the week");
  check(await page.locator("#timeline-view .now:visible").count() === 1, "not one now line in the week");
  step("the week view shows seven days, the slot and one now line");
  if (opts.shots) await page.locator("#timeline").screenshot({ path: join(opts.shots, "console-week.png") });
  await page.getByRole("button", { name: /I have stored it/ }).click();
  check(!(await page.content()).includes(second.key), "the key is still in the page");

  // 4. A reload: still signed in (the same tab), no key anywhere.
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.locator("#who").filter({ hasText: "(broadcaster)" }).waitFor();
  await page.locator(`#timeline-view .slot[data-reservation="${first.id}"]`).waitFor();
  const html = await page.content();
  check(!html.includes(first.key) && !html.includes(second.key), "a stream key is shown again");
  step("after a reload, still signed in and no key shown again");
  check((await page.locator("#reservations-since").textContent()).startsWith("Ending after"), "the list does not say which reservations it shows");

  // A camera to pull instead of a publisher: what will be pulled and when, no key to keep.
  await book.getByLabel("Server").selectOption(opts.server);
  await book.getByLabel(/^Start/).fill(localInput(startMs + 3 * 3600000, ZONE));
  await book.getByLabel("Title").fill("Console camera");
  await book.getByRole("radio", { name: /^A camera/ }).check();
  await book.getByLabel("Camera URL").fill("rtsp://10.20.0.5:554/stream1");
  await book.getByLabel("Camera user name").fill("viewer");
  await book.getByLabel("Camera password").fill("cam-secret-1");
  await book.getByLabel("Transport").selectOption("udp");
  await book.getByRole("button", { name: "Book" }).click();
  await setting.or(book.locator("[data-error]:not(:empty)")).first().waitFor();
  check(await setting.isVisible(), `the camera booking refused: ${await book.locator("[data-error]").textContent()}`);
  await setting.locator("code", { hasText: "rtsp://10.20.0.5:554/stream1" }).waitFor();
  const cameraText = await setting.textContent();
  check(cameraText.includes("nobody needs to publish") && cameraText.includes("(udp)"), `camera booking shown as: ${cameraText}`);
  check(!(await page.content()).includes("cam-secret-1"), "the camera's password is shown");
  result.camera = { id: await setting.locator("code").nth(1).textContent() };
  await setting.getByRole("button", { name: "Close" }).click();
  await book.getByRole("radio", { name: /^A publisher/ }).check();
  step("a camera booked: what will be pulled, and when");

  // 5. The reservations' pages: move, rotate, cancel, each asked again; the audit trail.
  const view = page.locator("#reservation-view");
  const openIt = async (id) => {
    await page.locator(`#reservation-list li[data-reservation="${id}"] button`, { hasText: "Open" }).click();
    await view.locator("code", { hasText: id }).first().waitFor();
  };
  const trail = async () => view.locator("ol.history li").evaluateAll((lis) => lis.map((li) => li.dataset.type));
  await openIt(first.id);
  await view.locator('ol.history li[data-type="ReservationAccepted"]').waitFor();
  const move = view.locator("form.reschedule");
  await move.getByLabel("New start").fill(localInput(Date.parse(suggested), ZONE));
  await move.getByRole("button", { name: "Reschedule" }).click();
  await view.getByRole("button", { name: "Yes, move it" }).click();
  const moveRefused = view.locator(".refusal");
  await moveRefused.waitFor();
  check((await moveRefused.textContent()).includes("the slot stays"), "no refusal shown for the move");
  step("moving the first slot onto the second is refused, the slot stays");

  await view.getByRole("button", { name: "Rotate key" }).click();
  await view.getByRole("button", { name: "No" }).click();
  check(await view.locator(".setting code").count() === 0, "rotated without a yes");
  await view.getByRole("button", { name: "Rotate key" }).click();
  await view.getByRole("button", { name: "Yes, rotate" }).click();
  await view.locator(".setting .copyable").first().waitFor();
  const rotated = await view.locator(".setting .copyable code").nth(1).textContent();
  check(/^[0-9a-f]{32}$/.test(rotated) && rotated !== first.key, `rotated key shown as ${rotated}`);
  await view.locator('ol.history li[data-type="StreamKeyRotated"]').waitFor();
  await view.getByRole("button", { name: /I have stored it/ }).click();
  step("the key rotated after a confirmation, the new one shown once");

  await openIt(second.id);
  await view.getByRole("button", { name: "Cancel reservation" }).click();
  await view.getByRole("button", { name: "Yes, cancel it" }).click();
  await view.locator('[data-status="cancelled"]').waitFor();
  const secondTrail = await trail();
  check(secondTrail[0] === "ReservationCancelled" && secondTrail.at(-1) === "ReservationAccepted", `trail: ${secondTrail}`);
  step("the second cancelled after a confirmation; its trail newest first");

  await openIt(first.id);
  await move.getByLabel("New start").fill(localInput(Date.parse(suggested), ZONE));
  await move.getByRole("button", { name: "Reschedule" }).click();
  await view.getByRole("button", { name: "Yes, move it" }).click();
  await view.locator('ol.history li[data-type="ReservationRescheduled"]').waitFor();
  result.first_trail = await trail();
  check(result.first_trail[0] === "ReservationRescheduled", `trail: ${result.first_trail}`);
  check(result.first_trail.includes("StreamKeyRotated") && result.first_trail.includes("RescheduleRejected"), `trail: ${result.first_trail}`);
  result.bookings[0].moved_to = suggested;
  step("the first moved into the freed slot; its trail tells the whole story");
  if (opts.shots) {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(opts.shots, "console-phone.png"), fullPage: true });
  }
  result.ok = result.console_errors.length === 0;
  return finish(result.ok ? undefined : "console errors");
}

main().catch((err) => finish(err instanceof Failed ? err.message : `${err.name}: ${err.message.split("\n")[0]}`));
