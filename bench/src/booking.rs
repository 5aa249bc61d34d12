//! `slotcast-bench booking`: booking throughput and latency through the real api, beside a
//! raw-SQL baseline (one `EXCLUDE USING gist` table), in one run; prints figures, asserts none.
//!
//! Contract: everything happens in a throwaway database `slotcast_bench_<uuid>`
//! ([`crate::scratch`]), dropped at the end, on error and on Ctrl-C too. The api is a
//! `slotcast server api` child on a loopback port, with no NTP server that answers (nothing
//! waits on the network), its NATS consumers idle, and, unless the flags say otherwise, its
//! default pool, inline projection and catch-up; its tokens come from `slotcast admin token
//! create`. Every request has a timeout and every measured run stops taking work at a time
//! cap, then reports what finished. Each scenario books on server ids of its own, so scenarios
//! never see each other's slots.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

use crate::client::{Api, HORIZON_S, SLOT};
use crate::load::{closed_loop, open_loop, Figures, Outcome};
use crate::report::{machine, print_report, until_interrupted, Machine};
use crate::scratch::Scratch;
use crate::slotcast::{ApiOptions, Slotcast};

/// The targets the issue sets: across 100 servers, this share of the raw-SQL rate...
const RATIO_TARGET: f64 = 0.5;
/// ...and this p99 at half the measured maximum rate.
const P99_TARGET_MS: f64 = 25.0;
/// The scenario the targets are read on.
const TARGET_SERVERS: usize = 100;

/// The booking write path in three parts: (a) booking throughput (accepted/s) and p50/p99
/// latency with N concurrent clients, through the api and as raw SQL inserts, per number of
/// servers, then p50/p99 at half the measured rate; (b) the rate on one server as its schedule
/// grows; (c) clients that hang up right after sending, then retry with the same
/// Idempotency-Key. Needs Postgres with btree_gist; works in a throwaway database it drops at
/// the end.
#[derive(clap::Args, Debug)]
pub struct BookingArgs {
    /// Parts to run, comma-separated: a (across servers against raw SQL, and the half-rate
    /// latency), b (one server as its schedule grows), c (clients that hang up).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c")]
    only: Vec<Part>,
    /// Part b: how many future slots the server holds before its bookings are measured, one
    /// fresh server per level, filled through the api untimed. The ratio against the 0.8
    /// target is the last level's rate ÷ the first's.
    #[arg(long, value_delimiter = ',', default_value = "0,2000,10000",
        value_parser = clap::value_parser!(u32).range(0..=100_000))]
    fill: Vec<u32>,
    /// Part c: bookings, each with a fresh Idempotency-Key, written on a raw connection that
    /// is closed at once, then retried with the same key 50 ms later (`--clients` at a time).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    hangups: u32,
    /// Part c: a key whose retries have no final answer after this many seconds (still 'in
    /// flight', 503 or no answer) counts as stuck.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    stuck_after_s: u64,
    /// Concurrent clients (closed loop: each sends its next booking when the last is
    /// answered), in every part. The raw-SQL baseline opens this many database connections.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    clients: u32,
    /// Bookings per measured run: part a's runs, and part b's at each --fill level (after the
    /// untimed fill). They never overlap on a server, so every one should be accepted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    bookings: u32,
    /// Part a's scenarios: how many servers the bookings are spread over (round-robin),
    /// comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100",
        value_parser = clap::value_parser!(u32).range(1..=10_000))]
    servers: Vec<u32>,
    /// Admin connection, used only to create and drop the throwaway database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true,
        default_value = crate::scratch::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Timeout on each request (booking or insert), in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout_s: u64,
    /// Each measured run stops taking work after this many seconds and reports what finished
    /// (a scenario is two runs, slotcast and raw SQL).
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=3600))]
    cap_s: u64,
    /// Connections in the api's database pool, given to it as `database.connections` in a
    /// configuration file (default: the api's own default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    api_connections: Option<u32>,
    /// Turn off the api's inline projection after each commit, leaving the read model to the
    /// catch-up projector: shows what the projection costs a booking.
    #[arg(long)]
    no_inline_projection: bool,
    /// Turn off the api's catch-up projector (it runs every 500 ms by default): shows what its
    /// periodic pass costs the bookings beside it.
    #[arg(long)]
    no_catch_up: bool,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Across --servers against raw SQL, then p99 at half the measured rate.
    A,
    /// One server at each --fill level of future slots.
    B,
    /// --hangups clients that hang up right after sending, then retry with their key.
    C,
}

