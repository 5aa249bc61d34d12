//! Answers "as of" an instant, against the answers actually given then: the built `slotcast
//! server all` on a database of its own records the live schedule and reservation answers, for
//! an operator and two tenants, at many moments while booking, refusing, rescheduling,
//! changing the server, rotating a key, cancelling, and while the slot clock and the streamer's
//! reports move a slot through its window; then it asks for each as of each moment, through the
//! API and through the terminal. And an instant between two decisions recorded out of their
//! sequence's order sees neither.

mod support;

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use serde_json::{json, Value};
use support::nats;
use support::terminal::{ok, Terminal};
use support::{time, token, ts, Api, TestDb};

struct World {
    db: TestDb,
    api: Api,
    operator: String,
    alice: String,
    bob: String,
}

impl World {
    fn callers(&self) -> [(&'static str, &str); 3] {
        [
            ("operator", &self.operator),
            ("alice", &self.alice),
            ("bob", &self.bob),
        ]
    }

    /// The server's now, to the microsecond, as `GET /v1/time` tells it.
    async fn server_now(&self) -> String {
        let (status, stamp) = self.api.call("GET", "/v1/time", None, None).await;
        assert_eq!(status, 200, "{stamp}");
        stamp["now"].as_str().expect("now").to_string()
    }

    async fn post(&self, who: &str, path: &str, body: Value) -> (u16, Value) {
        self.api.post(path, who, body).await
    }
}

/// A read asked at one moment, and the answer it got.
struct Asked {
    who: &'static str,
    token: String,
    path: String,
    status: u16,
    body: Value,
}

/// The live answers at one moment `at` (the server's clock), with the events known by then.
struct Moment {
    what: &'static str,
    at: String,
    events: i64,
    asked: Vec<Asked>,
}

/// The schedule paths asked at every moment: the whole schedule, and a range inside it.
fn schedule_paths(base: DateTime<Utc>) -> [String; 2] {
    [
        "/v1/servers/s1/schedule".to_string(),
        format!(
            "/v1/servers/s1/schedule?from={}&to={}",
            ts(base + Duration::minutes(35)),
            ts(base + Duration::minutes(105))
        ),
    ]
}

/// Every read, as each caller, with no event recorded while they are being asked: the events'
/// count is the same before and after, and none was recorded after the moment `at`, taken
/// from the server's clock after the last write answered and before the reads. A report
/// recorded in the middle (the slot clock's, the streamer's) makes it ask again.
async fn capture(w: &World, what: &'static str, base: DateTime<Utc>, ids: &[&str]) -> Moment {
    for _ in 0..20 {
        let before = w.db.count("SELECT count(*) FROM events").await;
        let at = w.server_now().await;
        let mut paths: Vec<String> = schedule_paths(base).into();
        paths.extend(ids.iter().map(|id| format!("/v1/reservations/{id}")));
        let mut asked = Vec::new();
        for path in &paths {
            for (who, token) in w.callers() {
                let (status, body) = w.api.get(path, token).await;
                asked.push(Asked {
                    who,
                    token: token.to_string(),
                    path: path.clone(),
                    status,
                    body,
                });
            }
        }
        let after = w.db.count("SELECT count(*) FROM events").await;
        let later =
            w.db.count(&format!(
                "SELECT count(*) FROM events \
                 WHERE (metadata ->> 'recorded_at')::timestamptz > '{at}'::timestamptz"
            ))
            .await;
        if before == after && later == 0 {
            return Moment {
                what,
                at,
                events: before,
                asked,
            };
        }
    }
    panic!("{what}: events kept being recorded while the answers were read");
}

fn with_as_of(path: &str, at: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}as_of={}", at.replace('+', "%2B"))
}

