//! Booking and the reservation commands of the broadcaster's terminal.
//!
//! Contract: `book` sends one `Idempotency-Key` for all its attempts, so a retry after a
//! network error, or after a 503 (waiting its `Retry-After`), never books twice; on
//! acceptance it stores the setting info (one file per reservation, mode 0600) and prints the
//! clock difference measured from that very answer.
//! A refusal prints the reason, the conflicts and the suggested windows, and exits 1.

use chrono::{DateTime, Duration, Local, NaiveDate, TimeZone, Utc};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slotcast_terminal::camera_url::CameraUrl;
use slotcast_terminal::client::{error_of, time_of, Client};
use slotcast_terminal::clock::Sample;
use slotcast_terminal::store::{CarrierUrl, Setting};
use slotcast_terminal::view::{self, DaySlot};
use slotcast_terminal::{when, TerminalError};

use crate::terminal_cmd::{with_sync, Command, Ctx};

/// Attempts of one booking (the same Idempotency-Key each time).
const BOOK_ATTEMPTS: u32 = 3;

#[derive(Args)]
pub struct BookArgs {
    /// The distribution server (`slotcast servers` lists them).
    #[arg(long)]
    server: String,
    #[command(flatten)]
    window: WindowArgs,
    /// A title for the slot, shown in schedules (at most 200 characters).
    #[arg(long)]
    title: Option<String>,
    /// Book a camera for the server to pull over the dedicated network, instead of publishing
    /// yourself: rtsp://[USER[:PASSWORD]@]HOST[:PORT]/PATH. The login goes to the server once,
    /// is stored sealed, and is never shown again.
    #[arg(long, value_name = "URL")]
    pull: Option<String>,
    /// How the server asks the camera for media: tcp (interleaved, the default) or udp.
    #[arg(long, value_name = "tcp|udp", requires = "pull", value_parser = ["tcp", "udp"])]
    pull_transport: Option<String>,
    /// The camera's password, if not in the URL. Better given by the environment variable,
    /// which other users cannot read from the process list.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SLOTCAST_CAMERA_PASSWORD",
        hide_env_values = true,
        requires = "pull"
    )]
    pull_password: Option<String>,
}

/// Written by hand: a camera URL may hold a password, and `--pull-password` is one.
impl std::fmt::Debug for BookArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pull = self
            .pull
            .as_deref()
            .map(|u| CameraUrl::parse(u).map_or_else(|_| "(unreadable)".into(), |c| c.shown));
        f.debug_struct("BookArgs")
            .field("server", &self.server)
            .field("window", &self.window)
            .field("title", &self.title)
            .field("pull", &pull)
            .field("pull_transport", &self.pull_transport)
            .field("pull_password", &self.pull_password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl BookArgs {
    /// The `source` of the booking, for `--pull`.
    fn source(&self) -> Result<Option<Value>, TerminalError> {
        let Some(text) = &self.pull else {
            return Ok(None);
        };
        let camera = CameraUrl::parse(text).map_err(TerminalError::Usage)?;
        let (username, password) = match (camera.login, &self.pull_password) {
            (Some((user, password)), from_env) if password.is_empty() => {
                (Some(user), from_env.clone())
            }
            (Some((user, password)), _) => (Some(user), Some(password)),
            (None, Some(_)) => {
                return Err(TerminalError::Usage(
                    "a camera password needs a user name: put it in the URL \
                     (rtsp://USER@host/path)"
                        .into(),
                ))
            }
            (None, None) => (None, None),
        };
        Ok(Some(json!({
            "pull_url": camera.url.as_str(),
            "username": username,
            "password": password,
            "transport": self.pull_transport,
        })))
    }
}

#[derive(Args, Debug)]
pub struct RescheduleArgs {
    id: String,
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Args, Debug)]
pub struct WindowArgs {
    /// RFC 3339 (2030-01-01T12:00:00Z), local wall time (2030-01-01 21:00, or 21:00 for its
    /// next occurrence), or relative to the server's now (+5m).
    #[arg(long)]
    start: String,
    /// e.g. 30m, 1h30m.
    #[arg(long, required_unless_present = "end", conflicts_with = "end")]
    duration: Option<String>,
    /// A TIME, as --start.
    #[arg(long)]
    end: Option<String>,
}

