//! The store's SQL: a group's one transaction, and settling a commit whose outcome is unknown.
//!
//! Contract: [`commit`] inserts the events (their `(aggregate_type, aggregate_id, sequence)`
//! primary key is the optimistic lock), projects them (`project_batch`), stores the sealed
//! idempotency answers, and commits: all of it or none. Its error says whether the group
//! certainly did not commit (a lost race, or a failure before `COMMIT` was sent) or may have
//! ([`Fail::Unknown`], with the transaction id to ask about).

use std::time::Duration;

use slotcast_domain::audit::{Hash, StoredRow};
use slotcast_domain::ServerSchedule;
use slotcast_readmodel::Stream;
use sqlx::{PgConnection, PgPool};

use crate::idempotency::{self, Sealed};
use cqrs_es::Aggregate;

/// The unique key another writer got to first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Race {
    /// An event at one of the sequences: another process decided on a server first.
    Events,
    /// An answer under one of the Idempotency-Keys: another process decided that key.
    Idempotency,
}

#[derive(Debug)]
pub(super) enum Fail {
    /// Nothing was committed: another writer won.
    Lost(Race),
    /// Nothing was committed: the transaction failed before `COMMIT`.
    NotCommitted(Box<dyn std::error::Error + Send + Sync>),
    /// `COMMIT` was sent and no answer came back: transaction `txid` may have committed.
    Unknown { txid: String, error: sqlx::Error },
}

fn classify(err: sqlx::Error) -> Fail {
    if let sqlx::Error::Database(db) = &err {
        if db.code().as_deref() == Some("23505") {
            match db.constraint() {
                Some("events_pkey") => return Fail::Lost(Race::Events),
                Some("idempotency_pkey") => return Fail::Lost(Race::Idempotency),
                _ => {}
            }
        }
    }
    Fail::NotCommitted(Box::new(err))
}

