// The console's pure parts (web/console/clock.js, timeline.js, publish.js), in Node:
//   node --test tests/browser/
import { test } from "node:test";
import assert from "node:assert/strict";
import { best, exchange, measure, parseMs } from "../../web/console/clock.js";
import { layout, nowAt, weekDays } from "../../web/console/timeline.js";
import { importDocument, publishers, terminalCommands } from "../../web/console/publish.js";

test("parseMs keeps microseconds", () => {
  const frac = parseMs("2030-01-01T00:00:00.123456Z") - Date.parse("2030-01-01T00:00:00Z");
  assert.ok(Math.abs(frac - 123.456) < 1e-3, `${frac}`);
  assert.equal(parseMs("2030-01-01T09:00:00+09:00"), Date.parse("2030-01-01T00:00:00Z"));
  assert.ok(Number.isNaN(parseMs("yesterday")));
});

test("an exchange's offset and delay are NTP's", () => {
  // The server 1000 ms ahead; 10 ms each way; 2 ms inside the server.
  assert.deepEqual(exchange(0, 1010, 1012, 22), { offset: 1000, delay: 20 });
  assert.equal(best([{ delay: 5, offset: 1 }, { delay: 2, offset: 3 }, { delay: 9, offset: 0 }]).offset, 3);
  assert.equal(best([]), null);
});

test("measure keeps the exchange with the least round trip", async () => {
  // The browser's clock 500 ms behind; the second exchange's answer waits 40 ms on the way back.
  const delays = [[5, 5], [5, 45], [1, 1]];
  let clock = 0;
  let i = 0;
  const iso = (ms) => new Date(ms).toISOString();
  const fetchTime = async () => {
    const [up, down] = delays[i++];
    clock += up;
    const t = clock + 500;
    clock += down;
    return { t_receive: iso(t), t_transmit: iso(t) };
  };
  const m = await measure(fetchTime, 3, () => clock);
  assert.equal(m.samples, 3);
  assert.equal(m.delay, 2);
  assert.equal(m.offset, 500);
});

test("layout widens each slot by pre-roll and grace and clips to the day", () => {
  const from = Date.parse("2030-01-01T00:00:00Z");
  const to = from + 24 * 3600e3;
  const slots = [
    { reservation_id: "a", status: "accepted", start: "2030-01-01T06:00:00.000Z", end: "2030-01-01T12:00:00.000Z" },
    { reservation_id: "b", status: "live", start: "2030-01-01T23:00:00.000Z", end: "2030-01-02T02:00:00.000Z" },
    { reservation_id: "c", status: "ended", start: "2030-01-02T06:00:00.000Z", end: "2030-01-02T07:00:00.000Z" },
  ];
  const out = layout(slots, from, to, 3600, 1800);
  assert.deepEqual(out.map((s) => s.reservation_id), ["a", "b"]);
  assert.deepEqual(out[0].slot, { left: 25, width: 25 });
  assert.deepEqual(out[0].window, { left: 20.83, width: 31.25 });
  assert.deepEqual(out[1].slot, { left: 95.83, width: 4.17 });
  assert.equal(nowAt(from + 12 * 3600e3, from, to), 50);
  assert.equal(nowAt(to, from, to), null);
});

test("layout draws a slot's window as it was booked, whatever today's rules say", () => {
  const from = Date.parse("2030-01-01T00:00:00Z");
  const to = from + 24 * 3600e3;
  const slots = [{
    reservation_id: "a", status: "accepted", start: "2030-01-01T06:00:00.000Z", end: "2030-01-01T12:00:00.000Z",
    opens_at: "2030-01-01T05:30:00.000Z", closes_at: "2030-01-01T12:00:10.000Z",
  }];
  const [a] = layout(slots, from, to, 3600, 1800);
  assert.equal(a.opens, Date.parse("2030-01-01T05:30:00Z"));
  assert.equal(a.closes, Date.parse("2030-01-01T12:00:10Z"));
  assert.deepEqual(a.window, { left: 22.92, width: 27.09 });
});

