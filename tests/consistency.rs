//! The read model and the events never disagree for long: a crash between commit and inline
//! dispatch is healed by the catch-up projector, and `admin rebuild` reproduces the live
//! tables exactly.

mod support;

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use serde_json::json;
use support::{dump_read_model, server_body, slotcast, token, ts, Api, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_delivers_what_inline_dispatch_never_did() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    // An api that commits but never projects: what a crash right after commit leaves behind.
    let crashed = Api::start(
        &db,
        &[
            ("SLOTCAST_INLINE_PROJECTION", "false"),
            ("SLOTCAST_CATCH_UP_INTERVAL_MS", "0"),
        ],
    );
    let (status, _) = crashed
        .post("/v1/servers", &operator, server_body("srv", 1))
        .await;
    assert_eq!(status, 201);
    let start = Utc::now() + Duration::minutes(30);
    let body =
        json!({"server_id": "srv", "start": ts(start), "end": ts(start + Duration::minutes(30))});
    let (status, booked) = crashed.post("/v1/reservations", &alice, body).await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_string();
    assert_eq!(db.count("SELECT count(*) FROM events").await, 2);
    assert_eq!(
        db.count("SELECT count(*) FROM rm.reservations").await,
        0,
        "nothing projected yet"
    );
    let (status, _) = crashed.get(&format!("/v1/reservations/{id}"), &alice).await;
    assert_eq!(status, 404);
    drop(crashed);

    // A normal api comes up; its catch-up projector finds the committed events.
    let api = Api::start(&db, &[("SLOTCAST_CATCH_UP_INTERVAL_MS", "100")]);
    let mut found = None;
    for _ in 0..100 {
        let (status, body) = api.get(&format!("/v1/reservations/{id}"), &alice).await;
        if status == 200 {
            found = Some(body);
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let found = found.expect("catch-up projected the reservation within 10 s");
    assert_eq!(found["status"], "accepted");
    let (_, servers) = api.get("/v1/servers", &operator).await;
    assert_eq!(servers["servers"][0]["id"], "srv");
    let checkpoint = db
        .count("SELECT position FROM rm.checkpoint WHERE name = 'catch_up'")
        .await;
    assert_eq!(
        checkpoint,
        db.count("SELECT max(position) FROM events").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_reproduces_the_live_read_model_and_the_api_keeps_working() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let bob = token(&db, "distributor", "bob");
    let api = Api::start(&db, &[]);
    for (i, server) in ["s1", "s2", "s3"].iter().enumerate() {
        let (status, _) = api
            .post("/v1/servers", &operator, server_body(server, i as u32 + 1))
            .await;
        assert_eq!(status, 201);
    }
    let base = Utc::now() + Duration::hours(1);
    let mut ids = Vec::new();
    for i in 0..40i64 {
        let who = if i % 3 == 0 { &bob } else { &alice };
        let server = ["s1", "s2", "s3"][(i % 3) as usize];
        let start = base + Duration::minutes(7 * i);
        let body = json!({"server_id": server, "start": ts(start), "end": ts(start + Duration::minutes(20)), "title": format!("show {i}")});
        let (status, answer) = api.post("/v1/reservations", who, body).await;
        assert!(status == 201 || status == 409, "{answer}");
        if status == 201 {
            ids.push((
                answer["id"].as_str().unwrap().to_string(),
                who.clone(),
                start,
            ));
        }
    }
    for (id, who, start) in ids.iter().take(4) {
        let (status, _) = api
            .post(&format!("/v1/reservations/{id}/cancel"), who, json!({}))
            .await;
        assert_eq!(status, 200);
        let _ = start;
    }
    for (id, who, start) in ids.iter().skip(4).take(4) {
        let moved = json!({"start": ts(*start + Duration::minutes(1)), "end": ts(*start + Duration::minutes(21))});
        let _ = api
            .post(&format!("/v1/reservations/{id}/reschedule"), who, moved)
            .await;
        let _ = api
            .post(&format!("/v1/reservations/{id}/rotate-key"), who, json!({}))
            .await;
    }
    let (status, _) = api
        .call(
            "PATCH",
            "/v1/servers/s2",
            Some(&operator),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(status, 200);

    let live = dump_read_model(&db).await;
    let (code, out, err) = slotcast(&db, &["admin", "rebuild"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("events/s"), "{out}");
    let events = db.count("SELECT count(*) FROM events").await;
    assert!(out.contains(&format!("from {events} events")), "{out}");
    let rebuilt = dump_read_model(&db).await;
    assert_eq!(live, rebuilt, "rebuilt tables equal the live ones");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname IN ('rm_next', 'rm_old')")
            .await,
        0
    );

    // The running api reads and projects into the swapped-in copy.
    let start = base + Duration::days(2);
    let body =
        json!({"server_id": "s1", "start": ts(start), "end": ts(start + Duration::minutes(20))});
    let (status, answer) = api.post("/v1/reservations", &alice, body).await;
    assert_eq!(status, 201, "{answer}");
    let (status, shown) = api
        .get(
            &format!("/v1/reservations/{}", answer["id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{shown}");
}
