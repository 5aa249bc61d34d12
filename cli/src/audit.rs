//! `slotcast audit verify` and `slotcast audit export`: the edge of the audit core
//! (`slotcast_domain::audit`), reading the event store, the anchors (`audit_anchors`, NATS) or
//! an exported file.
//!
//! Contract: the store is read in one ordered pass (`aggregate_id, sequence`), each server's
//! rows handed in chunks to a worker that owns that server's [`StreamAudit`] (servers are
//! spread over the cores; one server's rows stay in order on one worker). An export is JSON
//! Lines: one event per line with its payload and metadata exactly as stored (so the hash can
//! be checked byte for byte), then one line per anchor; `verify --file` checks it with no
//! database. The format is in `docs/audit.md`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use slotcast_domain::audit::{Anchor, Hash, Range, Report, StoredRow, StreamAudit};
use slotcast_domain::contract::AuditAnchor;
use slotcast_domain::ServerSchedule;
use slotcast_readmodel::copy_binary::CopyOut;
use sqlx::PgPool;
use tokio::sync::mpsc;

/// Rows handed to a worker at a time.
const CHUNK: usize = 4096;

/// Which part of the store to check or export.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub server: Option<String>,
    pub range: Range,
}

/// One line of an export: an event, or (after the events) an anchor.
#[derive(Serialize)]
#[serde(untagged)]
enum Line {
    Event(EventLine),
    Anchor(AnchorLine),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorLine {
    anchor: AuditAnchor,
}

impl Line {
    /// An event line keeps its payload and metadata as the very text in the file (serde's
    /// untagged enums would re-encode them), so each kind is tried in turn.
    fn parse(text: &str) -> serde_json::Result<Self> {
        match serde_json::from_str::<EventLine>(text) {
            Ok(event) => Ok(Self::Event(event)),
            Err(err) => serde_json::from_str::<AnchorLine>(text)
                .map(Self::Anchor)
                .map_err(|_| err),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Box<RawValue>,
    metadata: Box<RawValue>,
    prev_hash: String,
    hash: String,
}

/// The event rows of the store (or of one server) in `(aggregate_id, sequence)` order, read
/// with one binary `COPY` (the fastest way out of Postgres), as they come.
struct RowReader<'c> {
    stream: futures_util::stream::BoxStream<'c, sqlx::Result<bytes::Bytes>>,
    out: CopyOut,
    ready: std::collections::VecDeque<StoredRow>,
}

impl<'c> RowReader<'c> {
    async fn open(conn: &'c mut sqlx::PgConnection, server: Option<&str>) -> Result<Self> {
        // COPY takes no parameters: the literals are quoted here.
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let only = server.map_or(String::new(), |id| {
            format!(" AND aggregate_id = {}", quote(id))
        });
        let statement = format!(
            "COPY (SELECT aggregate_id, sequence, event_type, event_version, payload, metadata, \
                   prev_hash, hash FROM public.events WHERE aggregate_type = {}{only} \
                   ORDER BY aggregate_id, sequence) TO STDOUT (FORMAT binary)",
            quote(ServerSchedule::TYPE)
        );
        let stream = conn
            .copy_out_raw(&statement)
            .await
            .context("cannot read the events")?;
        Ok(Self {
            stream,
            out: CopyOut::new(8),
            ready: Default::default(),
        })
    }

