//! `slotcast-bench rebuild`: how fast `slotcast admin rebuild` rebuilds the read model from a
//! large event store; prints figures, asserts none.
//!
//! Contract: everything happens in a throwaway database `slotcast_bench_<uuid>`
//! ([`crate::scratch`]), migrated by `slotcast migrate`, seeded by [`crate::seed`] (untimed),
//! and dropped at the end, on error and on Ctrl-C too. The seeded store is left as the api
//! leaves one: every slot outbox cursor (`slot_cursor`) at its stream's end, the table
//! vacuumed and analyzed, and a checkpoint taken, so the runs measure the rebuild, not the
//! seeding's aftermath. Each run is `slotcast admin rebuild` as a child process with stderr
//! not a terminal; its wall time (process start and migration check included) and its own
//! printed rate are both reported. The first run swaps out the empty read model the
//! migration made; the later ones a full one, as an operator's would.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sqlx::{Connection, Executor, PgConnection};

use crate::report::{machine, until_interrupted};
use crate::scratch::Scratch;
use crate::seed::seed;
use crate::slotcast::Slotcast;

/// The target issue 20 sets, in events per second on a store of a million events.
const TARGET: f64 = 50_000.0;
/// The target issue 20 sets for `slotcast audit verify`, in events per second.
const VERIFY_TARGET: f64 = 100_000.0;
/// How long one rebuild may take before the benchmark gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(1800);

/// Seeds an event store (by default 1,000 servers × 1,000 events, decided by the domain
/// itself and stored as the api stores them) and times `slotcast admin rebuild` on it.
#[derive(clap::Args, Debug)]
pub struct RebuildArgs {
    /// Servers (aggregates) in the store.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    servers: u32,
    /// Events per server.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    events_per_server: u32,
    /// Rebuilds to time on the same store.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// The simulation's random seed (the same seed, the same store).
    #[arg(long, default_value_t = 20)]
    seed: u64,
    /// Admin connection, used to create, seed and drop the throwaway database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true,
        default_value = crate::scratch::DEFAULT_DATABASE_URL)]
    database_url: String,
}

pub async fn rebuild(args: RebuildArgs, slotcast: &Slotcast) -> Result<()> {
    let scratch = Scratch::create(&args.database_url).await?;
    let outcome = until_interrupted(run(&args, slotcast, &scratch.url)).await;
    let dropped = scratch.drop_database().await;
    outcome?;
    dropped
}

