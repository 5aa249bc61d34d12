//! Booking and the reservation commands of the broadcaster's terminal.
//!
//! Contract: `book` sends one `Idempotency-Key` for all its attempts, so a retry after a
//! network error, or after a 503 (waiting its `Retry-After`), never books twice; on
//! acceptance it stores the setting info (one file per reservation, mode 0600) and prints the
//! clock difference measured from that very answer.
//! A refusal prints the reason, the conflicts and the suggested windows, and exits 1.
//! `show` and `schedule` take `--as-of TIME`: the API's answer as of that instant, shown
//! with relative times counted from it, never from now.

use chrono::{DateTime, Duration, Local, NaiveDate, TimeZone, Utc};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slotcast_terminal::camera_url::CameraUrl;
use slotcast_terminal::client::{self, error_of, Answer, Client, Reply};
use slotcast_terminal::clock::Sample;
use slotcast_terminal::store::Setting;
use slotcast_terminal::view::{self, DaySlot};
use slotcast_terminal::{when, TerminalError};
use slotcast_wire::{
    Accepted, BookRequest, Concealed, History, Rejected, RescheduleRequest, ReservationDto,
    ReservationList, ReservationStatus, RotatedKey, Schedule, ServerDto, ServerList, ServerTime,
    SourceRequest, WindowDto, WireTime,
};

