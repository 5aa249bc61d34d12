//! `slotcast live ID --input FILE|rtsp://camera`: goes live on the reserved slot with the
//! stored setting info, over the preset carrier, and prints what happens.
//!
//! Contract: the clock is measured against the API first (best of 4) when it answers, else
//! the profile's stored offset is used, and the run says which. Progress goes to stderr (a
//! one-line countdown on a terminal), the summary to stdout (`--json`: the summary object
//! only). Ctrl-C or SIGTERM stops cleanly (TEARDOWN, summary, exit 0); a refusal that
//! retrying cannot fix, or a source that fails, exits 1.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use chrono::Local;
use clap::Args;
use serde_json::json;
use slotcast_terminal::clock::{self, Offset};
use slotcast_terminal::live::{self, Ended, Event, Plan, Protocol, Summary, Target};
use slotcast_terminal::store::Setting;
use slotcast_terminal::{view, TerminalError};
use tokio_util::sync::CancellationToken;

use crate::terminal_ctx::Ctx;

#[derive(Args, Debug)]
pub struct LiveArgs {
    /// The reservation (its setting info must be stored here: booked from this terminal, or
    /// stored with `slotcast import` from the console's or the API's answer).
    pub id: String,
    /// What to send: an MP4 file (H.264 without B-frames, and/or AAC), sent in real time, or a
    /// camera's rtsp://[user:pass@]host/… URL, relayed as it comes.
    #[arg(long, value_name = "FILE|URL")]
    pub input: String,
    /// Play the file again from the start at its end, until the window closes.
    #[arg(long = "loop")]
    pub looped: bool,
    /// If the carrier cannot be reached, try the reservation's other carriers in turn.
    #[arg(long)]
    pub fallback: bool,
    /// Connect over this carrier this time (instead of the profile's preset).
    #[arg(long)]
    pub carrier: Option<String>,
    /// Publish by RTSP (every carrier takes it), by RTMP or by SRT (carriers registered with
    /// an `rtmp_url` or an `srt_url`; the setting info lists each carrier's `urls`).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Rtsp)]
    pub protocol: ProtocolArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolArg {
    Rtsp,
    Rtmp,
    Srt,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Rtsp => Protocol::Rtsp,
            ProtocolArg::Rtmp => Protocol::Rtmp,
            ProtocolArg::Srt => Protocol::Srt,
        }
    }
}

pub async fn live(ctx: &mut Ctx, args: LiveArgs) -> Result<(), TerminalError> {
    let setting = Setting::load(&ctx.dirs, &args.id)?.ok_or_else(|| {
        TerminalError::Usage(format!(
            "no setting info stored for {}: book from this terminal, or store the booking's \
             setting info with `slotcast import` (the console's \"Copy for slotcast import\", \
             or the API's answer), or run `slotcast rotate-key {}` for a new key stored here",
            args.id, args.id
        ))
    })?;
    let preset = args
        .carrier
        .clone()
        .or_else(|| ctx.profile().and_then(|p| p.carrier.clone()));
    let first = setting.carrier(preset.as_deref())?.clone();
    let protocol = Protocol::from(args.protocol);
    let url = protocol.address(&first).ok_or_else(|| {
        let takes: Vec<&str> = setting
            .carriers
            .iter()
            .filter(|c| protocol.address(c).is_some())
            .map(|c| c.carrier.as_str())
            .collect();
        TerminalError::Usage(format!(
            "carrier {} takes no {} (its setting info has no such URL); {}",
            first.carrier,
            protocol.name(),
            match takes.as_slice() {
                [] => "no carrier of this reservation does: publish by RTSP, or ask the \
                       operator to register the carriers' addresses for it"
                    .to_string(),
                some => format!("--carrier {} does", some.join(" or --carrier ")),
            }
        ))
    })?;
    let mut targets = vec![Target {
        carrier: first.carrier.clone(),
        url: url.to_string(),
    }];
    if args.fallback {
        targets.extend(
            setting
                .carriers
                .iter()
                .filter(|c| c.carrier != first.carrier)
                .filter_map(|c| {
                    Some(Target {
                        carrier: c.carrier.clone(),
                        url: protocol.address(c)?.to_string(),
                    })
                }),
        );
    }

    let scheme = args.input.get(..8).unwrap_or_default().to_ascii_lowercase();
    let source = if scheme.starts_with("rtsp://") || scheme.starts_with("rtsps://") {
        live::open_camera(&args.input).await
    } else {
        live::open_file(Path::new(&args.input), args.looped)
    }
    .map_err(TerminalError::Live)?;

    let offset = clock_offset(ctx).await;
    let plan = Plan {
        reservation_id: setting.id.clone(),
        targets,
        fallback: args.fallback,
        key: setting.stream_key.clone(),
        opens_at: setting.opens_at,
        closes_at: setting.closes_at,
        offset: offset.map(|(o, _)| o),
    };
    let mut out = Progress::new();
    out.line(&format!("Sending {}", source.describe));
    out.line(&match offset {
        Some((o, true)) => o.describe_with("measured just now"),
        Some((o, false)) => o.describe_with(&format!(
            "stored, measured {}",
            view::local(o.measured_at, &Local)
        )),
        None => "Clock not measured (the API did not answer and none is stored): timing by \
                 this terminal's own clock."
            .to_string(),
    });
    out.line(&format!(
        "Window {}, over {} by {}",
        view::span(setting.opens_at, setting.closes_at, &Local),
        first.carrier,
        protocol.name()
    ));

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stop.cancel();
    });
    let opens_at = setting.opens_at;
    let mut on_event = |event: Event| out.event(event, opens_at);
    let result = live::publish(plan, source, &mut on_event, shutdown).await;
    out.finish_countdown();
    let summary = result?;
    print_summary(ctx, &args.id, &summary);
    if summary.carriers.is_empty() && summary.ended == Ended::WindowClosed {
        return Err(TerminalError::Live(format!(
            "never went live: the window closed at {}",
            view::utc(setting.closes_at)
        )));
    }
    Ok(())
}

