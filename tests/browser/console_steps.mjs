// What the console's browser runs share (console.mjs, console_story.mjs): their arguments,
// a failed check, the browser and its page, the datetime-local text of an instant in a zone,
// and signing in.

/** A check that did not hold: the run ends with its words as the reason. */
export class Failed extends Error {}

export function check(cond, what) {
  if (!cond) throw new Failed(what);
}

/**
 * `<api-base-url>` and `--name VALUE` options: `names` maps each option to its key in the
 * result; those in `required` must be given. Exits 2 with `usage` on anything else.
 */
export function parseArgs(argv, names, required, usage) {
  const o = { base: null };
  const fail = (message) => {
    console.error(`${message}\n${usage}`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a in names) o[names[a]] = argv[++i] ?? fail(`${a} needs a value`);
    else if (a.startsWith("-") || o.base !== null) fail(`unexpected argument: ${a}`);
    else o.base = a.replace(/\/$/, "");
  }
  if (!o.base || required.some((k) => !o[k])) fail("missing arguments");
  return o;
}

/** `YYYY-MM-DDTHH:MM` of `ms` in `zone`, as a datetime-local input takes it. */
export function localInput(ms, zone) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

/** Signs in with `token` and waits for the role the header names ("operator", "broadcaster"). */
export async function signIn(page, token, role) {
  await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#who").filter({ hasText: `(${role})` }).waitFor();
}

/**
 * Launches `browser` (a Chromium of chromium.mjs) and gives its page, 1100x900, with `context`
 * options. The page's errors go into `result.console_errors`, but for Chromium's "failed to
 * load" lines of the `statuses` the run asks for on purpose (a refusal to show, a 404 a page
 * retries).
 */
export async function consolePage(browser, result, statuses, context = {}) {
  const page = await browser.launch({ consoleErrors: [], viewport: { width: 1100, height: 900 }, context });
  const expected = new RegExp(`^Failed to load resource: the server responded with a status of (${statuses.join("|")}) `);
  page.on("console", (m) => {
    if (m.type() === "error" && !expected.test(m.text())) result.console_errors.push(m.text());
  });
  page.on("pageerror", (e) => result.console_errors.push(`uncaught: ${e.message}`));
  return page;
}