use crate::terminal_ctx::{with_fields, with_sync, Ctx};

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
    fn source(&self) -> Result<Option<SourceRequest>, TerminalError> {
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
        Ok(Some(SourceRequest {
            pull_url: camera.url.to_string(),
            username,
            password: password.map(Concealed),
            transport: self.pull_transport.clone(),
        }))
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

/// `slotcast cancel ID`.
pub async fn cancel(ctx: &Ctx, client: &Client, id: &str) -> Result<(), TerminalError> {
    let answer: Reply<ReservationDto> = client
        .call(
            Method::POST,
            &format!("/v1/reservations/{id}/cancel"),
            Some(&json!({})),
        )
        .await?;
    if ctx.globals.json {
        ctx.print_json(&answer.json);
    } else {
        println!("Cancelled {id}.");
    }
    Ok(())
}

pub async fn book(ctx: &mut Ctx, client: &Client, args: BookArgs) -> Result<(), TerminalError> {
    let (start, end) = args.window.resolve(ctx.server_now())?;
    let request = BookRequest {
        source: args.source()?,
        server_id: args.server,
        start: WireTime(start),
        end: WireTime(end),
        title: args.title,
    };
    let key = uuid::Uuid::new_v4().to_string();
    let mut attempt = 0;
    let (answer, t1, t4) = loop {
        attempt += 1;
        let t1 = Utc::now();
        match client
            .send(Method::POST, "/v1/reservations", Some(&request), Some(&key))
            .await
        {
            // The server cannot answer now (503 `unavailable`): nothing was booked, or the
            // key's answer is stored and a retry gets it. Either way the same key is safe.
            Ok(answer)
                if answer.status == StatusCode::SERVICE_UNAVAILABLE && attempt < BOOK_ATTEMPTS =>
            {
                let after = answer
                    .error_body()
                    .and_then(|b| b.error.retry_after_s)
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
    // The time-difference notice, from this very answer, refusal or acceptance.
    let offset = |stamp: &ServerTime| {
        Sample {
            t1,
            t2: stamp.t_receive,
            t3: stamp.t_transmit,
            t4,
        }
        .offset()
    };
    if let Some(rejected) = refusal_of(&answer)? {
        ctx.remember_offset(offset(&rejected.server_time))?;
        return Err(refusal(ctx, &answer.body, &rejected, "booking refused", ""));
    }
    if answer.status != StatusCode::CREATED {
        return Err(error_of(&answer));
    }
    let accepted: Accepted = answer.read()?;
    let offset = offset(&accepted.server_time);
    ctx.remember_offset(offset)?;
    let stream_key = accepted
        .setting
        .stream_key
        .clone()
        .ok_or_else(|| answer.missing("setting.stream_key"))?;
    let setting = Setting::booked(&accepted, stream_key, client.api());
    let path = setting.save(&ctx.dirs)?;
    if ctx.globals.json {
        let out = with_fields(
            answer.body,
            [("stored_at", json!(path)), ("clock", json!(offset))],
        );
        ctx.print_json(&out);
        return Ok(());
    }
    let now = ctx.server_now();
    println!(
        "Booked {} on {} ({}).",
        setting.id, setting.server_id, accepted.status
    );
    print_setting(&setting, ctx, now);
    if let Some(source) = &accepted.source {
        let login = if source.login {
            ", login stored sealed"
        } else {
            ""
        };
        println!(
            "  camera    {} (the server pulls it over {} while the window is open{login})",
            source.pull_url, source.transport
        );
    }
    println!("  clock     {}", with_sync(&offset, &accepted.server_time));
    println!("  stored    {} (mode 0600)", path.display());
    Ok(())
}

/// A 409 that refuses the window (with conflicts and suggestions), read; `None` for any other
/// answer, a 409 error body included.
fn refusal_of(answer: &Answer) -> Result<Option<Rejected>, TerminalError> {
    if answer.status != StatusCode::CONFLICT
        || !answer.body.is_object()
        || answer.error_body().is_some()
    {
        return Ok(None);
    }
    answer.read().map(Some)
}

/// Shows a 409 refusal (`--json`: as the API sent it) and returns its error (exit 1).
fn refusal(ctx: &Ctx, sent: &Value, r: &Rejected, what: &str, more: &str) -> TerminalError {
    if ctx.globals.json {
        ctx.print_json(sent);
    } else {
        println!("Refused: {} ({}).{more}", r.message, r.reason);
        print_windows("Conflicts with", &r.conflicts);
        print_windows("Free windows of that length nearby", &r.suggestions);
    }
    TerminalError::Api {
        status: 409,
        code: r.reason.clone(),
        message: what.into(),
    }
}

fn print_windows(what: &str, windows: &[WindowDto]) {
    if windows.is_empty() {
        return;
    }
    println!("{what}:");
    for w in windows {
        println!("  {}", view::span(w.start, w.end, &Local));
    }
}

/// The slot, the ingest window and the carriers of a stored setting (`live`'s one marked).
pub(crate) fn print_setting(setting: &Setting, ctx: &Ctx, now: DateTime<Utc>) {
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

pub async fn reservations(
    ctx: &Ctx,
    client: &Client,
    status: Option<ReservationStatus>,
    server: Option<String>,
) -> Result<(), TerminalError> {
    let mut query = vec!["limit=200".to_string()];
    if let Some(s) = status {
        query.push(format!("status={s}"));
    }
    if let Some(s) = server {
        query.push(format!("server_id={s}"));
    }
    let answer: Reply<ReservationList> = client
        .get(&format!("/v1/reservations?{}", query.join("&")))
        .await?;
    if ctx.globals.json {
        ctx.print_json(&answer.json);
        return Ok(());
    }
    let list = answer.value.reservations;
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
    for r in list {
        rows.push(vec![
            r.id,
            r.status.to_string(),
            r.server_id,
            view::local(r.start, &Local),
            view::local(r.end, &Local),
            view::utc(r.start),
            view::relative(r.start, now),
            r.title.unwrap_or_default(),
        ]);
    }
    print!("{}", view::table(&rows));
    Ok(())
}

/// The instant `--as-of TIME` names: a TIME as `--start` takes it, except that a wall-clock
/// time alone (`21:00`) is its last occurrence, not its next, and `-DURATION` (or
/// `now-DURATION`) goes back from `now`. An instant still to come is the API's to refuse.
fn as_of_time<Tz: TimeZone>(
    text: &str,
    now: DateTime<Utc>,
    zone: &Tz,
) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Some(back) = text.strip_prefix("now-").or_else(|| text.strip_prefix('-')) {
        return Ok(now - when::parse_duration(back)?);
    }
    let at = when::parse_time(text, now, zone)?;
    if at > now && !text.starts_with('+') && !text.starts_with("now") {
        // A wall-clock time alone is read as its next occurrence after the instant given:
        // from a day back, that is its last one up to now. Any other TIME does not move.
        let last = when::parse_time(text, now - Duration::days(1), zone)?;
        if last <= now {
            return Ok(last);
        }
    }
    Ok(at)
}

/// `--as-of`, read against the server's now.
fn as_of_arg(ctx: &Ctx, as_of: Option<&str>) -> Result<Option<DateTime<Utc>>, TerminalError> {
    as_of
        .map(|text| {
            as_of_time(text, ctx.server_now(), &Local)
                .map_err(|e| TerminalError::Usage(format!("--as-of {e}")))
        })
        .transpose()
}

pub async fn show(
    ctx: &Ctx,
    client: &Client,
    id: &str,
    as_of: Option<String>,
) -> Result<(), TerminalError> {
    let at = as_of_arg(ctx, as_of.as_deref())?;
    let path = client::as_of(&format!("/v1/reservations/{id}"), at);
    let answer: Reply<ReservationDto> = client.get(&path).await?;
    let stored = Setting::load(&ctx.dirs, id)?;
    if ctx.globals.json {
        let file = stored.as_ref().map(|_| ctx.dirs.reservation_file(id));
        ctx.print_json(&with_fields(answer.json, [("stored", json!(file))]));
        return Ok(());
    }
    let r = answer.value;
    if let Some(at) = at {
        println!("{}", view::as_of(at, &Local));
    }
    println!(
        "{} on {}: {}{}",
        r.id,
        r.server_id,
        r.status,
        r.title
            .as_ref()
            .map_or(String::new(), |t| format!(" \"{t}\""))
    );
    if let Some(reason) = &r.reason {
        println!("  reason    {reason}");
    }
    if let Some(ingest) = &r.ingest {
        println!(
            "  ingest    {} on {} at {}",
            ingest.state,
            ingest.carrier.as_deref().unwrap_or_default(),
            view::utc(ingest.at)
        );
    }
    match (stored, at) {
        (Some(setting), None) => {
            print_setting(&setting, ctx, ctx.server_now());
            println!(
                "  stored    {} (stream key inside)",
                ctx.dirs.reservation_file(id).display()
            );
        }
        // The stored file is today's setting info: the window and carriers are the answer's.
        (stored, Some(at)) => {
            print_shown_setting(&r, at);
            if stored.is_some() {
                println!(
                    "  stored    {} (today's setting info, stream key inside)",
                    ctx.dirs.reservation_file(id).display()
                );
            }
        }
        (None, None) => {
            println!("  slot      {}", view::span(r.start, r.end, &Local));
            println!("  (not booked from this terminal: no stream key stored here)");
        }
    }
    Ok(())
}

/// The slot, window and carriers of an answer, relative times counted from `at`.
fn print_shown_setting(r: &ReservationDto, at: DateTime<Utc>) {
    println!("  slot      {}", view::span(r.start, r.end, &Local));
    let Some(setting) = &r.setting else {
        return;
    };
    println!(
        "  ingest    opens {} ({}), closes {}",
        view::local(setting.opens_at, &Local),
        view::relative(setting.opens_at, at),
        view::local(setting.closes_at, &Local)
    );
    for (i, c) in setting.carriers.iter().enumerate() {
        let label = if i == 0 { "carriers" } else { "" };
        println!("  {label:<9} {} {}", c.carrier, c.url);
    }
}

pub async fn reschedule(
    ctx: &mut Ctx,
    client: &Client,
    args: RescheduleArgs,
) -> Result<(), TerminalError> {
    let (start, end) = args.window.resolve(ctx.server_now())?;
    let id = &args.id;
    let request = RescheduleRequest {
        start: WireTime(start),
        end: WireTime(end),
    };
    let answer = client
        .send(
            Method::POST,
            &format!("/v1/reservations/{id}/reschedule"),
            Some(&request),
            None,
        )
        .await?;
    if let Some(rejected) = refusal_of(&answer)? {
        return Err(refusal(
            ctx,
            &answer.body,
            &rejected,
            "reschedule refused",
            " The old slot stays.",
        ));
    }
    if !answer.status.is_success() {
        return Err(error_of(&answer));
    }
    let moved: ReservationDto = answer.read()?;
    if let Some(mut setting) = Setting::load(&ctx.dirs, id)? {
        setting.start = moved.start;
        setting.end = moved.end;
        if let Some(window) = &moved.setting {
            setting.opens_at = window.opens_at;
            setting.closes_at = window.closes_at;
        }
        setting.save(&ctx.dirs)?;
    }
    if ctx.globals.json {
        ctx.print_json(&answer.body);
    } else {
        println!("Moved {id} to {}.", view::span(start, end, &Local));
    }
    Ok(())
}

pub async fn rotate_key(ctx: &mut Ctx, client: &Client, id: &str) -> Result<(), TerminalError> {
    let answer: Reply<RotatedKey> = client
        .call(
            Method::POST,
            &format!("/v1/reservations/{id}/rotate-key"),
            Some(&json!({})),
        )
        .await?;
    let key = answer
        .value
        .setting
        .stream_key
        .clone()
        .ok_or_else(|| answer.missing("setting.stream_key"))?;
    let stored = match Setting::load(&ctx.dirs, id)? {
        Some(mut setting) => {
            setting.stream_key = key.clone();
            Some(setting.save(&ctx.dirs)?)
        }
        None => None,
    };
    if ctx.globals.json {
        ctx.print_json(&with_fields(answer.json, [("stored_at", json!(stored))]));
    } else {
        println!("New stream key for {id}; the old one no longer works (a live publisher using it is cut off).");
        match stored {
            Some(path) => println!("  stored    {} (mode 0600)", path.display()),
            None => println!("  key       {key}   (not booked from this terminal: keep it safe)"),
        }
    }
    Ok(())
}

/// Pages of a history asked at most: a million events, far past any real reservation's.
const HISTORY_PAGES_MAX: usize = 1000;

/// The whole history, oldest first, a page (1,000 events) at a time.
pub async fn history(ctx: &Ctx, client: &Client, id: &str) -> Result<(), TerminalError> {
    let mut events = Vec::new();
    let mut path = format!("/v1/reservations/{id}/history");
    for _ in 0..HISTORY_PAGES_MAX {
        let page: Reply<History> = client.get(&path).await?;
        events.extend(page.value.events);
        match page.value.next.and_then(|next| next.after) {
            Some(after) => path = format!("/v1/reservations/{id}/history?after={after}"),
            None => break,
        }
    }
    let h = History {
        reservation_id: id.to_string(),
        events,
        next: None,
    };
    if ctx.globals.json {
        let json = serde_json::to_value(&h)
            .map_err(|e| TerminalError::Local(format!("cannot write the history: {e}")))?;
        ctx.print_json(&json);
        return Ok(());
    }
    let mut rows = vec![["#", "RECORDED (local)", "EVENT", "BY", "DETAIL"]
        .map(String::from)
        .to_vec()];
    for e in h.events {
        let recorded = e.recorded_at.unwrap_or_default();
        let recorded = DateTime::parse_from_rfc3339(&recorded)
            .map_or(recorded, |t| view::local(t.with_timezone(&Utc), &Local));
        let detail = detail(&e.kind, &e.data);
        rows.push(vec![
            e.sequence.to_string(),
            recorded,
            e.kind,
            e.actor.unwrap_or_default(),
            detail,
        ]);
    }
    print!("{}", view::table(&rows));
    Ok(())
}
/// The few fields of an event a person wants in one line. Events' fields are the history's
/// own business (`data` is any JSON), so they are looked up, not read as a type.
fn detail(kind: &str, data: &Value) -> String {
    // The API answers each event's fields as `data`; an event still wrapped in its type
    // (`{"ReservationAccepted": {...}}`) is looked into.
    let wrapped = data
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get(kind));
    let body = wrapped.unwrap_or(data);
    let pick = |f: &str| match body.get(f) {
        Some(Value::String(v)) => Some(format!("{f}={v}")),
        // Counts per reason: refusals=bad_key:297,not_open:2
        Some(Value::Object(counts)) => Some(format!(
            "{f}={}",
            counts
                .iter()
                .map(|(k, n)| format!("{k}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        )),
        _ => None,
    };
    let fields: &[&str] = match kind {
        "ReservationAccepted" | "ReservationRescheduled" => &["start", "end"],
        "ReservationRejected" | "RescheduleRejected" => &["reason"],
        "IngestReported" => &[
            "kind",
            "carrier",
            "protocol",
            "remote_addr",
            "reason",
            "refusals",
        ],
        "WindowOpened" | "WindowClosed" => &["due_at"],
        _ => &[],
    };
    fields
        .iter()
        .filter_map(|f| pick(f))
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn servers(ctx: &Ctx, client: &Client) -> Result<(), TerminalError> {
    let answer: Reply<ServerList> = client.get("/v1/servers").await?;
    if ctx.globals.json {
        ctx.print_json(&answer.json);
        return Ok(());
    }
    let mut rows = vec![[
        "ID", "NAME", "CAPACITY", "LEAD", "PRE-ROLL", "GRACE", "CARRIERS",
    ]
    .map(String::from)
    .to_vec()];
    for server in answer.value.servers {
        let carriers: Vec<String> = server.carriers.into_iter().map(|c| c.name).collect();
        rows.push(vec![
            server.id,
            server.name,
            server.capacity.to_string(),
            format!("{} s", server.min_lead_s),
            format!("{} s", server.preroll_s),
            format!("{} s", server.grace_s),
            carriers.join(", "),
        ]);
    }
    print!("{}", view::table(&rows));
    Ok(())
}

pub async fn schedule(
    ctx: &Ctx,
    client: &Client,
    server: &str,
    date: Option<String>,
    as_of: Option<String>,
) -> Result<(), TerminalError> {
    let at = as_of_arg(ctx, as_of.as_deref())?;
    let day: NaiveDate = match date {
        Some(d) => NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .map_err(|_| TerminalError::Usage(format!("--date {d}: expected YYYY-MM-DD")))?,
        None => at
            .unwrap_or_else(|| ctx.server_now())
            .with_timezone(&Local)
            .date_naive(),
    };
    let midnight = Local
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| TerminalError::Usage(format!("{day} has no midnight in your time zone")))?;
    let to = midnight + Duration::hours(24);
    let path = format!(
        "/v1/servers/{server}/schedule?from={}&to={}",
        view::utc(midnight),
        view::utc(to)
    );
    let answer: Reply<Schedule> = client.get(&client::as_of(&path, at)).await?;
    if ctx.globals.json {
        ctx.print_json(&answer.json);
        return Ok(());
    }
    // The capacity is today's: shown only with today's schedule.
    let info = match at {
        None => client
            .get::<ServerDto>(&format!("/v1/servers/{server}"))
            .await
            .ok(),
        Some(at) => {
            println!("{}", view::as_of(at, &Local));
            None
        }
    };
    let slots: Vec<DaySlot> = answer
        .value
        .slots
        .into_iter()
        .map(|s| DaySlot {
            label: s.reservation_id.chars().take(13).collect(),
            start: s.start,
            end: s.end,
            status: s.status,
            title: s.title,
        })
        .collect();
    let capacity = info.map(|i| u64::from(i.value.capacity));
    print!("{}", view::day(server, &slots, midnight, &Local, capacity));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_reads_times_as_start_does_but_a_clock_time_alone_looks_back() {
        let tokyo = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // 21:00 in Tokyo.
        let now = t("2030-01-01T12:00:00Z");
        let at = |text: &str| as_of_time(text, now, &tokyo);
        assert_eq!(at("-2h"), Ok(t("2030-01-01T10:00:00Z")));
        assert_eq!(at("now-30m"), Ok(t("2030-01-01T11:30:00Z")));
        assert_eq!(at("now"), Ok(now));
        // Its last occurrence: today's 20:00, yesterday's 22:00.
        assert_eq!(at("20:00"), Ok(t("2030-01-01T11:00:00Z")));
        assert_eq!(at("22:00"), Ok(t("2029-12-31T13:00:00Z")));
        assert_eq!(at("2030-01-01 20:30"), Ok(t("2030-01-01T11:30:00Z")));
        // Still to come, left for the API to refuse.
        assert_eq!(at("2030-01-02T00:00:00Z"), Ok(t("2030-01-02T00:00:00Z")));
        assert_eq!(at("+5m"), Ok(t("2030-01-01T12:05:00Z")));
        assert!(at("yesterday").is_err());
    }

    #[test]
    fn an_events_detail_shows_its_fields_as_the_api_answers_them() {
        let kind = "ReservationAccepted";
        let data = serde_json::json!({
            "at": "2026-12-05T11:30:55Z",
            "start": "2026-12-05T11:31:25Z",
            "end": "2026-12-05T11:36:25Z",
        });
        let want = "start=2026-12-05T11:31:25Z end=2026-12-05T11:36:25Z";
        assert_eq!(detail(kind, &data), want);
        let wrapped = serde_json::json!({"ReservationAccepted": data});
        assert_eq!(detail(kind, &wrapped), want);
        let refused = serde_json::json!({"kind": "refused", "refusals": {"bad_key": 3}});
        assert_eq!(
            detail("IngestReported", &refused),
            "kind=refused refusals=bad_key:3"
        );
        let connected = serde_json::json!({"kind": "connected", "carrier": "carrier-a",
            "protocol": "srt", "remote_addr": "10.0.0.9:4000"});
        assert_eq!(
            detail("IngestReported", &connected),
            "kind=connected carrier=carrier-a protocol=srt remote_addr=10.0.0.9:4000"
        );
    }
}
