#!/usr/bin/env node
// The page's reader of the clock code `slotcast-bench glass` burns into each frame (written by
// bench/src/glass/code.rs, whose comment defines the code): 48 black or white blocks, 16
// columns by 3 rows of 32 px from (64, 32) on a 640x360 picture, read as fractions of the
// picture; bit 47 first, white is 1; the time in ms modulo 2^40, then CRC-8 (polynomial 0x07,
// initial 0xFF) of its five bytes.
//
//   import { readCode, latencyMs } from "./glass-code.mjs";
//   node tests/browser/glass-code.mjs <rgba-file> <width> <height>
//
// The command reads raw RGBA frames of width x height one after the other (as ffmpeg writes
// them with -f rawvideo -pix_fmt rgba) and prints one line per frame: the time it carries, or
// "unreadable". bench/src/glass/code.rs's tests run it on frames Rust rendered and x264
// coded, to prove both sides read the same code.
//
// readCode and latencyMs are self-contained (no reference outside their bodies) on purpose:
// glass.mjs puts their source into the page.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

/// The time (ms modulo 2^40) in an RGBA picture of width x height, or null when a block is
/// neither clearly black nor clearly white, or the check fails.
export function readCode(rgba, width, height) {
  const W = 640, H = 360, BLOCK = 32, COLUMNS = 16, ROWS = 3, LEFT = 64, TOP = 32;
  const BELOW = 96, ABOVE = 160; // a block's mean (R+G+B)/3: under is 0, over is 1
  const sx = width / W, sy = height / H, quarter = BLOCK / 4;
  const bits = [];
  for (let bit = 0; bit < COLUMNS * ROWS; bit++) {
    const x0 = LEFT + (bit % COLUMNS) * BLOCK, y0 = TOP + Math.floor(bit / COLUMNS) * BLOCK;
    // The middle half of the block, in the picture's own pixels (Math.round as Rust's round
    // for these positive halves).
    const xs = Math.round((x0 + quarter) * sx), xe = Math.max(Math.round((x0 + 3 * quarter) * sx), xs + 1);
    const ys = Math.round((y0 + quarter) * sy), ye = Math.max(Math.round((y0 + 3 * quarter) * sy), ys + 1);
    if (xe > width || ye > height) return null;
    let sum = 0, count = 0;
    for (let y = ys; y < ye; y++) {
      for (let x = xs; x < xe; x++) {
        const i = (y * width + x) * 4;
        sum += (rgba[i] + rgba[i + 1] + rgba[i + 2]) / 3;
        count++;
      }
    }
    const mean = sum / count;
    if (mean > ABOVE) bits.push(1);
    else if (mean < BELOW) bits.push(0);
    else return null;
  }
  // 40 bits of time, then 8 of check; doubles hold 2^40 exactly (bitwise operators would
  // cut at 32 bits).
  let time = 0;
  for (let k = 0; k < 40; k++) time = time * 2 + bits[k];
  let check = 0;
  for (let k = 40; k < 48; k++) check = check * 2 + bits[k];
  let crc = 0xff;
  for (let k = 4; k >= 0; k--) {
    crc ^= Math.floor(time / 2 ** (8 * k)) % 256;
    for (let j = 0; j < 8; j++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc === check ? time : null;
}

/// How long before `nowMs` (a full server-clock time in ms) the frame carrying `code` (ms
/// modulo 2^40) was stamped: the difference taken modulo 2^40 into [-2^39, 2^39).
export function latencyMs(code, nowMs) {
  const M = 2 ** 40;
  let d = (nowMs - code) % M;
  if (d < 0) d += M;
  return d >= M / 2 ? d - M : d;
}

function main(argv) {
  const [file, w, h] = argv;
  const width = Number(w), height = Number(h);
  if (!file || !(width > 0) || !(height > 0)) {
    console.error("usage: node tests/browser/glass-code.mjs <rgba-file> <width> <height>");
    process.exit(2);
  }
  const data = readFileSync(file);
  const size = width * height * 4;
  const lines = [];
  for (let at = 0; at + size <= data.length; at += size) {
    const time = readCode(data.subarray(at, at + size), width, height);
    lines.push(time === null ? "unreadable" : String(time));
  }
  console.log(lines.join("\n"));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv.slice(2));
