// Debian's Chromium, headless, through playwright-core (web/node_modules): the one place the
// page tests launch and close it.
//
// Contract: never downloads a browser (/usr/bin/chromium, or $CHROMIUM); each launch gets a
// profile directory of its own, removed by `close`; `close` gives a wedged browser 5 s and
// then leaves it to Playwright (which kills it when the process exits).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  // This machine's network is closed: without these Chromium keeps calling out to Google.
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  // WebRTC to a streamer on loopback (real time): Chromium leaves loopback out otherwise.
  "--allow-loopback-in-peer-connection",
];

/**
 * Launches Chromium with `options` (Playwright's, for a persistent context) on top of ours;
 * resolves to `{context, page, close}`. Rejects with a message naming the fix when
 * playwright-core is not installed.
 */
export async function launch(options = {}) {
  let chromium;
  try {
    // Resolved relative to this file, so it runs from any working directory.
    ({ chromium } = await import(
      new URL("../../web/node_modules/playwright-core/index.mjs", import.meta.url).href));
  } catch (err) {
    throw new Error(`playwright-core not installed (run scripts/services): ${err.message}`);
  }
  const dir = mkdtempSync(join(tmpdir(), "slotcast-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(dir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30000,
      ...options,
    });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const page = context.pages()[0] ?? (await context.newPage());
  const close = async () => {
    await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
    rmSync(dir, { recursive: true, force: true });
  };
  return { context, page, close };
}

/**
 * A run's one way out: `finish(reason)` closes the browser given to `started` (if any),
 * prints `result` as one JSON line (with `reason`) and exits 0 when `result.ok`, 1 otherwise;
 * it also runs by itself after `limitMs`, as "hard timeout". Only the first call counts.
 */
export function runner(result, limitMs) {
  let browser = null;
  let finished = false;
  const finish = async (reason) => {
    if (finished) return;
    finished = true;
    if (reason) result.reason = reason;
    if (browser) await browser.close();
    console.log(JSON.stringify(result));
    process.exit(result.ok ? 0 : 1);
  };
  setTimeout(() => finish("hard timeout"), limitMs).unref();
  return { finish, started: (b) => { browser = b; } };
}