/// The clock offset: measured now when the API answers (`true`), else the stored one.
async fn clock_offset(ctx: &mut Ctx) -> Option<(Offset, bool)> {
    let measured = match ctx.client() {
        Ok(client) => client.measure(4).await.ok().map(|(offset, ..)| offset),
        Err(_) => None,
    };
    match measured {
        Some(offset) => {
            let _ = ctx.remember_offset(offset);
            Some((offset, true))
        }
        None => ctx.offset().map(|o| (o, false)),
    }
}

async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

fn print_summary(ctx: &Ctx, id: &str, s: &Summary) {
    if ctx.globals.json {
        ctx.print_json(&json!({
            "id": id,
            "ended": s.ended.to_string(),
            "skipped_frames": s.skipped,
            "bytes": s.bytes,
            "frames": s.frames,
            "packets": s.packets,
            "reconnects": s.reconnects,
            "carriers": s.carriers,
            "live_seconds": s.live_for.as_secs_f64(),
        }));
        return;
    }
    let over = if s.carriers.is_empty() {
        "never went live".to_string()
    } else {
        format!(
            "live {} over {}",
            human(s.live_for),
            s.carriers.join(" then ")
        )
    };
    let packets = match s.packets {
        0 => String::new(),
        n => format!(" ({n} packets)"),
    };
    println!(
        "Done: {}. Sent {} in {} frames{packets}, {over}; {} reconnect{}.",
        s.ended,
        bytes(s.bytes),
        s.frames,
        s.reconnects,
        if s.reconnects == 1 { "" } else { "s" }
    );
    if s.skipped > 0 {
        println!(
            "{} frame(s) of the input could not be sent and were left out.",
            s.skipped
        );
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{:.1} s", d.as_secs_f64()),
    }
}

/// Progress on stderr: a countdown that rewrites its line on a terminal, lines otherwise.
struct Progress {
    tty: bool,
    counting: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            counting: false,
        }
    }

    fn line(&mut self, text: &str) {
        self.finish_countdown();
        eprintln!("{text}");
    }

    fn finish_countdown(&mut self) {
        if self.counting {
            eprintln!();
            self.counting = false;
        }
    }

    fn event(&mut self, event: Event, opens_at: chrono::DateTime<chrono::Utc>) {
        match event {
            Event::Waiting { left } => {
                let secs = left.as_secs_f64().ceil() as u64;
                let text = format!(
                    "Opens in {:02}:{:02}:{:02} (at {})",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60,
                    view::local(opens_at, &Local)
                );
                if self.tty {
                    eprint!("\r{text}");
                    let _ = std::io::stderr().flush();
                    self.counting = true;
                } else if secs <= 5
                    || (secs <= 60 && secs.is_multiple_of(10))
                    || secs.is_multiple_of(60)
                {
                    eprintln!("{text}");
                }
            }
            Event::Connecting { carrier, url } => self.line(&format!("Connecting over {carrier} ({url})")),
            Event::Live { carrier, at } => self.line(&format!(
                "Live over {carrier} at {} server time ({}). Ctrl-C stops.",
                view::utc(at),
                describe_lateness(at - opens_at)
            )),
            Event::Unreachable { carrier, why, next } => self.line(&match next {
                Some(next) => format!("{carrier} cannot be reached ({why}); trying {next}"),
                None => format!(
                    "{carrier} cannot be reached ({why}); retrying (--fallback tries the other carriers)"
                ),
            }),
            Event::Refused {
                carrier,
                status,
                reason,
                retry_in,
            } => self.line(&format!(
                "{carrier}: {status} {reason}; asking again in {}",
                clock::human_ms(retry_in.as_secs_f64() * 1000.0)
            )),
            Event::Dropped { carrier, why } => {
                self.line(&format!("{carrier}: connection lost ({why}); reconnecting"))
            }
        }
    }
}

/// "12 ms after the window opened"
fn describe_lateness(late: chrono::Duration) -> String {
    let ms = late.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
    if ms >= 0.0 {
        format!("{} after the window opened", clock::human_ms(ms))
    } else {
        format!("{} before the window opened", clock::human_ms(-ms))
    }
}
