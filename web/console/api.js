// The API as the console calls it: the bearer token (kept in sessionStorage, so it lives as
// long as the tab and no longer), one request function, and the API's error body kept whole.
//
// Contract: `call` never invents an error text: a refusal carries the API's `status`, its
// `error.code` and `error.message` exactly as sent; only a network failure or an answer that
// is not JSON is described by the console itself (and says so).

const TOKEN_KEY = "slotcast.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An answer that is not 2xx. `body` is the API's JSON (null if it sent none). */
export class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = body && body.error;
    super(e ? e.message : fallback);
    this.status = status;
    this.body = body;
    this.code = e ? e.code : null;
    this.retryAfter = e ? e.retry_after_s ?? null : null;
  }

  /** One line, the API's own words: `409 server_exists: server already registered`. */
  describe() {
    if (this.status === 0) return this.message;
    const code = this.code ? ` ${this.code}` : "";
    const retry = this.retryAfter != null ? ` (retry in ${this.retryAfter} s)` : "";
    return `${this.status}${code}: ${this.message}${retry}`;
  }
}

/**
 * Sends one request; resolves to `{status, body}` for a 2xx, rejects with an ApiError
 * otherwise. `accept` lists other statuses answered as data (a booking's 409 refusal is an
 * answer to show, not an error).
 */
export async function call(method, path, { body, headers = {}, accept = [], auth = true } = {}) {
  const h = { Accept: "application/json", ...headers };
  const t = token.get();
  if (auth && t) h.Authorization = `Bearer ${t}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, null, `The API could not be reached (${err.message}).`);
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (resp.ok || accept.includes(resp.status)) return { status: resp.status, body: json };
  throw new ApiError(resp.status, json, `${resp.statusText || "error"} (the answer was not the API's JSON)`);
}