async fn history_count(w: &World, id: &str, kind: &str) -> usize {
    let (status, h) = w
        .api
        .get(&format!("/v1/reservations/{id}/history"), &w.operator)
        .await;
    assert_eq!(status, 200, "{h}");
    h["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind)
        .count()
}

/// Polls `check` every 100 ms until it holds, for at most 30 s.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("{what}: not within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_of_each_moment_equal_the_answers_given_then() {
    let db = TestDb::new().await;
    let w = World {
        operator: token(&db, "operator", "ops"),
        alice: token(&db, "distributor", "alice"),
        bob: token(&db, "distributor", "bob"),
        // The api with the slot clock inside, which records each window as it is delivered.
        api: Api::start_role(&db, "all", &[]),
        db,
    };
    // Whole milliseconds, as the API keeps input times.
    let base = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now")
        + Duration::hours(1);
    let at = |m: i64| ts(base + Duration::minutes(m));
    let window = |from: i64, to: i64| json!({"start": at(from), "end": at(to)});
    let mut moments = vec![capture(&w, "nothing yet", base, &[]).await];

    // A server of one slot at a time, whose window is exactly the slot.
    let (status, body) = w
        .post(
            &w.operator,
            "/v1/servers",
            json!({
                "id": "s1", "name": "Server 1", "capacity": 1,
                "min_lead_s": 0, "preroll_s": 0, "grace_s": 0,
                "carriers": [{"name": "carrier-a", "ingest_url": "rtsp://127.0.0.2:8554"}]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    moments.push(capture(&w, "registered", base, &[]).await);

    let book = |who: &str, from: i64, to: i64, title: &str| json!({"server_id": "s1", "start": at(from), "end": at(to), "title": format!("{who} {title}")});
    let (status, a) = w
        .post(&w.alice, "/v1/reservations", book("alice", 0, 30, "a"))
        .await;
    assert_eq!(status, 201, "{a}");
    let a = a["id"].as_str().expect("id").to_string();
    moments.push(capture(&w, "alice booked", base, &[&a]).await);

    let (status, b) = w
        .post(&w.bob, "/v1/reservations", book("bob", 10, 40, "b"))
        .await;
    assert_eq!(status, 409, "{b}");
    let b = b["id"].as_str().expect("id").to_string();
    moments.push(capture(&w, "bob refused", base, &[&a, &b]).await);

    let (status, c) = w
        .post(&w.bob, "/v1/reservations", book("bob", 60, 90, "c"))
        .await;
    assert_eq!(status, 201, "{c}");
    let c = c["id"].as_str().expect("id").to_string();
    let ids = [a.as_str(), b.as_str(), c.as_str()];
    moments.push(capture(&w, "bob booked", base, &ids).await);

    let (status, body) = w
        .post(
            &w.alice,
            &format!("/v1/reservations/{a}/reschedule"),
            window(100, 130),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    moments.push(capture(&w, "alice moved", base, &ids).await);

    let (status, body) = w
        .post(
            &w.bob,
            &format!("/v1/reservations/{c}/reschedule"),
            window(110, 120),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    moments.push(capture(&w, "bob's move refused", base, &ids).await);

    let (status, body) = w
        .api
        .call(
            "PATCH",
            "/v1/servers/s1",
            Some(&w.operator),
            Some(
                json!({"carriers": [{"name": "carrier-b", "ingest_url": "rtsp://127.0.0.3:8554"}]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    moments.push(capture(&w, "carriers changed", base, &ids).await);

    let (status, body) = w
        .post(
            &w.alice,
            &format!("/v1/reservations/{a}/rotate-key"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    moments.push(capture(&w, "key rotated", base, &ids).await);

    let (status, body) = w
        .post(&w.bob, &format!("/v1/reservations/{c}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    moments.push(capture(&w, "bob cancelled", base, &ids).await);

    // A slot a few seconds ahead, which the slot clock opens and closes while we watch, and
    // into which the streamer (played here on NATS) reports a publisher.
    let now = Utc::now();
    let (status, d) = w
        .post(
            &w.alice,
            "/v1/reservations",
            json!({"server_id": "s1", "start": ts(now + Duration::seconds(3)),
                   "end": ts(now + Duration::seconds(10)), "title": "alice d"}),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    let d = d["id"].as_str().expect("id").to_string();
    let ids = [a.as_str(), b.as_str(), c.as_str(), d.as_str()];
    moments.push(capture(&w, "alice booked soon", base, &ids).await);

    wait_until("the window opened", || async {
        history_count(&w, &d, "WindowOpened").await == 1
    })
    .await;
    moments.push(capture(&w, "window open", base, &ids).await);

    let js = nats::jetstream(&nats::shared_url()).await;
    let subject = format!("{}.ingest.s1.{d}", w.db.nats_prefix);
    let report = |kind: &str| {
        json!({
            "schema": 1, "kind": kind, "reservation_id": d, "server_id": "s1",
            "at": ts(Utc::now()), "carrier": "carrier-b", "remote_addr": "127.0.0.2:40000",
            "codec": "h264,aac", "reason": null
        })
    };
    for (n, kind) in [(1, "connected"), (2, "disconnected")] {
        js.publish(subject.clone(), report(kind).to_string().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        wait_until(kind, || async {
            history_count(&w, &d, "IngestReported").await == n
        })
        .await;
        moments.push(capture(&w, kind, base, &ids).await);
    }

    wait_until("the window closed", || async {
        history_count(&w, &d, "WindowClosed").await == 1
    })
    .await;
    moments.push(capture(&w, "window closed", base, &ids).await);

    // The story happened: the slot went through its window with ingest, and the answers
    // differ from moment to moment.
    let (_, shown) = w.api.get(&format!("/v1/reservations/{d}"), &w.alice).await;
    assert_eq!(shown["status"], "ended", "{shown}");
    assert_eq!(shown["ingest"]["state"], "disconnected", "{shown}");
    let schedules: BTreeSet<String> = moments
        .iter()
        .flat_map(|m| &m.asked)
        .filter(|a| a.who == "operator" && a.path == "/v1/servers/s1/schedule")
        .map(|a| a.body.to_string())
        .collect();
    assert!(schedules.len() >= 8, "{schedules:#?}");
    let shows_of_a: BTreeSet<String> = moments
        .iter()
        .flat_map(|m| &m.asked)
        .filter(|x| x.who == "alice" && x.path == format!("/v1/reservations/{a}"))
        .map(|x| x.body.to_string())
        .collect();
    assert!(shows_of_a.len() >= 4, "{shows_of_a:#?}");

    // As of each moment, every answer is the one given then.
    let mut compared = 0;
    for m in &moments {
        let known =
            w.db.count(&format!(
                "SELECT count(*) FROM events \
                 WHERE (metadata ->> 'recorded_at')::timestamptz <= '{}'::timestamptz",
                m.at
            ))
            .await;
        assert_eq!(
            known, m.events,
            "{}: an event recorded before {} committed after its answers were read",
            m.what, m.at
        );
        for x in &m.asked {
            let (status, body) = w.api.get(&with_as_of(&x.path, &m.at), &x.token).await;
            assert_eq!(
                (status, &body),
                (x.status, &x.body),
                "{} as {} at {} ({}): as of it, against the answer given then",
                x.path,
                x.who,
                m.at,
                m.what
            );
            compared += 1;
        }
    }
    assert!(compared > 200, "{compared} answers compared");

    // A reservation asked as of a moment before it was requested is unknown then.
    let registered = &moments[1].at;
    for id in [&a, &d] {
        let (status, body) = w
            .api
            .get(
                &with_as_of(&format!("/v1/reservations/{id}"), registered),
                &w.operator,
            )
            .await;
        assert_eq!(status, 404, "{body}");
    }

    // The same instant written in another zone is the same instant.
    let moved = moments
        .iter()
        .find(|m| m.what == "alice moved")
        .expect("moment");
    let tokyo = DateTime::parse_from_rfc3339(&moved.at)
        .expect("moment")
        .with_timezone(&FixedOffset::east_opt(9 * 3600).expect("+09:00"))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let path = format!("/v1/reservations/{a}");
    let given = moved
        .asked
        .iter()
        .find(|x| x.who == "alice" && x.path == path)
        .expect("asked");
    assert_eq!(
        w.api.get(&with_as_of(&path, &tokyo), &w.alice).await,
        (200, given.body.clone())
    );

    // Not a time, or a time still to come: 400 with the usual error body.
    let future = ts(Utc::now() + Duration::hours(1));
    for bad in ["yesterday", "2030-01-01T12:00:00", future.as_str()] {
        for path in ["/v1/servers/s1/schedule".to_string(), path.clone()] {
            let (status, body) = w.api.get(&with_as_of(&path, bad), &w.alice).await;
            assert_eq!(status, 400, "{path} as of {bad}: {body}");
            assert_eq!(body["error"]["code"], "bad_request", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("as_of ")),
                "{body}"
            );
        }
    }

    // The OpenAPI document names the parameter on both routes.
    let (status, spec) = w.api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for route in ["/v1/servers/{id}/schedule", "/v1/reservations/{id}"] {
        let params = spec["paths"][route]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{route} has no parameters"));
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "as_of" && p["in"] == "query"),
            "{route}: {params:?}"
        );
    }

    // The terminal: `show` and `schedule` with `--as-of` print the API's answers as of then.
    let t = Terminal::new();
    ok(
        &t.run(&["login", "--api", &w.api.base, "--token", &w.alice]),
        "login",
    );
    let shown = t.run(&["--json", "show", &a, "--as-of", &moved.at]);
    ok(&shown, "show --as-of");
    let mut shown = shown.json();
    assert_eq!(shown["stored"], Value::Null);
    shown.as_object_mut().expect("object").remove("stored");
    assert_eq!(shown, given.body);
    let text = t.run(&["show", &a, "--as-of", &moved.at]);
    ok(&text, "show --as-of");
    assert!(text.stdout.starts_with("As of "), "{}", text.stdout);
    assert!(text.stdout.contains("carrier-a"), "{}", text.stdout);

    let day = time(&Value::from(moved.at.clone()))
        .with_timezone(&FixedOffset::east_opt(9 * 3600).expect("+09:00"))
        .date_naive();
    let midnight = day
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_local_timezone(FixedOffset::east_opt(9 * 3600).expect("+09:00"))
        .single()
        .expect("one midnight")
        .with_timezone(&Utc);
    let day_text = day.format("%Y-%m-%d").to_string();
    let listed = t.run(&[
        "--json", "schedule", "s1", "--date", &day_text, "--as-of", &moved.at,
    ]);
    ok(&listed, "schedule --as-of");
    let range = format!(
        "/v1/servers/s1/schedule?from={}&to={}",
        ts(midnight),
        ts(midnight + Duration::hours(24))
    );
    let (status, expected) = w.api.get(&with_as_of(&range, &moved.at), &w.alice).await;
    assert_eq!(status, 200, "{expected}");
    assert_eq!(listed.json(), expected);

    ok(&t.run(&["show", &a, "--as-of", "-1s"]), "show --as-of -1s");
    let later = t.run(&["show", &a, "--as-of", "+1h"]);
    assert_eq!(later.code, 1, "{}{}", later.stdout, later.stderr);
    assert!(
        later.stderr.contains("as_of must not be after"),
        "{}",
        later.stderr
    );
}

/// Two decisions recorded in one order and sequenced in the other (as two api processes
/// racing can leave them): an event counts only once every event before it in the server's
/// sequence does, so an answer as of an instant between them is a state the server really
/// went through, never the later decision without the earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_counts_only_once_every_event_before_it_counts() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    let (status, body) = api
        .post("/v1/servers", &operator, support::server_body("s1", 2))
        .await;
    assert_eq!(status, 201, "{body}");
    let base = Utc::now() + Duration::hours(1);
    let mut ids = Vec::new();
    for m in [0, 60] {
        let (status, booked) = api
            .post(
                "/v1/reservations",
                &alice,
                json!({"server_id": "s1", "start": ts(base + Duration::minutes(m)),
                       "end": ts(base + Duration::minutes(m + 30))}),
            )
            .await;
        assert_eq!(status, 201, "{booked}");
        ids.push(booked["id"].as_str().expect("id").to_string());
    }
    // The first booking (sequence 2) is made to record 2 ms after the second (sequence 3).
    let second = db
        .json("SELECT to_jsonb(metadata ->> 'recorded_at') FROM events WHERE sequence = 3")
        .await;
    let second = time(&second);
    let shifted = ts_us(second + Duration::milliseconds(2));
    let mut conn = db.connect().await;
    sqlx::query(
        "UPDATE events SET metadata = jsonb_set(metadata::jsonb, '{recorded_at}', \
         to_jsonb($1::text))::json WHERE sequence = 2",
    )
    .bind(&shifted)
    .execute(&mut conn)
    .await
    .expect("shift the first booking's recorded_at");

    let slots = |at: String| {
        let path = with_as_of("/v1/servers/s1/schedule", &at);
        let api = &api;
        let operator = &operator;
        async move {
            let (status, body) = api.get(&path, operator).await;
            assert_eq!(status, 200, "{body}");
            body["slots"]
                .as_array()
                .expect("slots")
                .iter()
                .map(|s| s["reservation_id"].as_str().expect("id").to_string())
                .collect::<Vec<_>>()
        }
    };
    // Between the two: the second is recorded, but the first, before it in the sequence, is
    // not yet; so neither counts.
    let between = ts_us(second + Duration::milliseconds(1));
    assert_eq!(slots(between.clone()).await, Vec::<String>::new());
    let (status, body) = api
        .get(
            &with_as_of(&format!("/v1/reservations/{}", ids[1]), &between),
            &alice,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    // From the first's recorded_at on, both.
    assert_eq!(slots(shifted).await, ids);
}

fn ts_us(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
