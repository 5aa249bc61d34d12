// Ready-made publisher settings from a booking's setting info: for each carrier and each
// protocol it takes, what to type into OBS Studio and an ffmpeg command, following
// docs/publishing.md (how each protocol passes the stream key). Pure: the accepted booking
// in, a list of entries out.

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
 * The terminal's way: `slotcast live` publishes from the setting info stored by the terminal
 * that booked, and this booking was made here; `slotcast rotate-key` stores a fresh key
 * there (the key shown here then stops working).
 */
export function terminalCommands(accepted) {
  const id = accepted.id;
  return [`slotcast rotate-key ${id}`, `slotcast live ${id} --input INPUT.mp4`];
}