impl WindowArgs {
    fn resolve(&self, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), TerminalError> {
        let usage = |e: String| TerminalError::Usage(e);
        let start = when::parse_time(&self.start, now, &Local).map_err(usage)?;
        let end = match (&self.duration, &self.end) {
            (Some(d), _) => start + when::parse_duration(d).map_err(usage)?,
            (None, Some(e)) => when::parse_time(e, now, &Local).map_err(usage)?,
            (None, None) => return Err(usage("give --duration or --end".into())),
        };
        if end <= start {
            return Err(usage("the slot must end after it starts".into()));
        }
        Ok((start, end))
    }
}

fn ms_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

pub async fn run(command: Command, ctx: &mut Ctx) -> Result<(), TerminalError> {
    let client = ctx.client()?;
    match command {
        Command::Book(args) => book(ctx, &client, args).await,
        Command::Reservations { status, server } => {
            reservations(ctx, &client, status, server).await
        }
        Command::Show { id } => show(ctx, &client, &id).await,
        Command::Cancel { id } => {
            let answer = client
                .call(
                    Method::POST,
                    &format!("/v1/reservations/{id}/cancel"),
                    Some(&json!({})),
                )
                .await?;
            if ctx.globals.json {
                ctx.print_json(&answer);
            } else {
                println!("Cancelled {id}.");
            }
            Ok(())
        }
        Command::Reschedule(args) => reschedule(ctx, &client, args).await,
        Command::RotateKey { id } => rotate_key(ctx, &client, &id).await,
        Command::History { id } => history(ctx, &client, &id).await,
        Command::Servers => servers(ctx, &client).await,
        Command::Schedule { server, date } => schedule(ctx, &client, &server, date).await,
        Command::Login
        | Command::Time { .. }
        | Command::Carrier { .. }
        | Command::Live(_)
        | Command::Completions { .. } => Ok(()),
    }
}

async fn book(ctx: &mut Ctx, client: &Client, args: BookArgs) -> Result<(), TerminalError> {
    let (start, end) = args.window.resolve(ctx.server_now())?;
    let mut body = json!({
        "server_id": args.server,
        "start": ms_time(start),
        "end": ms_time(end),
        "title": args.title,
    });
    if let Some(source) = args.source()? {
        body["source"] = source;
    }
    let key = uuid::Uuid::new_v4().to_string();
    let mut attempt = 0;
    let (answer, t1, t4) = loop {
        attempt += 1;
        let t1 = Utc::now();
        match client
            .send(Method::POST, "/v1/reservations", Some(&body), Some(&key))
            .await
        {
            // The server cannot answer now (503 `unavailable`): nothing was booked, or the
            // key's answer is stored and a retry gets it. Either way the same key is safe.
            Ok(answer)
                if answer.status == StatusCode::SERVICE_UNAVAILABLE && attempt < BOOK_ATTEMPTS =>
            {
                let after = answer.body["error"]["retry_after_s"]
                    .as_u64()
                    .unwrap_or(1)
                    .clamp(1, 30);
                eprintln!(
                    "the server cannot answer now; retrying in {after} s with the same \
                     Idempotency-Key ({attempt}/{BOOK_ATTEMPTS})"
                );
                tokio::time::sleep(std::time::Duration::from_secs(after)).await;
            }
            Ok(answer) => break (answer, t1, Utc::now()),
            Err(err @ TerminalError::Unreachable { .. }) if attempt < BOOK_ATTEMPTS => {
                eprintln!(
                    "{err}; retrying with the same Idempotency-Key ({attempt}/{BOOK_ATTEMPTS})"
                );
                tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)))
                    .await;
            }
            Err(err) => return Err(err),
        }
    };
    let accepted = answer.status == StatusCode::CREATED;
    let refused = answer.status == StatusCode::CONFLICT && answer.body["status"] == "rejected";
    if !accepted && !refused {
        return Err(error_of(&answer));
    }
    let b = &answer.body;
    // The time-difference notice, from this very answer.
    let offset = match (
        time_of(&b["server_time"]["t_receive"]),
        time_of(&b["server_time"]["t_transmit"]),
    ) {
        (Some(t2), Some(t3)) => Some(Sample { t1, t2, t3, t4 }.offset()),
        _ => None,
    };
    if let Some(offset) = offset {
        ctx.remember_offset(offset)?;
    }
    if refused {
        return Err(refusal(ctx, b, "booking refused", ""));
    }
    let setting = setting_of(b, client.api())?;
    let path = setting.save(&ctx.dirs)?;
    if ctx.globals.json {
        let mut out = b.clone();
        out["stored_at"] = json!(path);
        out["clock"] = json!(offset);
        ctx.print_json(&out);
        return Ok(());
    }
    let now = ctx.server_now();
    println!(
        "Booked {} on {} ({}).",
        setting.id,
        setting.server_id,
        text(&b["status"])
    );
    print_setting(&setting, ctx, now);
    if let Some(source) = b["source"].as_object() {
        let login = if source["login"] == true {
            ", login stored sealed"
        } else {
            ""
        };
        println!(
            "  camera    {} (the server pulls it over {} while the window is open{login})",
            text(&source["pull_url"]),
            text(&source["transport"])
        );
    }
    if let Some(offset) = offset {
        println!("  clock     {}", with_sync(&offset, &b["server_time"]));
    }
    println!("  stored    {} (mode 0600)", path.display());
    Ok(())
}