#[derive(Debug, Serialize)]
struct Scenario {
    servers: usize,
    clients: usize,
    slotcast: Figures,
    raw_sql: Figures,
    /// slotcast accepted/s ÷ raw SQL inserts/s.
    ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
struct HalfRate {
    servers: usize,
    /// The closed-loop slotcast rate it halves.
    max_rate: f64,
    /// Requests per second on the fixed arrival schedule.
    offered_rate: f64,
    /// Latency is measured from each request's scheduled send time.
    figures: Figures,
}

#[derive(Debug, Serialize)]
struct Targets {
    servers: Option<usize>,
    ratio: Option<f64>,
    ratio_target: f64,
    ratio_met: Option<bool>,
    half_rate_p99_ms: Option<f64>,
    p99_target_ms: f64,
    p99_met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    bookings: usize,
    clients: usize,
    /// `None`: the api's default pool.
    api_db_connections: Option<u32>,
    inline_projection: bool,
    catch_up: bool,
    request_timeout_s: u64,
    cap_s: u64,
    scenarios: Vec<Scenario>,
    half_rate: Option<HalfRate>,
    targets: Targets,
    /// Part b.
    busy: Option<crate::write_path::Busy>,
    /// Part c.
    hang_ups: Option<crate::write_path::HangUps>,
    machine: Machine,
}

/// Runs the benchmark and prints its figures.
pub async fn booking(args: BookingArgs, slotcast: &Slotcast) -> Result<()> {
    if args.only.contains(&Part::C) && args.no_inline_projection && args.no_catch_up {
        bail!(
            "part c counts the reservations through the api, whose read model nothing feeds \
             with both --no-inline-projection and --no-catch-up: drop one, or leave out c \
             (--only a,b)"
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("slotcast-bench-booking-")
        .tempdir()
        .context("create a temporary directory")?;
    let scratch = Scratch::create(&args.database_url).await?;
    // The api child dies with the future (its guard drops), before the database goes.
    let outcome = until_interrupted(run(&args, &scratch, slotcast, dir.path())).await;
    let dropped = scratch.drop_database().await;
    print_report(&outcome?, args.json, text)?;
    dropped
}

/// Everything between creating and dropping the database: the api child and the
/// measurements.
async fn run(
    args: &BookingArgs,
    scratch: &Scratch,
    slotcast: &Slotcast,
    dir: &std::path::Path,
) -> Result<Report> {
    let timeout = Duration::from_secs(args.timeout_s);
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(args.clients as usize)
        .build()?;
    let options = ApiOptions {
        database_url: &scratch.url,
        ntp: &[],
        inline_projection: !args.no_inline_projection,
        catch_up: !args.no_catch_up,
        connections: args.api_connections,
    };
    let child = slotcast.api(&options, dir, &http).await?;
    let api = Api {
        http,
        base: child.base.clone(),
        operator: slotcast
            .token(&scratch.url, "operator", "bench-operator")
            .await?,
        distributor: slotcast
            .token(&scratch.url, "distributor", "bench-distributor")
            .await?,
    };
    let report = measure(args, scratch, &api).await;
    child.proc.stop().await;
    report
}

/// The measurements, against the ready `api` on the database `scratch`.
async fn measure(args: &BookingArgs, scratch: &Scratch, api: &Api) -> Result<Report> {
    let clients = args.clients as usize;
    let bookings = args.bookings as usize;
    let timeout = Duration::from_secs(args.timeout_s);
    let cap = Duration::from_secs(args.cap_s);

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(timeout)
        .connect(&scratch.url)
        .await
        .context("cannot connect to the throwaway database")?;
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    for statement in [
        "CREATE EXTENSION IF NOT EXISTS btree_gist",
        "CREATE TABLE public.bench_raw (id uuid PRIMARY KEY, server_id text NOT NULL, \
         period tstzrange NOT NULL, EXCLUDE USING gist (server_id WITH =, period WITH &&))",
    ] {
        pool.execute(statement)
            .await
            .with_context(|| format!("cannot run: {statement}"))?;
    }
    pool.close().await;

    let raw = PgPoolOptions::new()
        .max_connections(args.clients)
        .acquire_timeout(timeout)
        .connect(&scratch.url)
        .await?;
    // Open every connection before timing, as the api's warm-up below does for its own.
    let mut held = Vec::with_capacity(clients);
    for _ in 0..clients {
        held.push(raw.acquire().await?);
    }
    drop(held);

    let base = Utc::now().duration_trunc(TimeDelta::minutes(1))? + TimeDelta::days(1);
    let most_on_one_server = bookings + args.fill.iter().max().copied().unwrap_or(0) as usize;
    let last = base
        + SLOT
            * i32::try_from(most_on_one_server).context("--bookings and --fill are too large")?;
    anyhow::ensure!(
        last < Utc::now() + TimeDelta::seconds(HORIZON_S as i64 - 86_400),
        "--bookings (with --fill) on one server would go past the servers' booking horizon"
    );

    let mut scenarios = Vec::new();
    let servers_list = if args.only.contains(&Part::A) {
        args.servers.clone()
    } else {
        Vec::new()
    };
    for (index, &servers) in servers_list.iter().enumerate() {
        let servers = servers as usize;
        let ids = server_ids(&format!("s{index}"), servers);
        api.register(&ids, 1, timeout).await?;
        api.warm_up(clients, timeout).await;
        let work = Arc::new(workload(&ids, bookings, base));
        let slotcast = closed_loop(clients, bookings, timeout, cap, {
            let (api, work) = (api.clone(), work.clone());
            move |i| {
                let (api, work) = (api.clone(), work.clone());
                async move { api.book_body(&work[i].body).await }
            }
        })
        .await;
        sqlx::query("TRUNCATE public.bench_raw")
            .execute(&raw)
            .await?;
        let raw_sql = closed_loop(clients, bookings, timeout, cap, {
            let (raw, work) = (raw.clone(), work.clone());
            move |i| {
                let (raw, work) = (raw.clone(), work.clone());
                async move { insert_raw(&raw, &work[i]).await }
            }
        })
        .await;
        let ratio = (raw_sql.rate > 0.0).then(|| slotcast.rate / raw_sql.rate);
        scenarios.push(Scenario {
            servers,
            clients,
            slotcast,
            raw_sql,
            ratio,
        });
    }
    raw.close().await;

    let target = scenarios
        .iter()
        .position(|s| s.servers == TARGET_SERVERS)
        .or_else(|| (0..scenarios.len()).max_by_key(|&i| scenarios[i].servers));
    let mut half_rate = None;
    if let Some(target) = target.map(|i| &scenarios[i]) {
        if target.slotcast.rate > 0.0 {
            let ids = server_ids("half", target.servers);
            api.register(&ids, 1, timeout).await?;
            let work = Arc::new(workload(&ids, bookings, base));
            let offered = target.slotcast.rate / 2.0;
            let figures = open_loop(offered, bookings, timeout, cap, {
                let (api, work) = (api.clone(), work.clone());
                move |i| {
                    let (api, work) = (api.clone(), work.clone());
                    async move { api.book_body(&work[i].body).await }
                }
            })
            .await;
            half_rate = Some(HalfRate {
                servers: target.servers,
                max_rate: target.slotcast.rate,
                offered_rate: offered,
                figures,
            });
        }
    }

    let targets = targets(target.map(|i| &scenarios[i]), half_rate.as_ref());
    let busy = if args.only.contains(&Part::B) {
        let levels: Vec<usize> = args.fill.iter().map(|&n| n as usize).collect();
        Some(crate::write_path::busy(api, &levels, bookings, clients, timeout, cap, base).await?)
    } else {
        None
    };
    let hang_ups = if args.only.contains(&Part::C) {
        let figures = crate::write_path::hang_ups(
            api,
            args.hangups as usize,
            clients,
            timeout,
            Duration::from_secs(args.stuck_after_s),
            !args.no_inline_projection,
            base,
        )
        .await?;
        Some(figures)
    } else {
        None
    };
    Ok(Report {
        busy,
        hang_ups,
        bookings,
        clients,
        api_db_connections: args.api_connections,
        inline_projection: !args.no_inline_projection,
        catch_up: !args.no_catch_up,
        request_timeout_s: args.timeout_s,
        cap_s: args.cap_s,
        scenarios,
        half_rate,
        targets,
        machine: machine(postgres),
    })
}

/// One booking of the workload: the same list feeds slotcast and the raw-SQL baseline.
struct Booking {
    id: uuid::Uuid,
    server_id: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// The `POST /v1/reservations` body, built before timing.
    body: String,
}

fn server_ids(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|k| format!("bench-{tag}-{k:05}")).collect()
}

/// `count` bookings round-robin over `servers`, each server's slots end to end from `base`.
fn workload(servers: &[String], count: usize, base: DateTime<Utc>) -> Vec<Booking> {
    (0..count)
        .map(|i| {
            let server_id = servers[i % servers.len()].clone();
            let nth = i32::try_from(i / servers.len()).expect("--bookings is bounded to fit i32");
            let start = base + SLOT * nth;
            let end = start + SLOT;
            let body = serde_json::json!({
                "server_id": server_id,
                "start": start.to_rfc3339_opts(SecondsFormat::Secs, true),
                "end": end.to_rfc3339_opts(SecondsFormat::Secs, true),
            })
            .to_string();
            Booking {
                id: uuid::Uuid::new_v4(),
                server_id,
                start,
                end,
                body,
            }
        })
        .collect()
}

async fn insert_raw(pool: &PgPool, booking: &Booking) -> Outcome {
    sqlx::query(
        "INSERT INTO public.bench_raw (id, server_id, period) VALUES ($1, $2, tstzrange($3, $4))",
    )
    .bind(booking.id)
    .bind(&booking.server_id)
    .bind(booking.start)
    .bind(booking.end)
    .execute(pool)
    .await
    .map(drop)
    .map_err(|err| match err {
        sqlx::Error::Database(db) => {
            format!("SQL {}: {}", db.code().unwrap_or_default(), db.message())
        }
        other => format!("SQL: {other}"),
    })
}

fn targets(scenario: Option<&Scenario>, half_rate: Option<&HalfRate>) -> Targets {
    let ratio = scenario.and_then(|s| s.ratio);
    let p99 = half_rate.map(|h| h.figures.p99_ms);
    Targets {
        servers: scenario.map(|s| s.servers),
        ratio,
        ratio_target: RATIO_TARGET,
        ratio_met: ratio.map(|r| r >= RATIO_TARGET),
        half_rate_p99_ms: p99,
        p99_target_ms: P99_TARGET_MS,
        p99_met: p99.map(|p| p <= P99_TARGET_MS),
    }
}

fn servers_label(n: usize) -> String {
    match n {
        1 => "1 server".to_string(),
        n => format!("{n} servers"),
    }
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

fn run_line(name: &str, f: &Figures, unit: &str) -> String {
    let mut line = format!(
        "{name} {} of {} {unit} in {:.2} s, max {:.1} ms, {} errors",
        f.ok, f.sent, f.wall_s, f.max_ms, f.errors
    );
    if f.capped {
        line.push_str(" (stopped at the time cap)");
    }
    for sample in &f.error_samples {
        line.push_str(&format!("\n      {name} error: {sample}"));
    }
    line
}

/// Part a's tables and lines.
fn part_a_text(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(
        "servers | clients | slotcast accepted/s |      p50 |      p99 | raw SQL inserts/s |      p50 |      p99 | ratio\n\
         ------- | ------- | ------------------- | -------- | -------- | ----------------- | -------- | -------- | -----\n",
    );
    for s in &r.scenarios {
        let ratio = s.ratio.map_or("-".to_string(), |v| format!("{v:.2}"));
        out.push_str(&format!(
            "{:>7} | {:>7} | {:>19.1} | {:>5.1} ms | {:>5.1} ms | {:>17.1} | {:>5.1} ms | {:>5.1} ms | {ratio:>5}\n",
            s.servers,
            s.clients,
            s.slotcast.rate,
            s.slotcast.p50_ms,
            s.slotcast.p99_ms,
            s.raw_sql.rate,
            s.raw_sql.p50_ms,
            s.raw_sql.p99_ms,
        ));
    }
    out.push('\n');
    for s in &r.scenarios {
        let servers = servers_label(s.servers);
        out.push_str(&format!(
            "{servers:>12}: {}\n{servers:>12}: {}\n",
            run_line("slotcast", &s.slotcast, "accepted"),
            run_line("raw SQL", &s.raw_sql, "inserted"),
        ));
    }
    out.push('\n');
    match &r.half_rate {
        Some(h) => out.push_str(&format!(
            "half rate: {}, open loop at {:.1} bookings/s (50% of {:.1}/s): \
             p50 {:.1} ms, p99 {:.1} ms (from each scheduled send time)\n  {}\n",
            servers_label(h.servers),
            h.offered_rate,
            h.max_rate,
            h.figures.p50_ms,
            h.figures.p99_ms,
            run_line("slotcast", &h.figures, "accepted"),
        )),
        None => out.push_str("half rate: not measured (no scenario booked anything)\n"),
    }
    out
}

/// Part a's target lines.
fn part_a_targets(t: &Targets) -> String {
    let mut out = String::new();
    let servers = t.servers.map_or("-".to_string(), servers_label);
    out.push_str(&format!(
        "target: slotcast >= {:.0}% of the raw-SQL rate across {servers}: {} ({})\n",
        t.ratio_target * 100.0,
        t.ratio
            .map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0)),
        met(t.ratio_met),
    ));
    out.push_str(&format!(
        "target: p99 <= {:.0} ms at half the maximum rate across {servers}: {} ({})\n",
        t.p99_target_ms,
        t.half_rate_p99_ms
            .map_or("-".to_string(), |v| format!("{v:.1} ms")),
        met(t.p99_met),
    ));
    out
}

/// The plain-text report.
fn text(r: &Report) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let pool = r
        .api_db_connections
        .map_or("its default pool".to_string(), |n| format!("pool of {n}"));
    let mut out = format!(
        "slotcast-bench booking: {} bookings per run, {} clients; api as a child process, {pool}, \
         inline projection {}, catch-up {}\n",
        r.bookings,
        r.clients,
        on(r.inline_projection),
        on(r.catch_up)
    );
    if !r.scenarios.is_empty() {
        out.push('\n');
        out.push_str(&part_a_text(r));
    }
    out.push_str(&crate::write_path::text(
        r.busy.as_ref(),
        r.hang_ups.as_ref(),
    ));
    out.push('\n');
    if !r.scenarios.is_empty() {
        out.push_str(&part_a_targets(&r.targets));
    }
    out.push_str(&crate::write_path::targets(
        r.busy.as_ref(),
        r.hang_ups.as_ref(),
        met,
    ));
    let m = &r.machine;
    out.push_str(&format!(
        "\nmachine: {} CPUs ({}), Linux {}, PostgreSQL {}; the api, the clients and Postgres \
         share them\n",
        m.cpus, m.cpu_model, m.kernel, m.postgres
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_slots_never_overlap_and_servers_take_turns() {
        let ids = server_ids("t", 3);
        let base = Utc::now();
        let work = workload(&ids, 10, base);
        assert_eq!(work[0].server_id, ids[0]);
        assert_eq!(work[4].server_id, ids[1]);
        for server in &ids {
            let mine: Vec<_> = work.iter().filter(|b| &b.server_id == server).collect();
            for pair in mine.windows(2) {
                assert!(pair[0].end <= pair[1].start);
            }
        }
    }
}