/// Commits a group: `events` (in sequence order per aggregate), their projection when
/// `project` (`streams` describes the same events per aggregate) and `answers`, in four round
/// trips whatever the group's size: `BEGIN`, the events with the answers (and the read model's
/// shared lock), the projection, `COMMIT`.
pub(super) async fn commit(
    pool: &PgPool,
    events: &[&StoredRow],
    streams: &[Stream<'_>],
    answers: &[&Sealed],
    project: bool,
) -> Result<(), Fail> {
    let mut tx = pool.begin().await.map_err(classify)?;
    let txid = insert(&mut tx, events, answers, project)
        .await
        .map_err(classify)?;
    if project {
        slotcast_readmodel::project_batch(&mut tx, streams)
            .await
            .map_err(|err| match err {
                slotcast_readmodel::Error::Db(err) => classify(err),
                other => Fail::NotCommitted(Box::new(other)),
            })?;
    }
    tx.commit()
        .await
        .map_err(|error| Fail::Unknown { txid, error })
}

/// Inserts `events` and `answers` in one statement, taking the read model's shared lock when
/// the projection follows (before any read-model table is touched, so a rebuild's swap never
/// happens under it); returns the writing transaction's id.
async fn insert(
    conn: &mut PgConnection,
    events: &[&StoredRow],
    answers: &[&Sealed],
    lock_read_model: bool,
) -> Result<String, sqlx::Error> {
    let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<&str> = events.iter().map(|e| e.event_version.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let metadata: Vec<&str> = events.iter().map(|e| e.metadata.as_str()).collect();
    let prev_hashes: Vec<&[u8]> = events.iter().map(|e| e.prev_hash.as_slice()).collect();
    let hashes: Vec<&[u8]> = events.iter().map(|e| e.hash.as_slice()).collect();
    let answers = idempotency::Columns::of(answers);
    // Payload and metadata go in as text and are kept as that text (`json` stores its input
    // verbatim): the row's hash covers them exactly as stored.
    sqlx::query_scalar(
        "WITH locked AS ( \
             SELECT pg_advisory_xact_lock_shared($8) WHERE $9), \
         ins AS ( \
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, prev_hash, hash) \
             SELECT $1, id, seq, t, v, p::json, m::json, ph, h \
             FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $15::bytea[], $16::bytea[]) AS u(id, seq, t, v, p, m, ph, h) \
             RETURNING txid), \
         answered AS ( \
             INSERT INTO idempotency (key_hash, request_hash, status, nonce, body) \
             SELECT * FROM unnest($10::text[], $11::text[], $12::int[], $13::bytea[], \
                 $14::bytea[])) \
         SELECT txid::text FROM ins, (SELECT count(*) FROM locked) AS l LIMIT 1",
    )
    .bind(ServerSchedule::TYPE)
    .bind(&ids)
    .bind(&sequences)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadata)
    .bind(slotcast_readmodel::READ_MODEL_LOCK)
    .bind(lock_read_model)
    .bind(&answers.key_hash)
    .bind(&answers.request_hash)
    .bind(&answers.status)
    .bind(&answers.nonce)
    .bind(&answers.body)
    .bind(&prev_hashes)
    .bind(&hashes)
    .fetch_one(conn)
    .await
}

/// The hash of `aggregate_id`'s event at `sequence` (the chain head the next event links to).
pub(super) async fn hash_at(
    pool: &PgPool,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Hash, sqlx::Error> {
    let hash: Vec<u8> = sqlx::query_scalar(
        "SELECT hash FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(ServerSchedule::TYPE)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_one(pool)
    .await?;
    hash.try_into().map_err(|_| {
        sqlx::Error::Protocol(format!("{aggregate_id}#{sequence}: a hash is 32 bytes"))
    })
}

/// What became of a transaction whose `COMMIT` went unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settled {
    Committed,
    Aborted,
    /// Postgres could not be asked within the bound (or has forgotten the transaction).
    Unknown,
}

/// How long an unknown commit is asked about before the answer is 503.
const SETTLE_FOR: Duration = Duration::from_secs(10);

/// Asks Postgres (on any connection) what became of `txid`, until it has finished.
pub(super) async fn settle(pool: &PgPool, txid: &str) -> Settled {
    let deadline = tokio::time::Instant::now() + SETTLE_FOR;
    let mut pause = Duration::from_millis(20);
    loop {
        let status: Result<Option<String>, _> =
            sqlx::query_scalar("SELECT pg_xact_status($1::text::xid8)")
                .bind(txid)
                .fetch_one(pool)
                .await;
        match status.as_ref().map(Option::as_deref) {
            Ok(Some("committed")) => return Settled::Committed,
            Ok(Some("aborted")) => return Settled::Aborted,
            Ok(None) => return Settled::Unknown,
            // "in progress" (the server is still finishing it), or Postgres unreachable.
            Ok(Some(_)) | Err(_) => {}
        }
        if tokio::time::Instant::now() + pause > deadline {
            tracing::warn!(txid, "could not learn whether a commit happened");
            return Settled::Unknown;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
    }

    /// A transaction's id, taken inside it (it writes nothing, so no database of its own).
    async fn txid(conn: &mut sqlx::PgConnection) -> String {
        sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(conn)
            .await
            .expect("txid")
    }

    #[tokio::test]
    async fn an_unanswered_commit_is_settled_by_what_postgres_says_of_its_transaction() {
        let url = database_url();
        let pool = PgPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("this test needs Postgres at {url}: {e}"));
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");

        sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
        let committed = txid(&mut conn).await;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
        assert_eq!(settle(&pool, &committed).await, Settled::Committed);

        sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
        let aborted = txid(&mut conn).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
        assert_eq!(settle(&pool, &aborted).await, Settled::Aborted);

        // Still running when asked: the answer waits for its end.
        sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
        let running = txid(&mut conn).await;
        let asked = tokio::spawn({
            let pool = pool.clone();
            async move { settle(&pool, &running).await }
        });
        sqlx::raw_sql("SELECT pg_sleep(0.2); COMMIT")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(asked.await.unwrap(), Settled::Committed);
    }
}