/// Shows a 409 refusal (`--json`: as the API sent it) and returns its error (exit 1).
fn refusal(ctx: &Ctx, b: &Value, what: &str, more: &str) -> TerminalError {
    if ctx.globals.json {
        ctx.print_json(b);
    } else {
        println!(
            "Refused: {} ({}).{more}",
            text(&b["message"]),
            text(&b["reason"])
        );
        print_windows("Conflicts with", &b["conflicts"]);
        print_windows("Free windows of that length nearby", &b["suggestions"]);
    }
    TerminalError::Api {
        status: 409,
        code: text(&b["reason"]),
        message: what.into(),
    }
}

fn print_windows(what: &str, windows: &Value) {
    let Some(list) = windows.as_array().filter(|l| !l.is_empty()) else {
        return;
    };
    println!("{what}:");
    for w in list {
        if let (Some(s), Some(e)) = (time_of(&w["start"]), time_of(&w["end"])) {
            println!("  {}", view::span(s, e, &Local));
        }
    }
}

fn print_setting(setting: &Setting, ctx: &Ctx, now: DateTime<Utc>) {
    println!(
        "  slot      {}",
        view::span(setting.start, setting.end, &Local)
    );
    println!(
        "  ingest    opens {} ({}), closes {}",
        view::local(setting.opens_at, &Local),
        view::relative(setting.opens_at, now),
        view::local(setting.closes_at, &Local)
    );
    let preset = ctx.profile().and_then(|p| p.carrier.clone());
    let chosen = setting
        .carrier(preset.as_deref())
        .ok()
        .map(|c| c.carrier.clone());
    for (i, c) in setting.carriers.iter().enumerate() {
        let label = if i == 0 { "carriers" } else { "" };
        let mark = if Some(&c.carrier) == chosen.as_ref() {
            "  (live connects here)"
        } else {
            ""
        };
        println!("  {label:<9} {} {}{mark}", c.carrier, c.url);
    }
}

/// The setting info of an acceptance (or a rotation, with `reservation` for the rest).
fn setting_of(b: &Value, api: &str) -> Result<Setting, TerminalError> {
    let missing = |what: &str| TerminalError::Local(format!("the API's answer has no {what}"));
    let s = &b["setting"];
    Ok(Setting {
        id: b["id"].as_str().ok_or_else(|| missing("id"))?.to_string(),
        server_id: text(&b["server_id"]),
        title: b["title"].as_str().map(str::to_string),
        start: time_of(&b["start"]).ok_or_else(|| missing("start"))?,
        end: time_of(&b["end"]).ok_or_else(|| missing("end"))?,
        opens_at: time_of(&s["opens_at"]).ok_or_else(|| missing("opens_at"))?,
        closes_at: time_of(&s["closes_at"]).ok_or_else(|| missing("closes_at"))?,
        stream_key: s["stream_key"]
            .as_str()
            .ok_or_else(|| missing("stream_key"))?
            .to_string(),
        carriers: s["carriers"]
            .as_array()
            .ok_or_else(|| missing("carriers"))?
            .iter()
            .map(|c| CarrierUrl {
                carrier: text(&c["carrier"]),
                url: text(&c["url"]),
            })
            .collect(),
        api: api.to_string(),
    })
}

