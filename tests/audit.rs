//! The audit trail end to end: bookings through the real api, `slotcast audit verify` on the
//! store it wrote (clean, every decision made again), an export checked with no database, and
//! tampering done straight in Postgres (100 rows changed by one byte, 10 deleted, one stream
//! cut short): every one of them named, nothing else.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use support::{nats, server_body, token, ts, Api, TestDb, BIN};

const SERVERS: [&str; 4] = ["srv-1", "srv-2", "srv-3", "srv-4"];

/// `slotcast audit …` with this test's database and NATS prefix; (status, stdout, stderr).
fn audit(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("audit")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("NATS_URL", nats::shared_url())
        .env("SLOTCAST_NATS_PREFIX", &db.nats_prefix)
        .env("SLOTCAST_LOG", "error")
        .output()
        .expect("run slotcast audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Books, refuses, reschedules and cancels on every server, through the api.
async fn write_history(api: &Api, operator: &str, alice: &str) {
    for id in SERVERS {
        let (status, answer) = api.post("/v1/servers", operator, server_body(id, 1)).await;
        assert_eq!(status, 201, "register {id}: {answer}");
    }
    let base = Utc::now() + Duration::hours(2);
    for id in SERVERS {
        for i in 0..30i64 {
            // Every third overlaps the one before it: refused (capacity 1).
            let start = base + Duration::minutes(20 * i - if i % 3 == 2 { 10 } else { 0 });
            let body = json!({"server_id": id, "start": ts(start),
                              "end": ts(start + Duration::minutes(15)), "title": format!("show {i}")});
            let (status, answer) = api.post("/v1/reservations", alice, body).await;
            assert!(status == 201 || status == 409, "book: {status} {answer}");
            let rid = match (status, answer["id"].as_str()) {
                (201, Some(rid)) => rid.to_string(),
                _ => continue,
            };
            if i % 5 == 0 {
                let later = start + Duration::days(1);
                let body = json!({"start": ts(later), "end": ts(later + Duration::minutes(15))});
                let (status, answer) = api
                    .post(&format!("/v1/reservations/{rid}/reschedule"), alice, body)
                    .await;
                assert_eq!(status, 200, "reschedule: {answer}");
            }
            if i % 7 == 0 {
                let (status, answer) = api
                    .post(&format!("/v1/reservations/{rid}/cancel"), alice, json!({}))
                    .await;
                assert_eq!(status, 200, "cancel: {answer}");
            }
        }
    }
}

/// Waits until every server's latest event is anchored (the api anchors every 200 ms here).
async fn anchored(db: &TestDb) {
    let unanchored = "SELECT count(*) FROM (SELECT aggregate_id, max(sequence) AS head \
                      FROM events GROUP BY aggregate_id) h \
                      WHERE NOT EXISTS (SELECT 1 FROM audit_anchors a \
                      WHERE a.aggregate_id = h.aggregate_id AND a.sequence = h.head)";
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(30);
    while db.count(unanchored).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the api never anchored every chain head"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

/// Rows as (server, sequence), in order.
async fn rows(db: &TestDb) -> Vec<(String, i64)> {
    let all = db
        .json(
            "SELECT coalesce(json_agg(json_build_array(aggregate_id, sequence) \
             ORDER BY aggregate_id, sequence), '[]') FROM events",
        )
        .await;
    all.as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect()
}

/// Changes one ASCII letter or digit inside a JSON string of `text` (so it stays valid JSON).
fn change_one_byte(text: &str, rng: &mut impl Rng) -> String {
    let bytes = text.as_bytes();
    let mut inside = false;
    let mut escaped = false;
    let mut spots = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match (inside, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => inside = !inside,
            (true, false, b) if b.is_ascii_alphanumeric() => spots.push(i),
            _ => {}
        }
    }
    let at = spots[rng.random_range(0..spots.len())];
    let mut changed = bytes.to_vec();
    changed[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
    String::from_utf8(changed).expect("ASCII for ASCII")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_store_verifies_clean_and_every_tampered_row_is_named() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[("SLOTCAST_AUDIT_ANCHOR_INTERVAL_MS", "200")]);
    write_history(&api, &operator, &alice).await;
    anchored(&db).await;
    api.stop();
    let all = rows(&db).await;
    assert!(all.len() > 150, "only {} events", all.len());

    // Untouched: clean, every event decided again from its recorded command.
    let (code, out, err) = audit(&db, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("checked {} events of 4 servers", all.len())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "re-decided {} from their recorded commands; replayed only 0",
            all.len()
        )),
        "{out}"
    );
    assert!(
        out.contains("(audit_anchors; nats)"),
        "anchors on NATS too: {out}"
    );
    assert!(
        out.contains("decisions: all the same") && out.contains("chains: intact"),
        "{out}"
    );

    // An export checks clean with no database, byte for byte.
    let (code, exported, err) = audit(&db, &["export", "--server", "srv-2"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("srv-2.jsonl");
    std::fs::write(&file, &exported).expect("write the export");
    let (code, out, err) = audit(&db, &["verify", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chains: intact"), "{out}");

    // Tampering, in SQL as anyone with write access could: srv-4 is cut short by 3 events;
    // of the other rows, 100 get one byte changed and 10 (no two adjacent, none a stream's
    // last) are deleted.
    let mut rng = rand::rng();
    let mut conn = db.connect().await;
    let srv4_last = all.iter().filter(|(s, _)| s == "srv-4").count() as i64;
    sqlx::query("DELETE FROM events WHERE aggregate_id = 'srv-4' AND sequence > $1")
        .bind(srv4_last - 3)
        .execute(&mut conn)
        .await
        .expect("truncate srv-4");
    let last_of = |server: &str| all.iter().filter(|(s, _)| s == server).count() as i64;
    let mut candidates: Vec<(String, i64)> = all
        .iter()
        .filter(|(s, q)| s != "srv-4" && *q != last_of(s))
        .cloned()
        .collect();
    candidates.shuffle(&mut rng);
    let mut deleted = BTreeSet::new();
    let mut taken = BTreeSet::new();
    for (server, sequence) in &candidates {
        if deleted.len() == 10 {
            break;
        }
        let adjacent = deleted.contains(&(server.clone(), sequence - 1))
            || deleted.contains(&(server.clone(), sequence + 1));
        if !adjacent {
            deleted.insert((server.clone(), *sequence));
            taken.insert((server.clone(), *sequence));
        }
    }
    let changed: Vec<(String, i64)> = candidates
        .iter()
        .filter(|row| !taken.contains(*row))
        .take(100)
        .cloned()
        .collect();
    for (server, sequence) in &deleted {
        sqlx::query("DELETE FROM events WHERE aggregate_id = $1 AND sequence = $2")
            .bind(server)
            .bind(sequence)
            .execute(&mut conn)
            .await
            .expect("delete");
    }
    for (server, sequence) in &changed {
        let payload: String = sqlx::query_scalar(
            "SELECT payload::text FROM events WHERE aggregate_id = $1 AND sequence = $2",
        )
        .bind(server)
        .bind(sequence)
        .fetch_one(&mut conn)
        .await
        .expect("read a payload");
        let tampered = change_one_byte(&payload, &mut rng);
        assert_eq!(tampered.len(), payload.len());
        sqlx::query(
            "UPDATE events SET payload = $3::json WHERE aggregate_id = $1 AND sequence = $2",
        )
        .bind(server)
        .bind(sequence)
        .bind(&tampered)
        .execute(&mut conn)
        .await
        .expect("change a byte");
    }

    let (code, out, err) = audit(&db, &["verify"]);
    assert_eq!(code, 1, "{out}{err}");
    let named: BTreeSet<String> = out
        .lines()
        .filter(|l| l.starts_with("    srv-"))
        .map(|l| l.trim().to_string())
        .collect();
    let mut expected: BTreeSet<String> = changed
        .iter()
        .map(|(s, q)| format!("{s}#{q}: changed (its fields do not give its hash)"))
        .collect();
    expected.extend(deleted.iter().map(|(s, q)| format!("{s}#{q}: deleted")));
    for source in ["audit_anchors", "nats"] {
        expected.insert(format!(
            "srv-4: truncated: anchored at #{srv4_last} ({source}), the stream ends at #{}",
            srv4_last - 3
        ));
    }
    assert_eq!(named, expected, "{out}");
    assert!(
        out.contains(&format!("chains: {} problems", expected.len())),
        "{out}"
    );
    assert!(err.contains("the audit found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_commands_were_kept_is_replayed_and_a_rewritten_rule_diverges() {
    let db = TestDb::new().await;
    db.load_before_issue17().await;
    let mut conn = db.connect().await;
    let before = db.count("SELECT count(*) FROM events").await;

    // The migration chained the old rows with the SQL definition of the hash; the Rust one
    // agrees, and events without a command are replayed, not decided.
    let operator = token(&db, "operator", "ops");
    let (code, out, err) = audit(&db, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "re-decided 0 from their recorded commands; replayed only {before}"
        )),
        "{out}"
    );

    // A new event goes on the same chain, with its command.
    let api = Api::start(&db, &[("SLOTCAST_AUDIT_ANCHOR_INTERVAL_MS", "200")]);
    let (status, answer) = api
        .post("/v1/servers", &operator, server_body("srv-new", 1))
        .await;
    assert_eq!(status, 201, "{answer}");
    let server: Value = db
        .json("SELECT to_json(aggregate_id) FROM events ORDER BY position LIMIT 1")
        .await;
    let server = server.as_str().expect("a server").to_string();
    let (status, answer) = api
        .call(
            "PATCH",
            &format!("/v1/servers/{server}"),
            Some(&operator),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert!(status == 200, "{status} {answer}");
    anchored(&db).await;
    api.stop();
    let (code, out, err) = audit(&db, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "re-decided 2 from their recorded commands; replayed only {before}"
        )),
        "{out}"
    );

    // Someone rewrites the new server's registration to capacity 3 and re-hashes its row, so
    // the chain holds: the recorded command no longer gives that event, and the anchors
    // (written before) no longer match.
    sqlx::raw_sql(
        "UPDATE events SET \
             payload = replace(payload::text, '\"capacity\":1', '\"capacity\":3')::json \
         WHERE aggregate_id = 'srv-new' AND sequence = 1; \
         UPDATE events SET hash = slotcast_event_hash(prev_hash, aggregate_id, sequence, \
             event_type, event_version, payload::text, metadata::text) \
         WHERE aggregate_id = 'srv-new' AND sequence = 1",
    )
    .execute(&mut conn)
    .await
    .expect("rewrite the event");
    let (code, out, _) = audit(&db, &["verify", "--server", "srv-new"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("decisions: 1 differ; the first: srv-new#1"),
        "{out}"
    );
    let recorded = out
        .lines()
        .find(|l| l.contains("recorded:"))
        .unwrap_or_default();
    let redecided = out
        .lines()
        .find(|l| l.contains("re-decided:"))
        .unwrap_or_default();
    assert!(
        recorded.contains("\"capacity\":3") && redecided.contains("\"capacity\":1"),
        "{out}"
    );
    for source in ["audit_anchors", "nats"] {
        assert!(
            out.contains(&format!("srv-new#1: differs from its anchor ({source})")),
            "{out}"
        );
    }
    assert!(
        !out.contains("changed (its fields"),
        "re-hashed, the row itself holds: {out}"
    );
}
