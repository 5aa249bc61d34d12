//! `slotcast bench slots`: how late slot boundaries reach a JetStream consumer, and whether
//! any is missing or doubled, with scheduler replicas running as real processes (and one of
//! them killed mid-run); prints figures, asserts none.
//!
//! Contract: a throwaway database (dropped at the end, on error and on Ctrl-C too) and, per
//! scenario, a NATS prefix of its own (`bench<k>_<hex>`) whose stream is deleted afterwards.
//! The api runs in this process (for booking only: its NATS consumers are off); the scheduler
//! replicas are `slotcast server scheduler` children of this process, killed when it ends.
//! Delay is measured from each boundary's due time to its arrival at this process's consumer,
//! both on the server clock (the same NTP servers as the replicas, or the system clock).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use slotcast_api::clock::{ClockConfig, ServerClock};
use slotcast_api::ApiConfig;
use slotcast_domain::contract::{self, Names, SlotMessage};
use slotcast_domain::Role;
use slotcast_nats::NatsConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bench::{machine, percentile, print_report, until_interrupted, Machine, Scratch};

/// The targets the issue sets.
const P99_TARGET_MS: f64 = 20.0;
/// Bookings in flight at once while setting up.
const CLIENTS: usize = 16;

/// Delay from each slot boundary's due time (server clock) to its delivery to a JetStream
/// consumer, p50/p99/max, and the boundaries missing or duplicated; with all scheduler
/// replicas up, and with one killed (SIGKILL) halfway. Needs Postgres and NATS with
/// JetStream; works in a throwaway database and NATS prefix it removes at the end.
#[derive(clap::Args, Debug)]
pub struct SlotsArgs {
    /// Slots booked per scenario (each has a scheduled message, an opened and a closed boundary).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    slots: u32,
    /// Servers the slots are spread over (round-robin).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    servers: u32,
    /// Seconds over which every boundary falls.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=3600))]
    spread_s: u64,
    /// Scheduler replicas (child processes).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    replicas: u32,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "all-up,kill-one"
    )]
    scenarios: Vec<ScenarioKind>,
    /// NTP servers for the replicas' and this process's server clock, comma-separated;
    /// none: both use the system clock.
    #[arg(long, value_delimiter = ',', env = "SLOTCAST_NTP_SERVERS")]
    ntp: Vec<String>,
    /// Admin connection, used to create and drop the throwaway database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true,
        default_value = crate::config::DEFAULT_DATABASE_URL)]
    database_url: String,
    #[arg(long, env = "NATS_URL", default_value = NatsConfig::DEFAULT_URL)]
    nats_url: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Every replica runs throughout.
    AllUp,
    /// The first replica is killed (SIGKILL) halfway through the spread.
    KillOne,
}

#[derive(Debug, Serialize)]
struct Stats {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct ScenarioReport {
    scenario: ScenarioKind,
    replicas: u32,
    /// Boundaries booked (2 per slot).
    boundaries: usize,
    /// Distinct boundaries delivered to the consumer.
    delivered: usize,
    missing: usize,
    /// Deliveries beyond the first of a boundary, plus stored messages beyond one per id.
    duplicated: usize,
    /// Messages the stream holds.
    stored: u64,
    /// Due time to delivery at the consumer.
    delay: Stats,
    /// Due time to publication, as the scheduler stamped it (`late_ms`).
    late: Stats,
    /// Boundaries published per replica (`published_by`).
    per_replica: BTreeMap<String, i64>,
}

#[derive(Debug, Serialize)]
struct Report {
    slots: u32,
    servers: u32,
    spread_s: u64,
    clock: String,
    scenarios: Vec<ScenarioReport>,
    p99_target_ms: f64,
    met: bool,
    machine: Machine,
}

pub async fn slots(args: SlotsArgs) -> Result<()> {
    let scratch = Scratch::create(&args.database_url).await?;
    let shutdown = CancellationToken::new();
    let outcome = until_interrupted(run(&args, &scratch, shutdown.clone())).await;
    shutdown.cancel();
    let dropped = scratch.drop_database().await;
    print_report(&outcome?, args.json, text)?;
    dropped
}

/// What every scenario shares: the database, the api, the clock, the tokens.
struct Bench<'a> {
    args: &'a SlotsArgs,
    scratch: &'a Scratch,
    pool: sqlx::PgPool,
    clock: ServerClock,
    http: reqwest::Client,
    base: String,
    operator: String,
    distributor: String,
}