async fn reservations(
    ctx: &Ctx,
    client: &Client,
    status: Option<String>,
    server: Option<String>,
) -> Result<(), TerminalError> {
    let mut query = vec!["limit=200".to_string()];
    if let Some(s) = status {
        query.push(format!("status={s}"));
    }
    if let Some(s) = server {
        query.push(format!("server_id={s}"));
    }
    let answer = client
        .get(&format!("/v1/reservations?{}", query.join("&")))
        .await?;
    if ctx.globals.json {
        ctx.print_json(&answer);
        return Ok(());
    }
    let list = answer["reservations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        println!("No reservations.");
        return Ok(());
    }
    let now = ctx.server_now();
    let mut rows = vec![[
        "ID",
        "STATUS",
        "SERVER",
        "START (local)",
        "END (local)",
        "START (server, UTC)",
        "WHEN",
        "TITLE",
    ]
    .map(String::from)
    .to_vec()];
    for r in &list {
        let (Some(start), Some(end)) = (time_of(&r["start"]), time_of(&r["end"])) else {
            continue;
        };
        rows.push(vec![
            text(&r["id"]),
            text(&r["status"]),
            text(&r["server_id"]),
            view::local(start, &Local),
            view::local(end, &Local),
            view::utc(start),
            view::relative(start, now),
            text(&r["title"]),
        ]);
    }
    print!("{}", view::table(&rows));
    Ok(())
}

async fn show(ctx: &Ctx, client: &Client, id: &str) -> Result<(), TerminalError> {
    let r = client.get(&format!("/v1/reservations/{id}")).await?;
    let stored = Setting::load(&ctx.dirs, id)?;
    if ctx.globals.json {
        let mut out = r.clone();
        out["stored"] = json!(stored.as_ref().map(|_| ctx.dirs.reservation_file(id)));
        ctx.print_json(&out);
        return Ok(());
    }
    println!(
        "{} on {}: {}{}",
        text(&r["id"]),
        text(&r["server_id"]),
        text(&r["status"]),
        r["title"]
            .as_str()
            .map_or(String::new(), |t| format!(" \"{t}\""))
    );
    if let Some(reason) = r["reason"].as_str() {
        println!("  reason    {reason}");
    }
    if let Some(ingest) = r["ingest"].as_object() {
        println!(
            "  ingest    {} on {} at {}",
            ingest.get("state").map_or(String::new(), text),
            ingest.get("carrier").map_or(String::new(), text),
            ingest.get("at").map_or(String::new(), text)
        );
    }
    let now = ctx.server_now();
    match stored {
        Some(setting) => {
            print_setting(&setting, ctx, now);
            println!(
                "  stored    {} (stream key inside)",
                ctx.dirs.reservation_file(id).display()
            );
        }
        None => {
            if let (Some(s), Some(e)) = (time_of(&r["start"]), time_of(&r["end"])) {
                println!("  slot      {}", view::span(s, e, &Local));
            }
            println!("  (not booked from this terminal: no stream key stored here)");
        }
    }
    Ok(())
}

