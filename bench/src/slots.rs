//! `slotcast-bench slots`: how late slot boundaries reach a JetStream consumer, and whether
//! any is missing or doubled, with scheduler replicas running as real processes (and one of
//! them killed mid-run); prints figures, asserts none.
//!
//! Contract: a throwaway database ([`crate::scratch`]) and, per scenario, a NATS prefix of its
//! own (`bench<k>_<hex>`), all removed at the end, on error and on Ctrl-C too. The api is a
//! `slotcast server api` child, for booking only (its NATS consumers idle); the scheduler
//! replicas are `slotcast server scheduler` children, each ready when its `/readyz` says it
//! can publish; every child is killed when the run ends.
//! Delay is measured from each boundary's due time to its arrival at this process's consumer,
//! both on the server clock: the system clock plus the NTP offset the api child reports on
//! `GET /v1/time`, synced to the same NTP servers as the replicas (or none: the system clock).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use slotcast_domain::contract::{self, Names, SlotMessage};
use tokio::task::JoinSet;

use crate::load::percentile;
use crate::report::{machine, print_report, until_interrupted, Machine};
use crate::scratch::Scratch;
use crate::slotcast::{free_port, ntp_list, wait_ready, ApiOptions, Proc, Slotcast};

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
    /// NTP servers for the server clock of the replicas and of the api (whose offset this
    /// process applies too), comma-separated; none: all use the system clock.
    #[arg(long, value_delimiter = ',', env = "SLOTCAST_NTP_SERVERS")]
    ntp: Vec<String>,
    /// Admin connection, used to create and drop the throwaway database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true,
        default_value = crate::scratch::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// NATS with JetStream, for the replicas and this process's consumer.
    #[arg(long, env = "NATS_URL", default_value = crate::nats::DEFAULT_URL)]
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
    nats_server: String,
    machine: Machine,
}

pub async fn slots(args: SlotsArgs, slotcast: &Slotcast) -> Result<()> {
    let (client, jetstream) = crate::nats::connect(&args.nats_url).await?;
    let dir = tempfile::Builder::new()
        .prefix("slotcast-bench-slots-")
        .tempdir()
        .context("create a temporary directory")?;
    let scratch = Scratch::create(&args.database_url).await?;
    let bench = Bench {
        args: &args,
        slotcast,
        scratch: &scratch,
        dir: dir.path(),
        client,
        jetstream,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        prefixes: Mutex::new(Vec::new()),
    };
    // Every child dies with the future (their guards drop); then the NATS streams and the
    // database go.
    let outcome = until_interrupted(bench.run()).await;
    let prefixes = std::mem::take(&mut *bench.prefixes.lock().expect("nothing panics holding it"));
    let cleaned = crate::nats::delete_streams(&bench.jetstream, &prefixes).await;
    let dropped = scratch.drop_database().await;
    print_report(&outcome?, args.json, text)?;
    cleaned?;
    dropped
}

/// What every scenario shares: the arguments, the binary, the database, NATS.
struct Bench<'a> {
    args: &'a SlotsArgs,
    slotcast: &'a Slotcast,
    scratch: &'a Scratch,
    /// Where the children's logs go.
    dir: &'a Path,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    http: reqwest::Client,
    /// NATS prefixes whose streams are deleted at the end.
    prefixes: Mutex<Vec<Names>>,
}

/// The api child and what booking through it takes.
struct Booker {
    _api: Proc,
    base: String,
    operator: String,
    distributor: String,
}

/// The server clock as the api child keeps it: this machine's system clock (which the api
/// shares) plus the NTP offset it applies.
#[derive(Clone, Copy)]
struct ServerClock {
    offset: chrono::Duration,
}

impl ServerClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// The part of `GET /v1/time` the clock is read from.
#[derive(Debug, Deserialize)]
struct TimeAnswer {
    state: String,
    ntp: Option<NtpAnswer>,
}

#[derive(Debug, Deserialize)]
struct NtpAnswer {
    server: String,
    offset_ms: f64,
}

impl TimeAnswer {
    fn clock(&self) -> ServerClock {
        let offset_us = self.ntp.as_ref().map_or(0.0, |n| n.offset_ms * 1000.0);
        ServerClock {
            offset: chrono::Duration::microseconds(offset_us.round() as i64),
        }
    }

    fn describe(&self) -> String {
        match &self.ntp {
            Some(ntp) => format!("synced to {} (offset {:.3} ms)", ntp.server, ntp.offset_ms),
            None => "system clock (no NTP servers given)".to_string(),
        }
    }
}

/// How long the api's server clock gets to sync with the NTP servers given.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