async fn run(args: &RebuildArgs, slotcast: &Slotcast, url: &str) -> Result<()> {
    let mut migrate = slotcast.command(&["migrate"]);
    migrate
        .env("DATABASE_URL", url)
        .env("SLOTCAST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = migrate.output().await.context("run slotcast migrate")?;
    ensure!(
        out.status.success(),
        "slotcast migrate failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );

    let mut conn = PgConnection::connect(url).await?;
    conn.execute("SET synchronous_commit = off").await?;
    let started = Instant::now();
    let seeded = seed(
        &mut conn,
        args.servers as usize,
        args.events_per_server as usize,
        args.seed,
    )
    .await?;
    // As the api's writer leaves a store: the outbox projected up to each stream's end.
    conn.execute(
        "INSERT INTO slot_cursor (aggregate_id, last_sequence) \
         SELECT aggregate_id, max(sequence) FROM events GROUP BY aggregate_id",
    )
    .await?;
    // As the api's anchoring leaves one: each server's head anchored.
    conn.execute(
        "INSERT INTO audit_anchors (aggregate_id, sequence, hash) \
         SELECT DISTINCT ON (aggregate_id) aggregate_id, sequence, hash FROM events \
         ORDER BY aggregate_id, sequence DESC",
    )
    .await?;
    let seeding = started.elapsed();
    conn.execute("VACUUM (ANALYZE) events").await?;
    conn.execute("CHECKPOINT").await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('events'))")
            .fetch_one(&mut conn)
            .await?;
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    println!(
        "seeded {} events on {} servers in {:.1} s (table with indexes: {size}); then vacuumed, analyzed, checkpointed",
        seeded.events,
        args.servers,
        seeding.as_secs_f64()
    );
    let mix: Vec<String> = seeded
        .by_type
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    println!("events: {}", mix.join(", "));

    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let mut cmd = slotcast.command(&["admin", "rebuild"]);
        cmd.env("DATABASE_URL", url)
            .env("SLOTCAST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
            .await
            .context("slotcast admin rebuild took over 30 minutes")?
            .context("run slotcast admin rebuild")?;
        let wall = started.elapsed();
        ensure!(
            out.status.success(),
            "slotcast admin rebuild failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let wall_rate = seeded.events as f64 / wall.as_secs_f64();
        println!(
            "run {run}: {said}; wall {:.2} s with process start ({wall_rate:.0} events/s)",
            wall.as_secs_f64()
        );
        rates.push(wall_rate);
    }
    let verify_rates = verify(args, slotcast, url, seeded.events).await?;
    let (rows, held): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM rm.reservations), (SELECT count(*) FROM rm.schedule)",
    )
    .fetch_one(&mut conn)
    .await?;
    println!("read model: {rows} reservations, {held} slots held");
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let m = machine(postgres);
    println!(
        "rebuild, wall time of slotcast admin rebuild: median {median:.0} events/s (min {:.0}, max {:.0}) over {} runs",
        rates[0],
        rates[rates.len() - 1],
        rates.len()
    );
    println!(
        "target: >= {TARGET:.0} events/s on {} events: {}",
        seeded.events,
        if median >= TARGET { "met" } else { "NOT met" }
    );
    let (vmin, vmedian, vmax) = spread(verify_rates);
    println!(
        "verify, wall time of slotcast audit verify: median {vmedian:.0} events/s (min {vmin:.0}, max {vmax:.0}) over {} runs",
        args.runs
    );
    println!(
        "target: >= {VERIFY_TARGET:.0} events/s on {} events: {}",
        seeded.events,
        if vmedian >= VERIFY_TARGET {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "machine: {} CPUs ({}), Linux {}, PostgreSQL {}",
        m.cpus, m.cpu_model, m.kernel, m.postgres
    );
    conn.close().await?;
    Ok(())
}

/// Times `slotcast audit verify` on the seeded store (every command decided again, every
/// chain checked against its anchor); a run that finds anything is an error, since the
/// store is exactly as slotcast writes one. Returns the wall-time rates.
async fn verify(
    args: &RebuildArgs,
    slotcast: &Slotcast,
    url: &str,
    events: u64,
) -> Result<Vec<f64>> {
    let mut rates = Vec::new();
    for run in 1..=args.runs {
        let mut cmd = slotcast.command(&["audit", "verify"]);
        cmd.env("DATABASE_URL", url)
            .env("SLOTCAST_LOG", "warn")
            // A prefix of its own: no anchors on NATS for a store seeded by SQL.
            .env("SLOTCAST_NATS_PREFIX", "slotcast_bench_verify")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
            .await
            .context("slotcast audit verify took over 30 minutes")?
            .context("run slotcast audit verify")?;
        let wall = started.elapsed();
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(
            out.status.success(),
            "slotcast audit verify found something in a store as slotcast writes one ({}): {said} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let rate = events as f64 / wall.as_secs_f64();
        let first = said.lines().next().unwrap_or_default();
        println!(
            "verify run {run}: {first}; wall {:.2} s with process start ({rate:.0} events/s)",
            wall.as_secs_f64()
        );
        rates.push(rate);
    }
    Ok(rates)
}

/// (min, median, max) of `rates`.
fn spread(mut rates: Vec<f64>) -> (f64, f64, f64) {
    rates.sort_by(f64::total_cmp);
    match (rates.first(), rates.get(rates.len() / 2), rates.last()) {
        (Some(min), Some(median), Some(max)) => (*min, *median, *max),
        _ => (0.0, 0.0, 0.0),
    }
}
