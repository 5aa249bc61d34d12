//! A realistic event store for `slotcast-bench rebuild`, written straight into Postgres: many
//! servers' histories decided by the domain itself, stored row for row as the api stores them.
//!
//! Contract: every event comes from `ServerSchedule::decide` on the state `apply` built, for a
//! command an operator, a broadcaster or slotcast's own consumers would send (registrations,
//! bookings accepted and refused, reschedules, cancels, key rotations, server updates, ingest
//! reports, windows opened and closed), on a simulated clock; the same seed gives the same
//! store. A row is built in one place ([`event_row`]: what `api/src/store/lane.rs` writes,
//! the command under `metadata.command`, hashed and chained) and written in one place
//! ([`insert_rows`], the store's own statement).
//! Servers' events are interleaved as a live store's are, one decision per server in turn.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use slotcast_domain::audit::{Hash, Metadata, StoredRow, GENESIS};
use slotcast_domain::contract::{
    CameraSource, CameraTransport, IngestKind, IngestMessage, IngestMode, SlotKind, SlotMessage,
    StreamCursor,
};
use slotcast_domain::{
    Actor, Carrier, Command, CommandKind, Role, ScheduleEvent, ServerPatch, ServerSchedule,
    ServerSpec,
};
use sqlx::PgConnection;

/// Rows per insert statement (each its own transaction, as a group commit is).
const ROWS_PER_INSERT: usize = 2000;
/// The simulated clock advances this much between two decisions on a server.
const STEP_S: i64 = 360;

/// The row for `event`, the outcome of `command` on `aggregate_id` at `sequence`, as the api
/// writes it (`api/src/store/lane.rs`): the command under `metadata.command`, hashed and
/// chained from `head`, which becomes this row's hash.
pub fn event_row(
    aggregate_id: &str,
    sequence: i64,
    command: &Command,
    request_id: &str,
    event: &ScheduleEvent,
    head: &mut Hash,
) -> Result<StoredRow> {
    let metadata = Metadata {
        actor: command.actor.name.clone(),
        request_id: request_id.to_string(),
        recorded_at: slotcast_domain::time::rfc3339_us(&command.now),
        reservation_id: event.reservation_id().map(str::to_string),
        command: Some(command.clone()),
    };
    Ok(StoredRow::seal(
        aggregate_id,
        sequence,
        event,
        &metadata,
        head,
    )?)
}

/// Writes `rows` as the api's store does (`INSERT … SELECT … FROM unnest`, payload and
/// metadata as the text that was hashed), in one statement.
pub async fn insert_rows(conn: &mut PgConnection, rows: &[StoredRow]) -> Result<()> {
    let ids: Vec<&str> = rows.iter().map(|r| r.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let versions: Vec<&str> = rows.iter().map(|r| r.event_version.as_str()).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
    let metadata: Vec<&str> = rows.iter().map(|r| r.metadata.as_str()).collect();
    let prev_hashes: Vec<&[u8]> = rows.iter().map(|r| r.prev_hash.as_slice()).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata, prev_hash, hash) \
         SELECT $1, id, seq, t, v, p::json, m::json, ph, h \
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::bytea[], $9::bytea[]) AS u(id, seq, t, v, p, m, ph, h)",
    )
    .bind(ServerSchedule::TYPE)
    .bind(&ids)
    .bind(&sequences)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .bind(&prev_hashes)
    .bind(&hashes)
    .execute(conn)
    .await
    .context("insert seeded events")?;
    Ok(())
}

/// What was seeded, by event type.
#[derive(Debug, Default)]
pub struct Seeded {
    pub events: u64,
    pub by_type: BTreeMap<String, u64>,
}

/// Seeds `servers` servers with about `per_server` events each.
pub async fn seed(
    conn: &mut PgConnection,
    servers: usize,
    per_server: usize,
    seed: u64,
) -> Result<Seeded> {
    let mut sim = Sim::new(servers, seed);
    let mut seeded = Seeded::default();
    let mut rows = Vec::with_capacity(ROWS_PER_INSERT);
    for _ in 0..per_server {
        for server in 0..servers {
            let row = sim.step(server)?;
            *seeded.by_type.entry(row.event_type.clone()).or_default() += 1;
            seeded.events += 1;
            rows.push(row);
            if rows.len() == ROWS_PER_INSERT {
                insert_rows(conn, &rows).await?;
                rows.clear();
            }
        }
        sim.tick();
    }
    insert_rows(conn, &rows).await?;
    Ok(seeded)
}

/// A reservation the simulation booked, followed through its window.
struct Booked {
    id: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    opens_at: DateTime<Utc>,
    closes_at: DateTime<Utc>,
    key_hash: String,
    owner: Actor,
    revision: u32,
    opened: bool,
    /// A publisher will connect (decided when the window opens).
    will_connect: bool,
    connected: bool,
    disconnected: bool,
}

