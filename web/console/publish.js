// Ready-made publisher settings from a booking's setting info: for each carrier and each
// protocol it takes, what to type into OBS Studio and an ffmpeg command, following
// docs/publishing.md (how each protocol passes the stream key); and for the terminal, the
// document `slotcast import` stores and the commands. Pure: the accepted booking in, entries
// and text out.

const quote = (s) => `'${s.replaceAll("'", "'\\''")}'`;
const FFMPEG_IN = "ffmpeg -re -i INPUT.mp4 -c:v libx264 -bf 0 -g 60 -c:a aac";

/**
 * One entry per carrier and protocol: `{carrier, protocol, fields: [[label, value], …]}`;
 * fields are OBS's (Server, Stream Key / Bearer Token) and an ffmpeg command where ffmpeg
 * can publish that way.
 */
export function publishers(accepted) {
  const id = accepted.id;
  const key = accepted.setting.stream_key;
  const out = [];
  for (const c of accepted.setting.carriers) {
    const urls = c.urls && c.urls.rtsp ? c.urls : { rtsp: c.url };
    out.push({
      carrier: c.carrier, protocol: "RTSP",
      note: "OBS Studio does not publish by RTSP; ffmpeg, GStreamer and cameras do.",
      fields: [["ffmpeg", `${FFMPEG_IN} -f rtsp -rtsp_transport tcp ${quote(`${urls.rtsp}?key=${key}`)}`]],
    });
    if (urls.rtmp) {
      const server = urls.rtmp.slice(0, urls.rtmp.length - id.length - 1);
      out.push({
        carrier: c.carrier, protocol: "RTMP",
        note: "OBS: Settings → Stream → Service “Custom…”.",
        fields: [
          ["OBS Server", server],
          ["OBS Stream Key", `${id}?key=${key}`],
          ["ffmpeg", `${FFMPEG_IN} -f flv ${quote(`${urls.rtmp}?key=${key}`)}`],
        ],
      });
    }
    if (urls.srt) {
      const target = `${urls.srt}?streamid=#!::r=${id},k=${key}`;
      out.push({
        carrier: c.carrier, protocol: "SRT",
        note: "OBS: Service “Custom…”, the whole address as Server, Stream Key left empty.",
        fields: [["OBS Server", target], ["ffmpeg", `${FFMPEG_IN} -f mpegts ${quote(target)}`]],
      });
    }
    if (urls.whip) {
      out.push({
        carrier: c.carrier, protocol: "WHIP",
        note: "OBS Studio 30+: Service “WHIP”. ffmpeg 5.1 cannot publish by WHIP.",
        fields: [["OBS Server", urls.whip], ["OBS Bearer Token", key]],
      });
    }
  }
  return out;
}

/**
 * What `slotcast import` reads: the acceptance as the API answered it (or, after a key
 * rotation, the reservation with the rotation's setting), and `api`, the address the console
 * is served from, which the terminal names if its own profile is another API's. Pretty JSON.
 */
export function importDocument(accepted, api) {
  return JSON.stringify({ ...accepted, api }, null, 2);
}

/**
 * The terminal's way, as `[label, command]`: `slotcast import` stores the document above
 * (pasted, then Ctrl-D; or saved to a file), as `slotcast book` would have; `slotcast live`
 * then publishes with it, this very key.
 */
export function terminalCommands(accepted) {
  const id = accepted.id;
  return [
    ["Paste, then Ctrl-D", "slotcast import"],
    ["Or from a file", `slotcast import ${id}.json`],
    ["Then", `slotcast live ${id} --input INPUT.mp4`],
  ];
}