async fn reschedule(
    ctx: &mut Ctx,
    client: &Client,
    args: RescheduleArgs,
) -> Result<(), TerminalError> {
    let (start, end) = args.window.resolve(ctx.server_now())?;
    let id = &args.id;
    let body = json!({"start": ms_time(start), "end": ms_time(end)});
    let answer = client
        .send(
            Method::POST,
            &format!("/v1/reservations/{id}/reschedule"),
            Some(&body),
            None,
        )
        .await?;
    if answer.status == StatusCode::CONFLICT && answer.body["status"] == "rejected" {
        return Err(refusal(
            ctx,
            &answer.body,
            "reschedule refused",
            " The old slot stays.",
        ));
    }
    if !answer.status.is_success() {
        return Err(error_of(&answer));
    }
    let b = answer.body;
    if let Some(mut setting) = Setting::load(&ctx.dirs, id)? {
        setting.start = time_of(&b["start"]).unwrap_or(start);
        setting.end = time_of(&b["end"]).unwrap_or(end);
        if let (Some(o), Some(c)) = (
            time_of(&b["setting"]["opens_at"]),
            time_of(&b["setting"]["closes_at"]),
        ) {
            setting.opens_at = o;
            setting.closes_at = c;
        }
        setting.save(&ctx.dirs)?;
    }
    if ctx.globals.json {
        ctx.print_json(&b);
    } else {
        println!("Moved {id} to {}.", view::span(start, end, &Local));
    }
    Ok(())
}

async fn rotate_key(ctx: &mut Ctx, client: &Client, id: &str) -> Result<(), TerminalError> {
    let b = client
        .call(
            Method::POST,
            &format!("/v1/reservations/{id}/rotate-key"),
            Some(&json!({})),
        )
        .await?;
    let key = b["setting"]["stream_key"]
        .as_str()
        .or_else(|| b["stream_key"].as_str())
        .ok_or_else(|| TerminalError::Local("the API's answer has no stream_key".into()))?
        .to_string();
    let stored = match Setting::load(&ctx.dirs, id)? {
        Some(mut setting) => {
            setting.stream_key = key;
            Some(setting.save(&ctx.dirs)?)
        }
        None => None,
    };
    if ctx.globals.json {
        let mut out = b.clone();
        out["stored_at"] = json!(stored);
        ctx.print_json(&out);
    } else {
        println!("New stream key for {id}; the old one no longer works (a live publisher using it is cut off).");
        match stored {
            Some(path) => println!("  stored    {} (mode 0600)", path.display()),
            None => println!(
                "  key       {}   (not booked from this terminal: keep it safe)",
                text(&b["setting"]["stream_key"])
            ),
        }
    }
    Ok(())
}

/// Pages of a history asked at most: a million events, far past any real reservation's.
const HISTORY_PAGES_MAX: usize = 1000;

/// The whole history, oldest first, a page (1,000 events) at a time.
async fn history(ctx: &Ctx, client: &Client, id: &str) -> Result<(), TerminalError> {
    let mut events = Vec::new();
    let mut path = format!("/v1/reservations/{id}/history");
    for _ in 0..HISTORY_PAGES_MAX {
        let page = client.get(&path).await?;
        events.extend(page["events"].as_array().into_iter().flatten().cloned());
        match page["next"]["after"].as_i64() {
            Some(after) => path = format!("/v1/reservations/{id}/history?after={after}"),
            None => break,
        }
    }
    let h = serde_json::json!({"reservation_id": id, "events": events, "next": null});
    if ctx.globals.json {
        ctx.print_json(&h);
        return Ok(());
    }
    let mut rows = vec![["#", "RECORDED (local)", "EVENT", "BY", "DETAIL"]
        .map(String::from)
        .to_vec()];
    for e in h["events"].as_array().into_iter().flatten() {
        let recorded = time_of(&e["recorded_at"])
            .map_or_else(|| text(&e["recorded_at"]), |t| view::local(t, &Local));
        rows.push(vec![
            e["sequence"].to_string(),
            recorded,
            text(&e["type"]),
            text(&e["actor"]),
            detail(&e["type"], &e["data"]),
        ]);
    }
    print!("{}", view::table(&rows));
    Ok(())
}