struct Server {
    id: String,
    schedule: ServerSchedule,
    sequence: i64,
    /// The hash of the server's last row (the next row's `prev_hash`).
    head: Hash,
    booked: Vec<Booked>,
}

struct Sim {
    rng: StdRng,
    now: DateTime<Utc>,
    servers: Vec<Server>,
    /// NATS stream sequences of the ingest and slot streams, shared by every server as a
    /// JetStream stream's are.
    ingest_seq: u64,
    slots_seq: u64,
    owners: Vec<Actor>,
}

const NATS_EPOCH_MS: i64 = 1_900_000_000_000;

fn operator() -> Actor {
    Actor {
        role: Role::Operator,
        name: "ops".into(),
    }
}

fn service() -> Actor {
    Actor {
        role: Role::Service,
        name: "slotcast".into(),
    }
}

impl Sim {
    fn new(servers: usize, seed: u64) -> Self {
        let start = Utc
            .with_ymd_and_hms(2031, 1, 1, 0, 0, 0)
            .single()
            .expect("a fixed valid date");
        Self {
            rng: StdRng::seed_from_u64(seed),
            now: start,
            servers: (0..servers)
                .map(|i| Server {
                    id: format!("srv-{i:05}"),
                    schedule: ServerSchedule::default(),
                    sequence: 0,
                    head: GENESIS,
                    booked: Vec::new(),
                })
                .collect(),
            ingest_seq: 0,
            slots_seq: 0,
            owners: (0..200)
                .map(|i| Actor {
                    role: Role::Distributor,
                    name: format!("broadcaster-{i}"),
                })
                .collect(),
        }
    }

    fn tick(&mut self) {
        self.now += Duration::seconds(STEP_S);
    }

    fn hex(&mut self, bytes: usize) -> String {
        let raw: Vec<u8> = (0..bytes).map(|_| self.rng.random()).collect();
        hex::encode(raw)
    }

    fn key_hash(&mut self) -> String {
        let key: [u8; 16] = self.rng.random();
        hex::encode(Sha256::digest(key))
    }

    fn reservation_id(&mut self) -> String {
        let ms = u64::try_from(self.now.timestamp_millis()).unwrap_or(0);
        let random: [u8; 10] = self.rng.random();
        uuid::Builder::from_unix_timestamp_millis(ms, &random)
            .into_uuid()
            .to_string()
    }

    /// The next decision on server `i`, decided and applied; its row.
    fn step(&mut self, i: usize) -> Result<StoredRow> {
        // A command may be refused with an error (no event), like a reschedule of a slot that
        // just closed: pick another then, as a client would try something else.
        for _ in 0..20 {
            let (actor, kind) = self.next_command(i);
            let now = match &kind {
                // The consumers record a message a few milliseconds after it was published.
                CommandKind::RecordWindow { message, .. } => {
                    message.published_at + Duration::milliseconds(3)
                }
                _ => self.now,
            };
            let command = Command { now, actor, kind };
            let server = &mut self.servers[i];
            let Ok(event) = server.schedule.decide(command.clone()) else {
                continue;
            };
            server.schedule.apply(event.clone());
            server.sequence += 1;
            let request_id = uuid::Builder::from_random_bytes(self.rng.random())
                .into_uuid()
                .to_string();
            let server = &mut self.servers[i];
            let row = event_row(
                &server.id,
                server.sequence,
                &command,
                &request_id,
                &event,
                &mut server.head,
            )?;
            self.follow(i, &event);
            return Ok(row);
        }
        bail!("server {i}: no command was accepted in 20 tries")
    }