impl Bench<'_> {
    async fn run(&self) -> Result<Report> {
        let args = self.args;
        let options = ApiOptions {
            database_url: &self.scratch.url,
            ntp: &args.ntp,
            inline_projection: true,
            catch_up: true,
            connections: None,
        };
        let api = self.slotcast.api(&options, self.dir, &self.http).await?;
        let booker = Booker {
            base: api.base.clone(),
            _api: api.proc,
            operator: self
                .slotcast
                .token(&self.scratch.url, "operator", "bench-ops")
                .await?,
            distributor: self
                .slotcast
                .token(&self.scratch.url, "distributor", "bench")
                .await?,
        };
        let mut time = self.server_time(&booker).await?;
        let postgres: String = {
            let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&self.scratch.url)
                .await
                .context("cannot connect to the throwaway database")?;
            sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut db)
                .await?
        };
        let mut scenarios = Vec::new();
        for (k, kind) in args.scenarios.iter().enumerate() {
            scenarios.push(self.scenario(k, *kind, &booker, time.clock()).await?);
            time = self.server_time(&booker).await?;
        }
        let met = scenarios
            .iter()
            .all(|s| s.missing == 0 && s.duplicated == 0 && s.delay.p99_ms <= P99_TARGET_MS);
        Ok(Report {
            slots: args.slots,
            servers: args.servers,
            spread_s: args.spread_s,
            clock: time.describe(),
            scenarios,
            p99_target_ms: P99_TARGET_MS,
            met,
            nats_server: self.client.server_info().version,
            machine: machine(postgres),
        })
    }

    /// The api's clock from `GET /v1/time`; with NTP servers given, once it has synced.
    async fn server_time(&self, booker: &Booker) -> Result<TimeAnswer> {
        let deadline = Instant::now() + SYNC_LIMIT;
        loop {
            let answer: TimeAnswer = self
                .http
                .get(format!("{}/v1/time", booker.base))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
                .context("GET /v1/time")?;
            if self.args.ntp.is_empty() || answer.state == "synced" {
                return Ok(answer);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the api's server clock did not sync with NTP {} within {} s (it is {})",
                    self.args.ntp.join(","),
                    SYNC_LIMIT.as_secs(),
                    answer.state
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One scenario, under a NATS prefix of its own.
    async fn scenario(
        &self,
        k: usize,
        kind: ScenarioKind,
        booker: &Booker,
        clock: ServerClock,
    ) -> Result<ScenarioReport> {
        let args = self.args;
        let (prefix, names) = crate::nats::fresh_prefix(k);
        self.prefixes
            .lock()
            .expect("nothing panics holding it")
            .push(names.clone());
        let stream = crate::nats::slots_stream(&self.jetstream, &names).await?;
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                filter_subject: names.slot_subjects(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let receiver = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let next = tokio::select! {
                    _ = &mut stopped => break,
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
        });
        let mut replicas = Vec::new();
        for r in 0..args.replicas {
            replicas.push(self.replica(&prefix, &format!("bench-replica-{r}")).await?);
        }
        let servers: Vec<String> = (0..args.servers).map(|i| format!("k{k}-s{i}")).collect();
        booker.register(&self.http, &servers).await?;
        let spread = chrono::Duration::seconds(args.spread_s as i64);
        let t0 = clock.now() + chrono::Duration::seconds(10);
        let expected = booker
            .book(&self.http, args.slots, &servers, t0, spread)
            .await?;
        if clock.now() >= t0 {
            bail!("booking took longer than the 10 s lead; try fewer --slots");
        }
        if kind == ScenarioKind::KillOne {
            sleep_until(clock, t0 + spread / 2).await;
            if let Some(first) = replicas.first_mut() {
                first.start_kill()?;
            }
        }
        sleep_until(clock, t0 + spread + chrono::Duration::seconds(2)).await;
        // Stragglers, then a second for any late duplicate.
        let deadline = clock.now() + chrono::Duration::seconds(10);
        while clock.now() < deadline {
            let stored = stream.clone().info().await?.state.messages;
            if stored as usize >= expected.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stop.send(());
        let seen = receiver.await.context("the consumer task")?;
        let stored = stream.clone().info().await?.state.messages;
        for replica in replicas {
            replica.stop().await;
        }
        Ok(figures(kind, args.replicas, &expected, &seen, stored))
    }

    /// Starts one `slotcast server scheduler` child and waits until its `/readyz` says it can
    /// publish.
    async fn replica(&self, prefix: &str, name: &str) -> Result<Proc> {
        let ops = free_port()?;
        let mut cmd = self.slotcast.command(&["server", "scheduler"]);
        cmd.env("DATABASE_URL", &self.scratch.url)
            .env("NATS_URL", &self.args.nats_url)
            .env("SLOTCAST_NATS_PREFIX", prefix)
            .env("SLOTCAST_NTP_SERVERS", ntp_list(&self.args.ntp))
            .env("SLOTCAST_SCHEDULER_REPLICA", name)
            .env("SLOTCAST_SCHEDULER_OPS_ADDR", format!("127.0.0.1:{ops}"))
            .env("SLOTCAST_LOG", "error");
        let mut proc = Proc::spawn(
            cmd,
            &format!("scheduler replica {name}"),
            &self.dir.join(format!("{prefix}-{name}.log")),
        )?;
        wait_ready(&self.http, &format!("http://127.0.0.1:{ops}"), &mut proc).await?;
        Ok(proc)
    }
}

/// One delivery seen by the consumer.
struct Delivery {
    id: String,
    delay_ms: f64,
    late_ms: f64,
}

impl Booker {
    async fn register(&self, http: &reqwest::Client, servers: &[String]) -> Result<()> {
        for chunk in servers.chunks(CLIENTS) {
            let mut set = JoinSet::new();
            for id in chunk {
                let request = http
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

    /// Books `slots` slots whose boundaries all fall in `[t0, t0 + spread]`; returns the
    /// message ids the stream should then hold.
    async fn book(
        &self,
        http: &reqwest::Client,
        slots: u32,
        servers: &[String],
        t0: DateTime<Utc>,
        spread: chrono::Duration,
    ) -> Result<BTreeSet<String>> {
        let n = i64::from(slots);
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
                let request = http
                    .post(format!("{}/v1/reservations", self.base))
                    .bearer_auth(&self.distributor)
                    .json(&serde_json::json!({
                        "server_id": servers[i as usize % servers.len()],
                        "start": start.to_rfc3339_opts(SecondsFormat::Millis, true),
                        "end": end.to_rfc3339_opts(SecondsFormat::Millis, true),
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

async fn sleep_until(clock: ServerClock, at: DateTime<Utc>) {
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
) -> ScenarioReport {
    let mut first: BTreeMap<&str, &Delivery> = BTreeMap::new();
    let mut repeats = 0;
    for d in seen {
        match first.entry(d.id.as_str()) {
            // A redelivery is counted, never timed: the boundary reached the consumer before.
            std::collections::btree_map::Entry::Occupied(_) => repeats += 1,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(d);
            }
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
    }
}

fn text(r: &Report) -> String {
    let mut out = format!(
        "slotcast-bench slots: {} slots ({} boundaries) over {} s across {} servers; clock: {}\n\n",
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
        out.push_str(&format!(
            "{:?}: the stream holds {} messages\n",
            s.scenario, s.stored
        ));
    }
    out.push_str(&format!(
        "\ntarget: delay p99 <= {:.0} ms, none missing, none duplicated, in every scenario: {}\n",
        r.p99_target_ms,
        if r.met { "met" } else { "NOT met" }
    ));
    out.push_str(&format!(
        "machine: {} cpus, {}, kernel {}, Postgres {}, nats-server {}\n",
        r.machine.cpus, r.machine.cpu_model, r.machine.kernel, r.machine.postgres, r.nats_server
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_clock_is_read_from_the_time_answer() {
        let synced: TimeAnswer = serde_json::from_str(
            r#"{"t_receive":"2030-01-01T00:00:00.000001Z","t_transmit":"2030-01-01T00:00:00.000002Z",
                "now":"2030-01-01T00:00:00.000002Z","source":"ntp","state":"synced",
                "ntp":{"server":"127.0.0.1:11124","stratum":8,"offset_ms":-1.2345,"delay_ms":0.1,
                       "synced_at":"2030-01-01T00:00:00.000Z","agreeing":1,"step_refused":null}}"#,
        )
        .unwrap();
        assert_eq!(synced.state, "synced");
        assert_eq!(synced.clock().offset, chrono::Duration::microseconds(-1235));
        assert_eq!(
            synced.describe(),
            "synced to 127.0.0.1:11124 (offset -1.234 ms)"
        );
        let system: TimeAnswer =
            serde_json::from_str(r#"{"source":"system","state":"unsynced","ntp":null}"#).unwrap();
        assert_eq!(system.clock().offset, chrono::Duration::zero());
        assert_eq!(system.describe(), "system clock (no NTP servers given)");
    }

    fn delivery(id: &str, delay_ms: f64) -> Delivery {
        Delivery {
            id: id.to_string(),
            delay_ms,
            late_ms: delay_ms / 2.0,
        }
    }

    #[test]
    fn boundaries_are_counted_missing_and_duplicated_by_message_id() {
        let expected: BTreeSet<String> = ["r1:scheduled:1", "r1:opened:1", "r1:closed:1"]
            .map(str::to_string)
            .into();
        let seen = [
            delivery("r1:scheduled:1", 9000.0),
            delivery("r1:opened:1", 2.0),
            delivery("r1:opened:1", 3.0),
        ];
        let r = figures(ScenarioKind::AllUp, 2, &expected, &seen, 2);
        assert_eq!((r.boundaries, r.delivered, r.missing), (3, 2, 1));
        // The second delivery of opened:1; the stream holds no more than one per id.
        assert_eq!(r.duplicated, 1);
        // Only window edges are timed (the scheduled message is due at the booking), each at
        // its first delivery.
        assert_eq!(r.delay.max_ms, 2.0);
        assert_eq!(r.late.p50_ms, 1.0);
        // A third stored message no consumer saw is a duplicate too.
        assert_eq!(
            figures(ScenarioKind::AllUp, 2, &expected, &seen, 3).duplicated,
            2
        );
    }
}
