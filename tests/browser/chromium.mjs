// Debian's headless Chromium through playwright-core, as the browser scripts here drive it
// (watch.mjs, glass.mjs, console.mjs): a throwaway profile, flags for a machine with no way out, the page's
// console errors collected, and the one way such a script ends (ending()).
//
// Needs `npm ci --prefix web` (scripts/services does it) for playwright-core, and
// /usr/bin/chromium (or $CHROMIUM). Never downloads a browser. close() is safe at any point,
// also while launch() is still under way, and bounded: a wedged browser is left to
// Playwright, which kills it when the process exits.
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

export class Chromium {
  constructor() {
    this.context = null;
    this.userDataDir = null;
  }

  /// Launches Chromium with CHROMIUM_ARGS and `extraArgs` (and more of Playwright's context
  /// options in `context`, e.g. a `timezoneId`); its first page, whose console errors and
  /// uncaught exceptions go into `consoleErrors`.
  async launch({ extraArgs = [], consoleErrors = [], viewport, context = {} } = {}) {
    let chromium;
    try {
      // Resolved relative to this file, so it runs from any working directory.
      ({ chromium } = await import(
        new URL("../../web/node_modules/playwright-core/index.mjs", import.meta.url).href));
    } catch (err) {
      throw new Error(`playwright-core not installed (run scripts/services): ${err.message}`);
    }
    this.userDataDir = mkdtempSync(join(tmpdir(), "slotcast-chromium-"));
    this.context = await chromium.launchPersistentContext(this.userDataDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: [...CHROMIUM_ARGS, ...extraArgs],
      ...(viewport ? { viewport } : {}),
      timeout: 30000,
      ...context,
    });
    const page = this.context.pages()[0] ?? (await this.context.newPage());
    page.on("console", (msg) => {
      if (msg.type() === "error") consoleErrors.push(msg.text());
    });
    page.on("pageerror", (err) => consoleErrors.push(`uncaught: ${err.message}`));
    return page;
  }

  async close() {
    if (this.context) {
      await Promise.race([this.context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
    }
    if (this.userDataDir) rmSync(this.userDataDir, { recursive: true, force: true });
  }
}

/// The one way a script ends, returned as finish(reason): the browser closed, `result`
/// printed as one JSON line (with `reason` when given), exit 0 when result.ok, 1 otherwise.
/// The first call wins; after `limitMs` it is called with "hard timeout" whatever is going on.
export function ending(browser, result, limitMs) {
  let finished = false;
  const finish = async (reason) => {
    if (finished) return;
    finished = true;
    if (reason) result.reason = reason;
    await browser.close();
    console.log(JSON.stringify(result));
    process.exit(result.ok ? 0 : 1);
  };
  setTimeout(() => finish("hard timeout"), limitMs).unref();
  return finish;
}