async fn run(args: &SlotsArgs, scratch: &Scratch, shutdown: CancellationToken) -> Result<Report> {
    slotcast_readmodel::db::migrate(&scratch.url).await?;
    let pool = slotcast_readmodel::db::connect(&scratch.url, 4).await?;
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    let clock_config = ClockConfig {
        servers: args.ntp.clone(),
        ..ClockConfig::default()
    };
    let clock = ServerClock::new(clock_config.clone());
    if !args.ntp.is_empty() {
        clock
            .sync_once()
            .await
            .with_context(|| format!("cannot sync with NTP {}", args.ntp.join(",")))?;
        tokio::spawn(clock.clone().run(shutdown.clone()));
    }
    let mut config = ApiConfig::new(scratch.url.clone());
    config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.clock = clock_config;
    config.nats = None;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let api = tokio::spawn(slotcast_api::serve(config, shutdown.clone(), move |addr| {
        let _ = tx.send(addr);
    }));
    let addr = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .map_err(|_| anyhow!("the in-process api did not listen within 60 s"))?
        .map_err(|_| anyhow!("the in-process api stopped before listening"))?;
    let bench = Bench {
        args,
        scratch,
        clock: clock.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: format!("http://{addr}"),
        operator: slotcast_api::auth::create_token(&pool, Role::Operator, "bench-ops").await?,
        distributor: slotcast_api::auth::create_token(&pool, Role::Distributor, "bench").await?,
        pool,
    };
    let mut scenarios = Vec::new();
    for (k, kind) in args.scenarios.iter().enumerate() {
        scenarios.push(bench.scenario(k, *kind).await?);
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), api).await;
    let status = clock.status();
    let clock = match &status.ntp {
        Some(ntp) => format!("synced to {} (offset {:.3} ms)", ntp.server, ntp.offset_ms),
        None => "system clock (no NTP servers given)".to_string(),
    };
    let met = scenarios
        .iter()
        .all(|s| s.missing == 0 && s.duplicated == 0 && s.delay.p99_ms <= P99_TARGET_MS);
    Ok(Report {
        slots: args.slots,
        servers: args.servers,
        spread_s: args.spread_s,
        clock,
        scenarios,
        p99_target_ms: P99_TARGET_MS,
        met,
        machine: machine(postgres),
    })
}

/// One delivery seen by the consumer.
struct Delivery {
    id: String,
    delay_ms: f64,
    late_ms: f64,
}