    /// Keeps the simulation's own list of booked slots in step with what was decided.
    fn follow(&mut self, i: usize, event: &ScheduleEvent) {
        let booked = &mut self.servers[i].booked;
        match event {
            ScheduleEvent::ReservationAccepted {
                reservation_id,
                owner,
                start,
                end,
                opens_at,
                closes_at,
                stream_key_hash,
                ..
            } => booked.push(Booked {
                id: reservation_id.clone(),
                start: *start,
                end: *end,
                opens_at: *opens_at,
                closes_at: *closes_at,
                key_hash: stream_key_hash.clone(),
                owner: Actor {
                    role: Role::Distributor,
                    name: owner.clone(),
                },
                revision: 1,
                opened: false,
                will_connect: false,
                connected: false,
                disconnected: false,
            }),
            ScheduleEvent::ReservationCancelled { reservation_id, .. } => {
                booked.retain(|b| &b.id != reservation_id);
            }
            ScheduleEvent::ReservationRescheduled {
                reservation_id,
                start,
                end,
                opens_at,
                closes_at,
                ..
            } => {
                if let Some(b) = booked.iter_mut().find(|b| &b.id == reservation_id) {
                    (b.start, b.end, b.opens_at, b.closes_at) =
                        (*start, *end, *opens_at, *closes_at);
                    b.revision += 1;
                }
            }
            ScheduleEvent::StreamKeyRotated {
                reservation_id,
                stream_key_hash,
                ..
            } => {
                if let Some(b) = booked.iter_mut().find(|b| &b.id == reservation_id) {
                    b.key_hash = stream_key_hash.clone();
                    b.revision += 1;
                }
            }
            ScheduleEvent::WindowOpened { reservation_id, .. } => {
                let connect = self.rng.random_bool(0.8);
                let booked = &mut self.servers[i].booked;
                if let Some(b) = booked.iter_mut().find(|b| &b.id == reservation_id) {
                    b.opened = true;
                    b.will_connect = connect;
                }
            }
            ScheduleEvent::IngestReported {
                reservation_id,
                kind,
                ..
            } => {
                if let Some(b) = booked.iter_mut().find(|b| &b.id == reservation_id) {
                    match kind {
                        IngestKind::Connected => b.connected = true,
                        IngestKind::Disconnected | IngestKind::Failed => b.disconnected = true,
                        IngestKind::Refused => {}
                    }
                }
            }
            ScheduleEvent::WindowClosed { reservation_id, .. } => {
                booked.retain(|b| &b.id != reservation_id);
            }
            ScheduleEvent::ServerRegistered { .. }
            | ScheduleEvent::ServerUpdated { .. }
            | ScheduleEvent::ReservationRejected { .. }
            | ScheduleEvent::RescheduleRejected { .. } => {}
        }
    }

    /// What server `i` is asked next: a due boundary or ingest report first, as the slot
    /// clock and the streamer would send them; otherwise a broadcaster's or an operator's
    /// request, at random.
    fn next_command(&mut self, i: usize) -> (Actor, CommandKind) {
        let now = self.now;
        if self.servers[i].schedule.settings().is_none() {
            return (operator(), CommandKind::RegisterServer(self.spec(i)));
        }
        let booked = &self.servers[i].booked;
        if let Some(k) = booked.iter().position(|b| !b.opened && b.opens_at <= now) {
            let message = self.slot_message(i, k, SlotKind::Opened);
            return self.window(message);
        }
        if let Some(k) = booked
            .iter()
            .position(|b| b.opened && b.will_connect && !b.connected)
        {
            let report = self.ingest(i, k, IngestKind::Connected);
            return self.report(report);
        }
        if let Some(k) = booked.iter().position(|b| b.closes_at <= now) {
            let b = &booked[k];
            if b.connected && !b.disconnected {
                let kind = if self.rng.random_bool(0.9) {
                    IngestKind::Disconnected
                } else {
                    IngestKind::Failed
                };
                let report = self.ingest(i, k, kind);
                return self.report(report);
            }
            let message = self.slot_message(i, k, SlotKind::Closed);
            return self.window(message);
        }
        let server = &self.servers[i];
        let roll: f64 = self.rng.random();
        let future: Vec<usize> = (0..server.booked.len())
            .filter(|&k| server.booked[k].end > now + Duration::minutes(5))
            .collect();
        let pick = (!future.is_empty()).then(|| future[self.rng.random_range(0..future.len())]);
        match (roll, pick) {
            (r, Some(k)) if r < 0.08 => {
                let b = &self.servers[i].booked[k];
                (
                    b.owner.clone(),
                    CommandKind::CancelReservation {
                        reservation_id: b.id.clone(),
                    },
                )
            }
            (r, Some(k)) if r < 0.18 => {
                let shift = Duration::minutes(self.rng.random_range(-6..=6) * 5);
                let b = &self.servers[i].booked[k];
                let (id, owner) = (b.id.clone(), b.owner.clone());
                let start = if b.start <= now {
                    b.start
                } else {
                    (b.start + shift).max(now + Duration::minutes(10))
                };
                let end = (b.end + shift).max(start + Duration::minutes(10));
                (
                    owner,
                    CommandKind::RescheduleReservation {
                        reservation_id: id,
                        start,
                        end,
                    },
                )
            }
            (r, Some(k)) if r < 0.24 => {
                let hash = self.key_hash();
                let digest = self.hex(60);
                let b = &self.servers[i].booked[k];
                (
                    b.owner.clone(),
                    CommandKind::RotateStreamKey {
                        reservation_id: b.id.clone(),
                        stream_key_hash: hash,
                        stream_key_digest: Some(digest),
                    },
                )
            }
            (r, Some(k)) if r < 0.27 => {
                let report = self.ingest(i, k, IngestKind::Refused);
                self.report(report)
            }
            (r, _) if r < 0.275 => {
                let patch = ServerPatch {
                    name: Some(format!("server {i} ({})", self.rng.random_range(0..100))),
                    capacity: Some(self.rng.random_range(2..=3)),
                    ..ServerPatch::default()
                };
                (operator(), CommandKind::UpdateServer(patch))
            }
            _ => self.booking(),
        }
    }