test("publisher settings follow docs/publishing.md for each protocol a carrier takes", () => {
  const id = "0190aaaa";
  const key = "k".repeat(32);
  const accepted = {
    id,
    setting: {
      stream_key: key,
      carriers: [{
        carrier: "a", url: `rtsp://h:8554/live/${id}`,
        urls: { rtsp: `rtsp://h:8554/live/${id}`, rtmp: `rtmp://h:1935/live/${id}`, srt: "srt://h:9000", whip: `http://h:8889/whip/${id}` },
      }, { carrier: "b", url: `rtsp://g:8554/live/${id}` }],
    },
  };
  const p = publishers(accepted);
  assert.deepEqual(p.map((e) => `${e.carrier} ${e.protocol}`), ["a RTSP", "a RTMP", "a SRT", "a WHIP", "b RTSP"]);
  const rtmp = Object.fromEntries(p[1].fields);
  assert.equal(rtmp["OBS Server"], "rtmp://h:1935/live");
  assert.equal(rtmp["OBS Stream Key"], `${id}?key=${key}`);
  assert.match(rtmp.ffmpeg, new RegExp(`-f flv 'rtmp://h:1935/live/${id}\\?key=${key}'$`));
  assert.equal(Object.fromEntries(p[2].fields)["OBS Server"], `srt://h:9000?streamid=#!::r=${id},k=${key}`);
  assert.equal(Object.fromEntries(p[3].fields)["OBS Bearer Token"], key);
  assert.match(Object.fromEntries(p[4].fields).ffmpeg, new RegExp(`'rtsp://g:8554/live/${id}\\?key=${key}'$`));
});

test("the terminal gets the acceptance whole to import, then goes live with that key", () => {
  const id = "0190aaaa";
  const key = "k".repeat(32);
  // The API's answer to POST /v1/reservations, as the console received it.
  const accepted = {
    id, status: "accepted", server_id: "s1", title: "Evening",
    start: "2030-01-01T12:00:00.000Z", end: "2030-01-01T12:30:00.000Z",
    setting: {
      stream_key: key, opens_at: "2030-01-01T11:59:00.000Z", closes_at: "2030-01-01T12:31:00.000Z",
      carriers: [{ carrier: "a", url: `rtsp://h:8554/live/${id}`, urls: { rtsp: `rtsp://h:8554/live/${id}` } }],
    },
    server_time: { now: "2030-01-01T11:00:00.000Z" },
  };
  const doc = JSON.parse(importDocument(accepted, "http://127.0.0.1:8080"));
  assert.deepEqual(doc, { ...accepted, api: "http://127.0.0.1:8080" }, "the answer whole, and where it came from");
  assert.equal(doc.setting.stream_key, key);
  assert.equal(accepted.api, undefined, "the answer itself is left as it was");
  const commands = terminalCommands(accepted);
  assert.deepEqual(commands.map(([, c]) => c), [
    "slotcast import",
    `slotcast import ${id}.json`,
    `slotcast live ${id} --input INPUT.mp4`,
  ]);
  assert.equal(commands[0][0], "Paste, then Ctrl-D");
  for (const [, c] of commands) {
    assert.ok(!c.includes(key), `the key on a command line: ${c}`);
    assert.ok(!c.includes("rotate-key"), `a rotation advised: ${c}`);
  }
});

test("a week is Monday to Sunday in the local zone, 23 or 25 h days included", () => {
  process.env.TZ = "Europe/Berlin";
  // Wednesday 2030-03-27; the clocks go forward on Sunday 2030-03-31.
  const days = weekDays(Date.parse("2030-03-27T10:00:00+01:00"));
  assert.equal(days.length, 7);
  assert.equal(new Date(days[0].start).toISOString(), "2030-03-24T23:00:00.000Z");
  assert.equal(days[6].end - days[6].start, 23 * 3600e3);
  assert.equal(new Date(days[6].end).toISOString(), "2030-03-31T22:00:00.000Z");
  for (let i = 1; i < 7; i++) assert.equal(days[i].start, days[i - 1].end);
});