impl Bench<'_> {
    async fn scenario(&self, k: usize, kind: ScenarioKind) -> Result<ScenarioReport> {
        let args = self.args;
        let prefix = format!(
            "bench{k}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let names = Names::new(&prefix).expect("a valid prefix");
        let mut nats_config = NatsConfig::new(args.nats_url.clone());
        nats_config.names = names.clone();
        let nats = slotcast_nats::connect(nats_config, "slotcast-bench").await?;
        for _ in 0..100 {
            if nats.connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !nats.connected() {
            bail!(
                "NATS is not reachable at {} (run scripts/services)",
                args.nats_url
            );
        }
        let info = nats.ensure_slots_stream().await?;
        let stream = nats.jetstream.get_stream(&info.config.name).await?;
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                filter_subject: names.slot_subjects(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let stop = CancellationToken::new();
        let receiver = {
            let (clock, stop) = (self.clock.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => break,
                        next = messages.next() => next,
                    };
                    let Some(Ok(m)) = next else { break };
                    let received = clock.now();
                    if let Ok(slot) = serde_json::from_slice::<SlotMessage>(&m.payload) {
                        seen.push(Delivery {
                            id: contract::slot_message_id(
                                &slot.reservation_id,
                                slot.kind,
                                slot.revision,
                            ),
                            delay_ms: ms(received - slot.due_at),
                            late_ms: slot.late_ms,
                        });
                    }
                }
                seen
            })
        };
        let mut replicas = Vec::new();
        for r in 0..args.replicas {
            replicas.push(self.replica(&prefix, &format!("bench-replica-{r}")).await?);
        }
        let servers: Vec<String> = (0..args.servers).map(|i| format!("k{k}-s{i}")).collect();
        self.register(&servers).await?;
        let spread = chrono::Duration::seconds(args.spread_s as i64);
        let t0 = self.clock.now() + chrono::Duration::seconds(10);
        let expected = self.book(&servers, t0, spread).await?;
        if self.clock.now() >= t0 {
            bail!("booking took longer than the 10 s lead; try fewer --slots");
        }
        if kind == ScenarioKind::KillOne {
            sleep_until(&self.clock, t0 + spread / 2).await;
            if let Some(first) = replicas.first_mut() {
                first.start_kill().context("kill a replica")?;
            }
        }
        sleep_until(&self.clock, t0 + spread + chrono::Duration::seconds(2)).await;
        // Stragglers, then a second for any late duplicate.
        let deadline = self.clock.now() + chrono::Duration::seconds(10);
        while self.clock.now() < deadline {
            let stored = stream.clone().info().await?.state.messages;
            if stored as usize >= expected.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let seen = receiver.await.context("the consumer task")?;
        let state = stream.clone().info().await?.state.clone();
        for mut child in replicas {
            let _ = child.kill().await;
        }
        let _ = nats.jetstream.delete_stream(&info.config.name).await;
        let per_replica: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT published_by, count(*) FROM public.slot_boundaries \
             WHERE server_id LIKE $1 GROUP BY 1 ORDER BY 1",
        )
        .bind(format!("k{k}-%"))
        .fetch_all(&self.pool)
        .await?;
        Ok(figures(
            kind,
            args.replicas,
            &expected,
            &seen,
            state.messages,
            per_replica,
        ))
    }

    /// Starts one `slotcast server scheduler` child and waits until it runs.
    async fn replica(&self, prefix: &str, name: &str) -> Result<Child> {
        let exe = std::env::current_exe().context("find the slotcast binary")?;
        let ntp = if self.args.ntp.is_empty() {
            // A closed port: the replica runs on the system clock, as this process does.
            "127.0.0.1:9".to_string()
        } else {
            self.args.ntp.join(",")
        };
        let mut child = Command::new(exe)
            .args(["server", "scheduler"])
            .env("DATABASE_URL", &self.scratch.url)
            .env("NATS_URL", &self.args.nats_url)
            .env("SLOTCAST_NATS_PREFIX", prefix)
            .env("SLOTCAST_NTP_SERVERS", ntp)
            .env("SLOTCAST_SCHEDULER_REPLICA", name)
            .env("SLOTCAST_LOG", "error")
            .env_remove("SLOTCAST_SCHEDULER_OPS_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start a scheduler replica")?;
        let stdout = child.stdout.take().context("replica stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let started = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        match started {
            Ok(Ok(Some(line))) if line.starts_with("slotcast scheduler running") => Ok(child),
            _ => bail!("scheduler replica {name} did not start within 30 s"),
        }
    }

    async fn register(&self, servers: &[String]) -> Result<()> {
        for chunk in servers.chunks(CLIENTS) {
            let mut set = JoinSet::new();
            for id in chunk {
                let request = self
                    .http
                    .post(format!("{}/v1/servers", self.base))
                    .bearer_auth(&self.operator)
                    .json(&serde_json::json!({
                        "id": id, "name": id, "capacity": 64,
                        "min_lead_s": 0, "preroll_s": 0, "grace_s": 0,
                        "carriers": [{"name": "carrier-a", "ingest_url": "rtsp://127.0.0.2:8554"}],
                    }));
                set.spawn(async move { request.send().await?.error_for_status() });
            }
            while let Some(done) = set.join_next().await {
                done.context("register task")?
                    .context("register a server")?;
            }
        }
        Ok(())
    }

    /// Books `--slots` slots whose boundaries all fall in `[t0, t0 + spread]`; returns the
    /// message ids the stream should then hold.
    async fn book(
        &self,
        servers: &[String],
        t0: DateTime<Utc>,
        spread: chrono::Duration,
    ) -> Result<BTreeSet<String>> {
        let n = self.args.slots as i64;
        // Starts over the first three quarters, lengths up to the last quarter.
        let starts = spread * 3 / 4;
        let longest = spread / 4;
        let mut expected = BTreeSet::new();
        let indexes: Vec<i64> = (0..n).collect();
        for chunk in indexes.chunks(CLIENTS) {
            let mut set = JoinSet::new();
            for &i in chunk {
                let start = t0 + starts * i as i32 / n as i32;
                let end = start + longest * (1 + (i % 4) as i32) / 4;
                let request = self
                    .http
                    .post(format!("{}/v1/reservations", self.base))
                    .bearer_auth(&self.distributor)
                    .json(&serde_json::json!({
                        "server_id": servers[i as usize % servers.len()],
                        "start": slotcast_domain::time::rfc3339_ms(&start),
                        "end": slotcast_domain::time::rfc3339_ms(&end),
                    }));
                set.spawn(async move {
                    let answer: serde_json::Value =
                        request.send().await?.error_for_status()?.json().await?;
                    Ok::<_, reqwest::Error>(answer["id"].as_str().unwrap_or_default().to_string())
                });
            }
            while let Some(done) = set.join_next().await {
                let id = done.context("booking task")?.context("book a slot")?;
                if id.is_empty() {
                    bail!("a booking was not accepted");
                }
                // Booked ahead of its window, each slot is also announced at once.
                for kind in [
                    contract::SlotKind::Scheduled,
                    contract::SlotKind::Opened,
                    contract::SlotKind::Closed,
                ] {
                    expected.insert(contract::slot_message_id(&id, kind, 1));
                }
            }
        }
        Ok(expected)
    }
}