    fn spec(&mut self, i: usize) -> ServerSpec {
        ServerSpec {
            id: self.servers[i].id.clone(),
            name: format!("server {i}"),
            capacity: Some(2),
            carriers: vec![
                Carrier::rtsp(
                    "carrier-a",
                    format!("rtsp://10.1.{}.{}:8554", i / 250, i % 250),
                ),
                Carrier::rtsp(
                    "carrier-b",
                    format!("rtsp://10.2.{}.{}:8554", i / 250, i % 250),
                ),
            ],
            ..ServerSpec::default()
        }
    }

    fn booking(&mut self) -> (Actor, CommandKind) {
        let owner = self.owners[self.rng.random_range(0..self.owners.len())].clone();
        let lead = Duration::minutes(self.rng.random_range(6..=432) * 5);
        let start = self.now + lead;
        let end = start + Duration::minutes(self.rng.random_range(3..=9) * 5);
        let source = self.rng.random_bool(0.05).then(|| CameraSource {
            url: format!(
                "rtsp://camera-{}.example/stream1",
                self.rng.random_range(0..500)
            ),
            transport: CameraTransport::Tcp,
            credentials: self.rng.random_bool(0.5).then(|| self.hex(48)),
        });
        let title = self
            .rng
            .random_bool(0.9)
            .then(|| format!("Show {} of {}", self.rng.random_range(1..999), owner.name));
        let kind = CommandKind::RequestReservation {
            reservation_id: self.reservation_id(),
            start,
            end,
            title,
            stream_key_hash: self.key_hash(),
            stream_key_digest: Some(self.hex(60)),
            source,
        };
        (owner, kind)
    }

    /// The slot clock's message for booked slot `k` of server `i`.
    fn slot_message(&mut self, i: usize, k: usize, kind: SlotKind) -> SlotMessage {
        let late_ms = f64::from(self.rng.random_range(1..40u32)) / 10.0;
        let b = &self.servers[i].booked[k];
        let due_at = if kind == SlotKind::Opened {
            b.opens_at
        } else {
            b.closes_at
        };
        SlotMessage {
            schema: 1,
            kind,
            reservation_id: b.id.clone(),
            server_id: self.servers[i].id.clone(),
            revision: b.revision,
            opens_at: b.opens_at,
            closes_at: b.closes_at,
            start: b.start,
            end: b.end,
            stream_key_hash: b.key_hash.clone(),
            stream_key_digest: None,
            ingest: IngestMode::Push {
                carriers: vec!["carrier-a".into(), "carrier-b".into()],
            },
            title: None,
            due_at,
            published_at: due_at + Duration::microseconds((late_ms * 1000.0) as i64),
            late_ms,
        }
    }

    fn window(&mut self, message: SlotMessage) -> (Actor, CommandKind) {
        self.slots_seq += 1;
        let cursor = StreamCursor {
            epoch_ms: NATS_EPOCH_MS,
            sequence: self.slots_seq,
        };
        (service(), CommandKind::RecordWindow { message, cursor })
    }

    /// The streamer's report on booked slot `k` of server `i`.
    fn ingest(&mut self, i: usize, k: usize, kind: IngestKind) -> IngestMessage {
        let remote_addr = format!(
            "10.9.{}.{}:{}",
            i % 250,
            self.rng.random_range(1..250),
            self.rng.random_range(20000..60000)
        );
        let refusals = (kind == IngestKind::Refused).then(|| {
            BTreeMap::from([
                ("bad_key".to_string(), self.rng.random_range(1..20)),
                ("not_open".to_string(), self.rng.random_range(1..5)),
            ])
        });
        IngestMessage {
            schema: 1,
            kind,
            reservation_id: self.servers[i].booked[k].id.clone(),
            server_id: self.servers[i].id.clone(),
            at: self.now,
            carrier: (kind != IngestKind::Refused).then(|| "carrier-a".to_string()),
            remote_addr: Some(remote_addr),
            codec: (kind == IngestKind::Connected).then(|| "h264,aac".to_string()),
            reason: (kind == IngestKind::Failed).then(|| "connection reset by peer".to_string()),
            refusals,
            // As the rebuild benchmark's figures were measured (reports before the field).
            protocol: None,
        }
    }

    fn report(&mut self, report: IngestMessage) -> (Actor, CommandKind) {
        self.ingest_seq += 1;
        let cursor = StreamCursor {
            epoch_ms: NATS_EPOCH_MS,
            sequence: self.ingest_seq,
        };
        (service(), CommandKind::RecordIngest { report, cursor })
    }
}