    async fn next(&mut self) -> Result<Option<StoredRow>> {
        loop {
            if let Some(row) = self.ready.pop_front() {
                return Ok(Some(row));
            }
            let Some(chunk) = self.stream.next().await else {
                self.out.finish().context("the events ended mid-row")?;
                return Ok(None);
            };
            self.out.push(&chunk.context("cannot read the events")?);
            while let Some(tuple) = self
                .out
                .next_tuple()
                .context("an event row does not read")?
            {
                let [Some(id), Some(sequence), Some(event_type), Some(version), Some(payload), Some(metadata), prev_hash, hash] =
                    tuple[..]
                else {
                    anyhow::bail!("an event row with a NULL column");
                };
                let text = |b: &[u8]| {
                    String::from_utf8(b.to_vec()).context("an event column is not UTF-8")
                };
                self.ready.push_back(StoredRow {
                    aggregate_id: text(id)?,
                    sequence: i64::from_be_bytes(
                        sequence
                            .try_into()
                            .context("a sequence that is not a bigint")?,
                    ),
                    event_type: text(event_type)?,
                    event_version: text(version)?,
                    payload: text(payload)?,
                    metadata: text(metadata)?,
                    prev_hash: prev_hash.unwrap_or_default().to_vec(),
                    hash: hash.unwrap_or_default().to_vec(),
                });
            }
        }
    }
}

/// Every anchor of the store (or of one server), newest last.
async fn table_anchors(pool: &PgPool, server: Option<&str>) -> Result<Vec<AuditAnchor>> {
    let rows: Vec<(String, i64, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, hash, anchored_at FROM audit_anchors \
         WHERE $1::text IS NULL OR aggregate_id = $1 ORDER BY aggregate_id, sequence",
    )
    .bind(server)
    .fetch_all(pool)
    .await
    .context("cannot read audit_anchors")?;
    Ok(rows.into_iter().map(AuditAnchor::from_row).collect())
}

fn anchor_of(a: &AuditAnchor, source: &str) -> Option<Anchor> {
    let hash: Hash = hex::decode(&a.hash).ok()?.try_into().ok()?;
    Some(Anchor {
        sequence: a.sequence,
        hash,
        source: source.to_string(),
    })
}

/// The latest anchor of each server as published on NATS, when NATS answers within a few
/// seconds; `None` (with why) when it does not.
pub async fn nats_anchors(
    nats: &slotcast_nats::Nats,
    servers: &[String],
) -> std::result::Result<Vec<AuditAnchor>, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !nats.connected() {
        if Instant::now() > deadline {
            return Err(format!(
                "NATS at {} did not answer",
                nats.config.shown_url()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = &nats.config.names;
    let stream = nats
        .jetstream
        .get_stream(names.audit_stream())
        .await
        .map_err(|e| format!("stream {}: {e}", names.audit_stream()))?;
    let mut anchors = Vec::new();
    for server in servers {
        match stream
            .direct_get_last_for_subject(names.audit_subject(server))
            .await
        {
            Ok(message) => match serde_json::from_slice::<AuditAnchor>(&message.payload) {
                Ok(anchor) if anchor.server_id == *server => anchors.push(anchor),
                _ => return Err(format!("{server}: an anchor on NATS does not read")),
            },
            Err(err)
                if err.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {}
            Err(err) => return Err(format!("{server}: {err}")),
        }
    }
    Ok(anchors)
}

/// Every server with events or anchors (a stream deleted whole still has its anchors).
pub async fn servers(pool: &PgPool, server: Option<&str>) -> Result<Vec<String>> {
    if let Some(server) = server {
        return Ok(vec![server.to_string()]);
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE ids AS ( \
             SELECT min(aggregate_id) AS id FROM events WHERE aggregate_type = $1 \
             UNION ALL \
             SELECT (SELECT min(aggregate_id) FROM events \
                     WHERE aggregate_type = $1 AND aggregate_id > ids.id) \
             FROM ids WHERE ids.id IS NOT NULL) \
         SELECT id FROM ids WHERE id IS NOT NULL \
         UNION SELECT DISTINCT aggregate_id FROM audit_anchors ORDER BY 1",
    )
    .bind(ServerSchedule::TYPE)
    .fetch_all(pool)
    .await
    .context("cannot list the servers")?;
    Ok(ids)
}

/// Checks the store: every chain, against `anchors`, and every recorded command decided again.
pub async fn verify_store(
    pool: &PgPool,
    scope: &Scope,
    mut by_server: Anchors,
    progress: &mut dyn FnMut(u64),
) -> Result<Report> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool_of = Workers::start(workers, scope.range);
    let mut conn = pool.acquire().await.context("cannot reach Postgres")?;
    let mut rows = RowReader::open(&mut conn, scope.server.as_deref()).await?;
    let mut current: Option<(String, Vec<StoredRow>)> = None;
    let mut read = 0u64;
    while let Some(row) = rows.next().await? {
        read += 1;
        if read.is_multiple_of(CHUNK as u64) {
            progress(read);
        }
        match &mut current {
            Some((id, chunk)) if *id == row.aggregate_id => {
                chunk.push(row);
                if chunk.len() >= CHUNK {
                    let full = std::mem::take(chunk);
                    pool_of.send(id, Job::Rows(full)).await?;
                }
            }
            _ => {
                if let Some((id, chunk)) = current.take() {
                    pool_of.send(&id, Job::Rows(chunk)).await?;
                    pool_of.send(&id, Job::End).await?;
                }
                let id = row.aggregate_id.clone();
                let anchors = by_server.remove(&id).unwrap_or_default();
                pool_of.send(&id, Job::Start(anchors)).await?;
                current = Some((id, vec![row]));
            }
        }
    }
    if let Some((id, chunk)) = current.take() {
        pool_of.send(&id, Job::Rows(chunk)).await?;
        pool_of.send(&id, Job::End).await?;
    }
    // Anchored servers with no event left: deleted whole.
    let mut gone: Vec<_> = by_server.into_iter().collect();
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, anchors) in gone {
        pool_of.send(&id, Job::Start(anchors)).await?;
        pool_of.send(&id, Job::End).await?;
    }
    pool_of.finish().await
}

/// Each server's anchors, from wherever they were read.
pub type Anchors = HashMap<String, Vec<Anchor>>;

/// Adds `anchors`, read from `source`, to `to`. An anchor whose hash does not read is
/// kept as an impossible hash, so it shows as a mismatch rather than vanishing.
pub fn add_anchors(to: &mut Anchors, anchors: Vec<AuditAnchor>, source: &str) {
    for anchor in anchors {
        let a = anchor_of(&anchor, source).unwrap_or(Anchor {
            sequence: anchor.sequence,
            hash: [0xff; 32],
            source: source.to_string(),
        });
        to.entry(anchor.server_id).or_default().push(a);
    }
}

enum Job {
    Start(Vec<Anchor>),
    Rows(Vec<StoredRow>),
    End,
}

/// Worker threads, each owning the audits of the servers hashed to it.
struct Workers {
    senders: Vec<mpsc::Sender<(String, Job)>>,
    handles: Vec<tokio::task::JoinHandle<Report>>,
}

impl Workers {
    fn start(n: usize, range: Range) -> Self {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..n.max(1) {
            let (tx, mut rx) = mpsc::channel::<(String, Job)>(8);
            senders.push(tx);
            handles.push(tokio::task::spawn_blocking(move || {
                let mut report = Report::default();
                let mut audits: HashMap<String, StreamAudit> = HashMap::new();
                while let Some((id, job)) = rx.blocking_recv() {
                    match job {
                        Job::Start(anchors) => {
                            audits.insert(id.clone(), StreamAudit::new(&id, range, anchors));
                        }
                        Job::Rows(rows) => {
                            if let Some(audit) = audits.get_mut(&id) {
                                for row in &rows {
                                    audit.push(row);
                                }
                            }
                        }
                        Job::End => {
                            if let Some(audit) = audits.remove(&id) {
                                report.merge(audit.finish());
                            }
                        }
                    }
                }
                report
            }));
        }
        Self { senders, handles }
    }

    async fn send(&self, id: &str, job: Job) -> Result<()> {
        let at = fxhash(id) % self.senders.len();
        self.senders[at]
            .send((id.to_string(), job))
            .await
            .map_err(|_| anyhow::anyhow!("an audit worker stopped"))
    }

    async fn finish(self) -> Result<Report> {
        drop(self.senders);
        let mut report = Report::default();
        for handle in self.handles {
            report.merge(handle.await.context("an audit worker failed")?);
        }
        report.findings.sort_by_cached_key(|f| {
            let (id, sequence) = f.at();
            (id.to_string(), sequence)
        });
        Ok(report)
    }
}

fn fxhash(id: &str) -> usize {
    id.bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
}

/// Writes the store's events (of one server, within a range) and their anchors as JSON Lines.
pub async fn export(pool: &PgPool, scope: &Scope, out: &mut dyn Write) -> Result<u64> {
    let mut conn = pool.acquire().await.context("cannot reach Postgres")?;
    let mut rows = RowReader::open(&mut conn, scope.server.as_deref()).await?;
    let mut written = 0;
    while let Some(row) = rows.next().await? {
        if !scope.range.holds_row(&row.metadata) {
            continue;
        }
        let line = Line::Event(EventLine {
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            event_type: row.event_type,
            event_version: row.event_version,
            payload: RawValue::from_string(row.payload)?,
            metadata: RawValue::from_string(row.metadata)?,
            prev_hash: hex::encode(row.prev_hash),
            hash: hex::encode(row.hash),
        });
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    if scope.range.to.is_none() {
        for anchor in table_anchors(pool, scope.server.as_deref()).await? {
            serde_json::to_writer(&mut *out, &Line::Anchor(AnchorLine { anchor }))?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(written)
}

/// Checks an export with no database: each server's chain from the file's first `prev_hash`
/// (decided again when the file starts at the server's first event), against the file's
/// anchors.
pub fn verify_file(path: &Path, range: Range) -> Result<Report> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut streams: Vec<(String, Vec<StoredRow>)> = Vec::new();
    let mut anchors: HashMap<String, Vec<Anchor>> = HashMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = Line::parse(&line)
            .with_context(|| format!("{}:{}: not an audit export line", path.display(), n + 1))?;
        match parsed {
            Line::Anchor(AnchorLine { anchor }) => {
                let a = anchor_of(&anchor, "the file's anchors").with_context(|| {
                    format!(
                        "{}:{}: an anchor's hash is not 64 hex digits",
                        path.display(),
                        n + 1
                    )
                })?;
                anchors.entry(anchor.server_id).or_default().push(a);
            }
            Line::Event(e) => {
                let row = StoredRow {
                    prev_hash: hex::decode(&e.prev_hash).unwrap_or_default(),
                    hash: hex::decode(&e.hash).unwrap_or_default(),
                    aggregate_id: e.aggregate_id,
                    sequence: e.sequence,
                    event_type: e.event_type,
                    event_version: e.event_version,
                    payload: e.payload.get().to_string(),
                    metadata: e.metadata.get().to_string(),
                };
                match streams.last_mut() {
                    Some((id, rows)) if *id == row.aggregate_id => rows.push(row),
                    _ => streams.push((row.aggregate_id.clone(), vec![row])),
                }
            }
        }
    }
    let mut report = Report::default();
    for (id, rows) in streams {
        let own = anchors.remove(&id).unwrap_or_default();
        let genesis = rows
            .first()
            .is_some_and(|r| r.sequence == 1 && r.prev_hash == slotcast_domain::audit::GENESIS);
        let mut audit = if genesis {
            StreamAudit::new(&id, range, own)
        } else {
            StreamAudit::mid_stream(&id, range, own)
        };
        for row in &rows {
            audit.push(row);
        }
        report.merge(audit.finish());
    }
    for (id, own) in anchors {
        report.merge(StreamAudit::new(&id, range, own).finish());
    }
    Ok(report)
}

/// The report as people read it; true when clean.
pub fn print(report: &Report, elapsed: Duration, anchors_from: &[String]) -> bool {
    let rate = report.events as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "checked {} events of {} servers in {:.2} s ({:.0} events/s)",
        report.events,
        report.streams,
        elapsed.as_secs_f64(),
        rate
    );
    println!(
        "  re-decided {} from their recorded commands; replayed only {} (written before \
         commands were recorded)",
        report.redecided, report.replayed_only
    );
    println!(
        "  anchors: {} checked ({})",
        report.anchors_checked,
        anchors_from.join("; ")
    );
    match &report.first_divergence {
        None => println!("  decisions: all the same"),
        Some(d) => {
            println!(
                "  decisions: {} differ; the first: {}#{}",
                report.divergences, d.aggregate_id, d.sequence
            );
            println!("    recorded:   {}", outcome(&d.recorded));
            println!("    re-decided: {}", outcome(&d.redecided));
        }
    }
    if report.findings.is_empty() {
        println!("  chains: intact");
    } else {
        println!("  chains: {} problems", report.findings.len());
        for finding in &report.findings {
            println!("    {finding}");
        }
    }
    report.clean()
}

fn outcome(o: &std::result::Result<slotcast_domain::ScheduleEvent, String>) -> String {
    match o {
        Ok(event) => serde_json::to_string(event).unwrap_or_else(|e| e.to_string()),
        Err(why) => format!("refused: {why}"),
    }
}

/// The anchors of the store's own table.
pub async fn store_anchors(pool: &PgPool, server: Option<&str>) -> Result<Vec<AuditAnchor>> {
    table_anchors(pool, server).await
}

/// Erases the progress line, if one was drawn.
pub fn clear_progress() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

/// Progress on a terminal (stderr): events read, events/s and the time left, from the
/// planner's estimate of the events table's size; nothing when stderr is not a terminal.
pub async fn progress(pool: &PgPool) -> Box<dyn FnMut(u64) + Send> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return Box::new(|_| {});
    }
    let estimate: f64 = sqlx::query_scalar(
        "SELECT reltuples::float8 FROM pg_class WHERE oid = 'public.events'::regclass",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(-1.0);
    let started = Instant::now();
    let mut shown = Instant::now();
    Box::new(move |read| {
        if shown.elapsed() < Duration::from_millis(500) {
            return;
        }
        shown = Instant::now();
        let rate = read as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let left = if estimate > read as f64 {
            format!(", about {:.0} s left", (estimate - read as f64) / rate)
        } else {
            String::new()
        };
        eprint!("\r  {read} events read, {rate:.0} events/s{left}   ");
    })
}