/// The few fields of an event a person wants in one line.
fn detail(kind: &Value, data: &Value) -> String {
    // The API answers each event's fields as `data`; an event still wrapped in its type
    // (`{"ReservationAccepted": {...}}`) is looked into.
    let wrapped = data
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get(kind.as_str().unwrap_or_default()));
    let body = wrapped.unwrap_or(data);
    let pick = |f: &str| match &body[f] {
        Value::String(v) => Some(format!("{f}={v}")),
        // Counts per reason: refusals=bad_key:297,not_open:2
        Value::Object(counts) => Some(format!(
            "{f}={}",
            counts
                .iter()
                .map(|(k, n)| format!("{k}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        )),
        _ => None,
    };
    let fields: &[&str] = match kind.as_str().unwrap_or_default() {
        "ReservationAccepted" | "ReservationRescheduled" => &["start", "end"],
        "ReservationRejected" | "RescheduleRejected" => &["reason"],
        "IngestReported" => &["kind", "carrier", "remote_addr", "reason", "refusals"],
        "WindowOpened" | "WindowClosed" => &["due_at"],
        _ => &[],
    };
    fields
        .iter()
        .filter_map(|f| pick(f))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn servers(ctx: &Ctx, client: &Client) -> Result<(), TerminalError> {
    let s = client.get("/v1/servers").await?;
    if ctx.globals.json {
        ctx.print_json(&s);
        return Ok(());
    }
    let mut rows = vec![[
        "ID", "NAME", "CAPACITY", "LEAD", "PRE-ROLL", "GRACE", "CARRIERS",
    ]
    .map(String::from)
    .to_vec()];
    for server in s["servers"].as_array().into_iter().flatten() {
        let carriers: Vec<String> = server["carriers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| text(&c["name"]))
            .collect();
        let secs = |f: &str| format!("{} s", server[f].as_u64().unwrap_or(0));
        rows.push(vec![
            text(&server["id"]),
            text(&server["name"]),
            server["capacity"].to_string(),
            secs("min_lead_s"),
            secs("preroll_s"),
            secs("grace_s"),
            carriers.join(", "),
        ]);
    }
    print!("{}", view::table(&rows));
    Ok(())
}

async fn schedule(
    ctx: &Ctx,
    client: &Client,
    server: &str,
    date: Option<String>,
) -> Result<(), TerminalError> {
    let day: NaiveDate = match date {
        Some(d) => NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .map_err(|_| TerminalError::Usage(format!("--date {d}: expected YYYY-MM-DD")))?,
        None => ctx.server_now().with_timezone(&Local).date_naive(),
    };
    let midnight = Local
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| TerminalError::Usage(format!("{day} has no midnight in your time zone")))?;
    let to = midnight + Duration::hours(24);
    let path = format!(
        "/v1/servers/{server}/schedule?from={}&to={}",
        ms_time(midnight),
        ms_time(to)
    );
    let answer = client.get(&path).await?;
    if ctx.globals.json {
        ctx.print_json(&answer);
        return Ok(());
    }
    let info = client.get(&format!("/v1/servers/{server}")).await.ok();
    let slots: Vec<DaySlot> = answer["slots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some(DaySlot {
                label: text(&s["reservation_id"]).chars().take(13).collect(),
                start: time_of(&s["start"])?,
                end: time_of(&s["end"])?,
                status: text(&s["status"]),
                title: s["title"].as_str().map(str::to_string),
            })
        })
        .collect();
    let capacity = info.as_ref().and_then(|i| i["capacity"].as_u64());
    print!("{}", view::day(server, &slots, midnight, &Local, capacity));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_detail_shows_its_fields_as_the_api_answers_them() {
        let kind = Value::from("ReservationAccepted");
        let data = serde_json::json!({
            "at": "2026-12-05T11:30:55Z",
            "start": "2026-12-05T11:31:25Z",
            "end": "2026-12-05T11:36:25Z",
        });
        let want = "start=2026-12-05T11:31:25Z end=2026-12-05T11:36:25Z";
        assert_eq!(detail(&kind, &data), want);
        let wrapped = serde_json::json!({"ReservationAccepted": data});
        assert_eq!(detail(&kind, &wrapped), want);
        let refused = serde_json::json!({"kind": "refused", "refusals": {"bad_key": 3}});
        assert_eq!(
            detail(&Value::from("IngestReported"), &refused),
            "kind=refused refusals=bad_key:3"
        );
    }
}
