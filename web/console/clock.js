// The browser's clock against the server's, measured NTP-style on `GET /v1/time` as the
// terminal does (terminal/src/clock.rs): t1 before sending, t4 on the answer, t2 / t3 the
// server's `t_receive` / `t_transmit`; offset θ = ((t2 − t1) + (t3 − t4)) / 2 (add it to the
// browser's clock to read the server's), delay δ = (t4 − t1) − (t3 − t2). Of several
// exchanges the one with the least delay is kept: its offset is good to within δ / 2.
//
// Pure apart from `measure`, which is given the request to make and the clock to read.

/** Milliseconds since the epoch of an RFC 3339 time, keeping its microseconds. */
export function parseMs(text) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) return NaN;
  const whole = Date.parse(`${m[1]}${m[3]}`);
  const frac = m[2] ? Number(`0.${m[2]}`) * 1000 : 0;
  return whole + frac;
}

/** One exchange's offset and delay, in ms. */
export function exchange(t1, t2, t3, t4) {
  return { offset: (t2 - t1 + (t3 - t4)) / 2, delay: t4 - t1 - (t3 - t2) };
}

/** The exchange with the least delay (null for none). */
export function best(samples) {
  return samples.reduce((a, b) => (a === null || b.delay < a.delay ? b : a), null);
}

/**
 * `samples` exchanges, one after another; resolves to the best with `samples` (how many were
 * made) and the last `server_time` (its clock state). `fetchTime` resolves to `/v1/time`'s
 * body; `now` reads the browser's clock in ms.
 */
export async function measure(fetchTime, samples = 8, now = () => Date.now()) {
  const got = [];
  let last = null;
  for (let i = 0; i < samples; i++) {
    const t1 = now();
    const time = await fetchTime();
    const t4 = now();
    last = time;
    got.push(exchange(t1, parseMs(time.t_receive), parseMs(time.t_transmit), t4));
  }
  return { ...best(got), samples: got.length, server: last };
}

/** "1.234 s behind the server's (±0.4 ms)": how the browser's clock stands. */
export function describe(offset, delay) {
  const abs = Math.abs(offset);
  const amount = abs >= 1000 ? `${(abs / 1000).toFixed(3)} s` : `${abs.toFixed(1)} ms`;
  const side = offset >= 0 ? "behind" : "ahead of";
  return `${amount} ${side} the server's (to within ±${(delay / 2).toFixed(1)} ms)`;
}