async fn sleep_until(clock: &ServerClock, at: DateTime<Utc>) {
    if let Ok(d) = (at - clock.now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

fn ms(d: chrono::Duration) -> f64 {
    d.num_microseconds()
        .map_or(f64::MAX, |us| us as f64 / 1000.0)
}

fn stats(mut values: Vec<f64>) -> Stats {
    values.sort_by(f64::total_cmp);
    let as_duration: Vec<Duration> = values
        .iter()
        .map(|v| Duration::from_secs_f64(v.max(0.0) / 1000.0))
        .collect();
    let pick = |p: f64| percentile(&as_duration, p).as_secs_f64() * 1000.0;
    Stats {
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: values.last().copied().unwrap_or(0.0),
    }
}

/// The first deliveries of `opened` and `closed` messages.
fn edges<'a>(first: &'a BTreeMap<&str, &'a Delivery>) -> impl Iterator<Item = &'a Delivery> {
    let scheduled = format!(":{}:", contract::SlotKind::Scheduled.as_str());
    first
        .values()
        .copied()
        .filter(move |d| !d.id.contains(&scheduled))
}

fn figures(
    scenario: ScenarioKind,
    replicas: u32,
    expected: &BTreeSet<String>,
    seen: &[Delivery],
    stored: u64,
    per_replica: Vec<(Option<String>, i64)>,
) -> ScenarioReport {
    let mut first: BTreeMap<&str, &Delivery> = BTreeMap::new();
    let mut repeats = 0;
    for d in seen {
        if first.insert(d.id.as_str(), d).is_some() {
            repeats += 1;
        }
    }
    let delivered = expected
        .iter()
        .filter(|id| first.contains_key(id.as_str()))
        .count();
    let unexpected = first.len() - delivered;
    let extra_stored = (stored as usize).saturating_sub(first.len());
    ScenarioReport {
        scenario,
        replicas,
        boundaries: expected.len(),
        delivered,
        missing: expected.len() - delivered,
        duplicated: repeats + extra_stored + unexpected,
        stored,
        // Timing is of the window edges; `scheduled` is due at the booking.
        delay: stats(edges(&first).map(|d| d.delay_ms).collect()),
        late: stats(edges(&first).map(|d| d.late_ms).collect()),
        per_replica: per_replica
            .into_iter()
            .map(|(who, n)| (who.unwrap_or_else(|| "unpublished".into()), n))
            .collect(),
    }
}

fn text(r: &Report) -> String {
    let mut out = format!(
        "slotcast bench slots: {} slots ({} boundaries) over {} s across {} servers; clock: {}\n\n",
        r.slots,
        r.slots * 2,
        r.spread_s,
        r.servers,
        r.clock
    );
    out.push_str(
        "scenario | replicas | delivered | missing | duplicated | delay p50 |  p99 |  max | late p50 |  p99 |  max\n\
         -------- | -------- | --------- | ------- | ---------- | --------- | ---- | ---- | -------- | ---- | ----\n",
    );
    for s in &r.scenarios {
        let name = match s.scenario {
            ScenarioKind::AllUp => "all up",
            ScenarioKind::KillOne => "kill one",
        };
        out.push_str(&format!(
            "{name:>8} | {:>8} | {:>4}/{:<4} | {:>7} | {:>10} | {:>6.1} ms | {:>4.1} | {:>4.1} | {:>5.1} ms | {:>4.1} | {:>4.1}\n",
            s.replicas,
            s.delivered,
            s.boundaries,
            s.missing,
            s.duplicated,
            s.delay.p50_ms,
            s.delay.p99_ms,
            s.delay.max_ms,
            s.late.p50_ms,
            s.late.p99_ms,
            s.late.max_ms,
        ));
    }
    out.push('\n');
    for s in &r.scenarios {
        let per: Vec<String> = s
            .per_replica
            .iter()
            .map(|(who, n)| format!("{who}: {n}"))
            .collect();
        out.push_str(&format!(
            "{:?}: published per replica: {}; the stream holds {} messages\n",
            s.scenario,
            per.join(", "),
            s.stored
        ));
    }
    out.push_str(&format!(
        "\ntarget: delay p99 <= {:.0} ms, none missing, none duplicated, in every scenario: {}\n",
        r.p99_target_ms,
        if r.met { "met" } else { "NOT met" }
    ));
    out.push_str(&format!(
        "machine: {} cpus, {}, kernel {}, Postgres {}\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.kernel, r.machine.postgres
    ));
    out
}
