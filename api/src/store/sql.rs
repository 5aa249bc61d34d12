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
use sqlx::{Connection, PgConnection, PgPool};

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

pub(super) fn classify(err: sqlx::Error) -> Fail {
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

/// Commits a group on `conn`: `events` (in sequence order per aggregate), their projection
/// when `project` (`streams` describes the same events per aggregate) and `answers`, in four
/// round trips whatever the group's size: `BEGIN`, the events with the answers (and the read
/// model's shared lock), the projection, `COMMIT`. On any error the transaction is rolled
/// back (queued on `conn`, sent with its next use).
pub(super) async fn commit(
    conn: &mut PgConnection,
    events: &[&StoredRow],
    streams: &[Stream<'_>],
    answers: &[&Sealed],
    project: bool,
) -> Result<(), Fail> {
    let mut tx = conn.begin().await.map_err(classify)?;
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

/// What became of the transaction `txid` that wrote `probe` (one of its event rows): waits,
/// asking Postgres on any connection, until that transaction is no longer in progress, then
/// looks for `probe` itself. The row, with its hash, decides: a transaction id names the
/// right transaction only while its WAL survives. After a crash that lost the transaction
/// before its WAL was flushed, Postgres hands the same id out again: `pg_xact_status` then
/// says "in the future", or reports on the transaction that reused it (which may commit).
pub(super) async fn settle(pool: &PgPool, txid: &str, probe: &StoredRow) -> Settled {
    let deadline = tokio::time::Instant::now() + SETTLE_FOR;
    let mut pause = Duration::from_millis(20);
    loop {
        let status: Result<Option<String>, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_xact_status($1::text::xid8)")
                .bind(txid)
                .fetch_one(pool)
                .await;
        let finished = match &status {
            // Committed, aborted, or forgotten: the row says which.
            Ok(Some(s)) => s != "in progress",
            Ok(None) => true,
            // 22023: "transaction ID … is in the future": it never reached the WAL.
            Err(sqlx::Error::Database(db)) => db.code().as_deref() == Some("22023"),
            // Postgres unreachable: ask again.
            Err(_) => false,
        };
        if finished {
            match stored_hash(pool, probe).await {
                Ok(Some(hash)) if hash == probe.hash => return Settled::Committed,
                Ok(_) => return Settled::Aborted,
                Err(_) => {}
            }
        }
        if tokio::time::Instant::now() + pause > deadline {
            tracing::warn!(txid, "could not learn whether a commit happened");
            return Settled::Unknown;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The hash of the event row at `probe`'s place, if there is one.
async fn stored_hash(pool: &PgPool, probe: &StoredRow) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT hash FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(ServerSchedule::TYPE)
    .bind(&probe.aggregate_id)
    .bind(probe.sequence)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, Executor};

    /// A database of the test's own with slotcast's tables, dropped at the end.
    struct Db {
        admin: String,
        name: String,
        url: String,
    }

    impl Db {
        async fn new() -> Self {
            let admin = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
            let name = format!("slotcast_settle_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("this test needs Postgres at {admin}: {e}"));
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create the database");
            let url = format!("{}/{name}", &admin[..admin.rfind('/').expect("a database")]);
            slotcast_readmodel::db::migrate(&url)
                .await
                .expect("migrate");
            Self { admin, name, url }
        }

        async fn drop(self) {
            let mut conn = sqlx::PgConnection::connect(&self.admin)
                .await
                .expect("admin");
            let _ = conn
                .execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }

    /// An event row of server `s1` at `sequence` (its contents do not matter here).
    fn row(sequence: i64, hash: u8) -> StoredRow {
        StoredRow {
            aggregate_id: "s1".into(),
            sequence,
            event_type: "Test".into(),
            event_version: "1".into(),
            payload: "{}".into(),
            metadata: "{}".into(),
            prev_hash: vec![0; 32],
            hash: vec![hash; 32],
        }
    }

    /// Begins a transaction on `conn` that writes `row`; returns its id.
    async fn write(conn: &mut sqlx::PgConnection, row: &StoredRow) -> String {
        sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
        insert(conn, &[row], &[], false).await.expect("insert")
    }

    #[tokio::test]
    async fn an_unanswered_commit_is_settled_by_its_transaction_and_its_row() {
        let db = Db::new().await;
        let pool = PgPool::connect(&db.url).await.expect("pool");
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");

        let committed = row(1, 1);
        let txid = write(&mut conn, &committed).await;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
        assert_eq!(settle(&pool, &txid, &committed).await, Settled::Committed);

        let aborted = row(2, 2);
        let txid = write(&mut conn, &aborted).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
        assert_eq!(settle(&pool, &txid, &aborted).await, Settled::Aborted);

        // Still running when asked: the answer waits for its end.
        let running = row(2, 3);
        let txid = write(&mut conn, &running).await;
        let asked = tokio::spawn({
            let pool = pool.clone();
            let running = running.clone();
            async move { settle(&pool, &txid, &running).await }
        });
        sqlx::raw_sql("SELECT pg_sleep(0.2); COMMIT")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(asked.await.unwrap(), Settled::Committed);

        // After a crash lost it, its id went to another transaction, which committed: the
        // row is not ours, so ours did not commit.
        let lost = row(3, 4);
        let reused = row(3, 5);
        let txid = write(&mut conn, &reused).await;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
        assert_eq!(settle(&pool, &txid, &lost).await, Settled::Aborted);

        // Or it is not handed out again yet: "in the future", so it never reached the WAL.
        let current: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        let future = (current.parse::<u64>().unwrap() + 1000).to_string();
        assert_eq!(settle(&pool, &future, &row(4, 6)).await, Settled::Aborted);

        pool.close().await;
        let _ = conn.close().await;
        db.drop().await;
    }
}
