//! Booking end to end: the built `slotcast server api` on a database of its own.
//! Concurrency, idempotency, the booking rules and tenant isolation, as a user sees them.

mod support;

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use support::{server_body, time, token, ts, Api, TestDb};

struct World {
    db: TestDb,
    api: Api,
    operator: String,
    alice: String,
    bob: String,
}

async fn world() -> World {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let bob = token(&db, "distributor", "bob");
    let api = Api::start(&db, &[]);
    World {
        db,
        api,
        operator,
        alice,
        bob,
    }
}

impl World {
    async fn server(&self, id: &str, body: Value) {
        let (status, answer) = self.api.post("/v1/servers", &self.operator, body).await;
        assert_eq!(status, 201, "register {id}: {answer}");
    }

    async fn book(&self, who: &str, server: &str, start_min: i64, minutes: i64) -> (u16, Value) {
        let start = Utc::now() + Duration::minutes(start_min);
        let end = start + Duration::minutes(minutes);
        let body =
            json!({"server_id": server, "start": ts(start), "end": ts(end), "title": "show"});
        self.api.post("/v1/reservations", who, body).await
    }
}

/// 200 clients at once, every window sharing a common stretch: exactly `capacity` win, though
/// they arrive together and are decided in groups committed as one transaction each.
async fn concurrent_overlapping_requests(capacity: u32) {
    const CLIENTS: i64 = 200;
    let w = world().await;
    w.server("srv", server_body("srv", capacity)).await;
    let base = Utc::now() + Duration::hours(1);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let http = w.api.http.clone();
            let url = w.api.url("/v1/reservations");
            let token = if i % 2 == 0 { w.alice.clone() } else { w.bob.clone() };
            let start = base + Duration::seconds(i);
            let body = json!({"server_id": "srv", "start": ts(start), "end": ts(start + Duration::minutes(30))});
            tokio::spawn(async move {
                let resp = http.post(url).bearer_auth(token).json(&body).send().await.expect("send");
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.expect("json answer"))
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => accepted.push(body),
            409 => {
                assert_eq!(body["status"], "rejected");
                assert_eq!(body["reason"], "capacity_exceeded");
                assert!(!body["conflicts"].as_array().unwrap().is_empty());
                rejected += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        accepted.len(),
        capacity as usize,
        "exactly capacity accepted"
    );
    assert_eq!(rejected, (CLIENTS - capacity as i64) as usize);

    // No instant is covered by more than `capacity` accepted slots.
    let mut edges: Vec<(chrono::DateTime<Utc>, i32)> = accepted
        .iter()
        .flat_map(|a| [(time(&a["start"]), 1), (time(&a["end"]), -1)])
        .collect();
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    assert!(most <= capacity as i32);

    // The events and the read model tell the same story.
    let events_accepted =
        w.db.count("SELECT count(*) FROM events WHERE event_type = 'ReservationAccepted'")
            .await;
    let events_rejected =
        w.db.count("SELECT count(*) FROM events WHERE event_type = 'ReservationRejected'")
            .await;
    assert_eq!(
        (events_accepted, events_rejected),
        (capacity as i64, CLIENTS - capacity as i64)
    );
    let (status, list) = w
        .api
        .get("/v1/reservations?status=accepted", &w.operator)
        .await;
    assert_eq!(status, 200);
    let mut listed: Vec<String> = list["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut won: Vec<String> = accepted
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    won.sort();
    assert_eq!(listed, won);
    let rm_rejected =
        w.db.count("SELECT count(*) FROM rm.reservations WHERE status = 'rejected'")
            .await;
    assert_eq!(rm_rejected, CLIENTS - capacity as i64);
    let (_, schedule) = w.api.get("/v1/servers/srv/schedule", &w.operator).await;
    assert_eq!(
        schedule["slots"].as_array().unwrap().len(),
        capacity as usize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_capacity_one() {
    concurrent_overlapping_requests(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_capacity_three() {
    concurrent_overlapping_requests(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_carries_setting_info_and_server_time() {
    let w = world().await;
    w.server("srv", server_body("srv", 1)).await;
    let (status, a) = w.book(&w.alice, "srv", 10, 30).await;
    assert_eq!(status, 201, "{a}");
    let id = a["id"].as_str().unwrap();
    assert_eq!(a["status"], "accepted");
    let key = a["setting"]["stream_key"].as_str().unwrap();
    assert_eq!(key.len(), 32, "128-bit key as hex");
    assert_eq!(
        time(&a["setting"]["opens_at"]),
        time(&a["start"]) - Duration::seconds(30)
    );
    assert_eq!(
        time(&a["setting"]["closes_at"]),
        time(&a["end"]) + Duration::seconds(10)
    );
    let carriers = a["setting"]["carriers"].as_array().unwrap();
    assert_eq!(
        carriers[0],
        json!({"carrier": "carrier-a", "url": format!("rtsp://127.0.0.2:8554/live/{id}"),
            "urls": {"rtsp": format!("rtsp://127.0.0.2:8554/live/{id}")}})
    );
    assert_eq!(carriers[1]["carrier"], "carrier-b");
    let st = &a["server_time"];
    assert!(time(&st["t_receive"]) <= time(&st["t_transmit"]));
    assert_eq!(st["state"], "unsynced");
    // The key is stored only as a hash, and never shown again.
    let stored =
        w.db.count(&format!(
            "SELECT count(*) FROM events WHERE payload::text LIKE '%{key}%'"
        ))
        .await;
    assert_eq!(stored, 0);
    let (_, shown) = w.api.get(&format!("/v1/reservations/{id}"), &w.alice).await;
    assert!(shown["setting"].get("stream_key").is_none());
    assert_eq!(shown["setting"]["carriers"], a["setting"]["carriers"]);
    // Rotation gives a new key.
    let (status, rotated) = w
        .api
        .post(
            &format!("/v1/reservations/{id}/rotate-key"),
            &w.alice,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["setting"]["stream_key"], a["setting"]["stream_key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_retry_books_once() {
    let w = world().await;
    w.server("srv", server_body("srv", 1)).await;
    let start = Utc::now() + Duration::minutes(20);
    let body =
        json!({"server_id": "srv", "start": ts(start), "end": ts(start + Duration::minutes(30))});
    let send = |key: &'static str, body: Value| {
        let req = w
            .api
            .http
            .post(w.api.url("/v1/reservations"))
            .bearer_auth(&w.alice)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // Two at once, then a late retry: one booking, the same answer each time.
    let ((s1, a1), (s2, a2)) = tokio::join!(send("k-1", body.clone()), send("k-1", body.clone()));
    let (s3, a3) = send("k-1", body.clone()).await;
    assert_eq!((s1, s2, s3), (201, 201, 201));
    // The same answer, except `server_time`, which is stamped for each exchange (the terminal
    // measures its clock on it).
    let without_time = |mut a: Value| {
        let time = a.as_object_mut().unwrap().remove("server_time").unwrap();
        (a, time["t_receive"].as_str().unwrap().to_string())
    };
    let ((a1, t1), (a2, _), (a3, t3)) = (without_time(a1), without_time(a2), without_time(a3));
    assert_eq!(a1, a2);
    assert_eq!(a1, a3);
    assert_eq!(a1["setting"]["stream_key"], a3["setting"]["stream_key"]);
    assert!(
        t3 > t1,
        "the late retry's answer is stamped for it: {t3} after {t1}"
    );
    assert_eq!(
        w.db.count("SELECT count(*) FROM events WHERE event_type LIKE 'Reservation%'")
            .await,
        1
    );
    // The stored answer is sealed: no readable stream key in the table.
    let key = a1["setting"]["stream_key"].as_str().unwrap();
    assert_eq!(
        w.db.count(&format!(
            "SELECT count(*) FROM idempotency WHERE encode(body, 'escape') LIKE '%{key}%'"
        ))
        .await,
        0
    );
    // The same key with another body is refused.
    let other = json!({"server_id": "srv", "start": ts(start + Duration::hours(2)), "end": ts(start + Duration::hours(3))});
    let (s4, a4) = send("k-1", other).await;
    assert_eq!(s4, 409);
    assert_eq!(a4["error"]["code"], "idempotency_key_reused");
    // Another tenant's identical key is a different key.
    let resp = w
        .api
        .http
        .post(w.api.url("/v1/reservations"))
        .bearer_auth(&w.bob)
        .header("Idempotency-Key", "k-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        409,
        "bob's booking of the same window is refused, not replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reschedule_keeps_the_old_slot_and_is_recorded() {
    let w = world().await;
    w.server("srv", server_body("srv", 1)).await;
    let (_, a) = w.book(&w.alice, "srv", 10, 30).await;
    let (_, b) = w.book(&w.bob, "srv", 60, 30).await;
    let id = a["id"].as_str().unwrap();
    let into_b = json!({"start": b["start"], "end": b["end"]});
    let (status, refused) = w
        .api
        .post(
            &format!("/v1/reservations/{id}/reschedule"),
            &w.alice,
            into_b,
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["conflicts"][0]["start"], b["start"]);
    let (_, now) = w.api.get(&format!("/v1/reservations/{id}"), &w.alice).await;
    assert_eq!(
        (
            now["start"].clone(),
            now["end"].clone(),
            now["status"].clone()
        ),
        (a["start"].clone(), a["end"].clone(), json!("accepted"))
    );
    // A free time moves it, and the window moves with it.
    let later = time(&b["end"]) + Duration::minutes(5);
    let moved = json!({"start": ts(later), "end": ts(later + Duration::minutes(30))});
    let (status, after) = w
        .api
        .post(
            &format!("/v1/reservations/{id}/reschedule"),
            &w.alice,
            moved,
        )
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        time(&after["setting"]["opens_at"]),
        later - Duration::seconds(30)
    );
    let (_, history) = w
        .api
        .get(&format!("/v1/reservations/{id}/history"), &w.alice)
        .await;
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "ReservationAccepted",
            "RescheduleRejected",
            "ReservationRescheduled"
        ]
    );
    let first = &history["events"][0];
    assert_eq!(first["actor"], "distributor:alice");
    assert!(first["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(first["recorded_at"].as_str().is_some());
    assert_eq!(first["data"]["owner"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_reservations() {
    let w = world().await;
    w.server("srv", server_body("srv", 2)).await;
    let (_, a) = w.book(&w.alice, "srv", 10, 30).await;
    let id = a["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/v1/reservations/{id}")),
        ("GET", format!("/v1/reservations/{id}/history")),
        ("POST", format!("/v1/reservations/{id}/cancel")),
        ("POST", format!("/v1/reservations/{id}/rotate-key")),
    ] {
        let (status, body) = w
            .api
            .call(method, &path, Some(&w.bob), Some(json!({})))
            .await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (_, bobs) = w.api.get("/v1/reservations", &w.bob).await;
    assert!(bobs["reservations"].as_array().unwrap().is_empty());
    // The schedule shows bob that the time is taken, but not whose or what.
    let (_, schedule) = w.api.get("/v1/servers/srv/schedule", &w.bob).await;
    let slot = &schedule["slots"][0];
    assert_eq!(slot["reservation_id"], a["id"]);
    assert!(slot.get("title").is_none() && slot.get("owner").is_none());
    let (_, schedule) = w.api.get("/v1/servers/srv/schedule", &w.alice).await;
    assert_eq!(schedule["slots"][0]["owner"], "alice");
    // Only an operator registers servers; an operator may cancel anyone's slot.
    let (status, _) = w
        .api
        .post("/v1/servers", &w.alice, server_body("x", 1))
        .await;
    assert_eq!(status, 403);
    let (status, cancelled) = w
        .api
        .post(
            &format!("/v1/reservations/{id}/cancel"),
            &w.operator,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    let (_, schedule) = w.api.get("/v1/servers/srv/schedule", &w.alice).await;
    assert!(schedule["slots"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_rules_as_the_api_answers_them() {
    let w = world().await;
    let mut body = server_body("fast", 1);
    body["min_lead_s"] = json!(0);
    body["max_duration_s"] = json!(3600);
    body["preroll_s"] = json!(0);
    body["grace_s"] = json!(0);
    w.server("fast", body).await;
    w.server("srv", server_body("srv", 1)).await;
    let now = Utc::now();
    let cases = [
        (
            "srv",
            now + Duration::seconds(5),
            Duration::minutes(10),
            "start",
        ), // min_lead 30 s
        (
            "fast",
            now + Duration::minutes(1),
            Duration::minutes(61),
            "end",
        ), // max_duration
        (
            "srv",
            now + Duration::days(91),
            Duration::minutes(10),
            "start",
        ), // horizon
    ];
    for (server, start, length, field) in cases {
        let body = json!({"server_id": server, "start": ts(start), "end": ts(start + length)});
        let (status, answer) = w.api.post("/v1/reservations", &w.alice, body).await;
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{answer}"
        );
    }
    // Back to back is fine.
    let (s1, a) = w.book(&w.alice, "srv", 10, 10).await;
    let body = json!({"server_id": "srv", "start": a["end"], "end": ts(time(&a["end"]) + Duration::minutes(10))});
    let (s2, _) = w.api.post("/v1/reservations", &w.bob, body).await;
    assert_eq!((s1, s2), (201, 201));
    // Unknown server.
    let (status, _) = w.book(&w.alice, "nope", 10, 10).await;
    assert_eq!(status, 404);
    // Cancel only before the slot ends.
    let start = Utc::now() + Duration::milliseconds(300);
    let body =
        json!({"server_id": "fast", "start": ts(start), "end": ts(start + Duration::seconds(1))});
    let (status, short) = w.api.post("/v1/reservations", &w.alice, body).await;
    assert_eq!(status, 201, "{short}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, late) = w
        .api
        .post(
            &format!("/v1/reservations/{}/cancel", short["id"].as_str().unwrap()),
            &w.alice,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{late}");
    assert_eq!(late["error"]["code"], "reservation_not_active");
    // The operator changes the rules; they apply to later bookings.
    let (status, patched) = w
        .api
        .call(
            "PATCH",
            "/v1/servers/srv",
            Some(&w.operator),
            Some(json!({"capacity": 2})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["capacity"], 2);
    let (status, _) = w.book(&w.bob, "srv", 12, 5).await;
    assert_eq!(status, 201);
}
