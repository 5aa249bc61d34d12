//! The API's contract at its edges: bad input and bad tokens get clear JSON errors and store
//! nothing; the server clock follows a real chrony and degrades to the system clock without
//! blocking bookings; health, readiness, metrics, OpenAPI; clean shutdown on SIGTERM.

mod support;

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use support::chrony::{Chrony, LOCAL_STRATUM};
use support::{server_body, time, token, ts, Api, TestDb};

async fn raw(api: &Api, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = api
        .http
        .post(api.url("/v1/reservations"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_json_error_and_stores_nothing() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    let (status, _) = api
        .post("/v1/servers", &operator, server_body("srv", 1))
        .await;
    assert_eq!(status, 201);
    let events_before = db.count("SELECT count(*) FROM events").await;
    let start = Utc::now() + Duration::hours(1);
    let s = ts(start);
    let e = ts(start + Duration::minutes(30));
    // (case, token, body, status, error code, what the message says)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str, &'a str);
    let unknown = format!("sct_{}", "0".repeat(64));
    let cases: Vec<Case> = vec![
        ("malformed JSON", Some(&alice), b"{\"server_id\": \"srv\",".to_vec(), 400, "bad_request", "malformed JSON"),
        ("missing field", Some(&alice), json!({"server_id": "srv", "end": e}).to_string().into_bytes(), 422, "invalid", "start: is required"),
        ("start = end", Some(&alice), json!({"server_id": "srv", "start": s, "end": s}).to_string().into_bytes(), 422, "invalid", "end: must be after start"),
        ("year 9999", Some(&alice), json!({"server_id": "srv", "start": "9999-01-01T00:00:00Z", "end": "9999-01-01T01:00:00Z"}).to_string().into_bytes(), 422, "invalid", "start: must be within"),
        ("no zone", Some(&alice), json!({"server_id": "srv", "start": "2031-01-01T10:00:00", "end": e}).to_string().into_bytes(), 422, "invalid", "start: must be an RFC 3339 time with a zone"),
        ("unknown field", Some(&alice), json!({"server_id": "srv", "start": s, "end": e, "titel": "x"}).to_string().into_bytes(), 422, "invalid", "unknown field `titel`"),
        ("over 64 KiB", Some(&alice), json!({"server_id": "srv", "start": s, "end": e, "title": "x".repeat(70_000)}).to_string().into_bytes(), 413, "payload_too_large", "request body larger than 65536 bytes"),
        ("control character", Some(&alice), json!({"server_id": "srv", "start": s, "end": e, "title": "show\u{1b}[2J"}).to_string().into_bytes(), 422, "invalid", "title: must not hold control characters"),
        ("title too long", Some(&alice), json!({"server_id": "srv", "start": s, "end": e, "title": "x".repeat(201)}).to_string().into_bytes(), 422, "invalid", "title:"),
        ("no token", None, json!({"server_id": "srv", "start": s, "end": e}).to_string().into_bytes(), 401, "unauthorized", "missing Authorization"),
        ("not a token", Some("sct_not-a-token"), json!({"server_id": "srv", "start": s, "end": e}).to_string().into_bytes(), 401, "unauthorized", "that is not a slotcast token"),
        ("unknown token", Some(&unknown), json!({"server_id": "srv", "start": s, "end": e}).to_string().into_bytes(), 401, "unauthorized", "unknown, expired or revoked token"),
        ("operator books", Some(&operator), json!({"server_id": "srv", "start": s, "end": e}).to_string().into_bytes(), 403, "forbidden", "distributor"),
    ];
    for (name, token, body, status, code, message) in cases {
        let (got, answer) = raw(&api, token, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
        let text = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.contains(message),
            "{name}: {text:?} should say {message:?}"
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM events").await,
        events_before,
        "nothing stored"
    );
    assert_eq!(db.count("SELECT count(*) FROM idempotency").await, 0);
    // Bad query parameters name the parameter too.
    let (status, answer) = api.get("/v1/reservations?from=yesterday", &alice).await;
    assert_eq!(
        (
            status,
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("from:")
        ),
        (422, true)
    );
    // Bad server registrations name the field.
    let mut bad = server_body("bad", 1);
    bad["carriers"][0]["ingest_url"] = json!("http://x");
    let (status, answer) = api.post("/v1/servers", &operator, bad).await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("carriers[].ingest_url"),
        "{answer}"
    );
    let (status, answer) = api
        .post("/v1/servers", &operator, server_body("srv", 1))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("server_exists"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_time_follows_a_real_ntp_server() {
    let db = TestDb::new().await;
    let alice = token(&db, "distributor", "alice");
    let operator = token(&db, "operator", "ops");
    let chrony = Chrony::start();
    let api = Api::start(&db, &[("SLOTCAST_NTP_SERVERS", &chrony.server())]);
    let mut synced = Value::Null;
    for _ in 0..50 {
        let (_, t) = api.call("GET", "/v1/time", None, None).await;
        if t["state"] == "synced" {
            synced = t;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        synced["state"],
        "synced",
        "no sync with chrony: {}",
        chrony.log()
    );
    assert_eq!(synced["source"], "ntp");
    assert_eq!(synced["ntp"]["server"], chrony.server());
    assert_eq!(synced["ntp"]["stratum"], LOCAL_STRATUM);
    assert!(synced["ntp"]["offset_ms"].as_f64().unwrap().abs() < 50.0);
    assert!((time(&synced["now"]) - Utc::now()).num_milliseconds().abs() < 1000);
    // The booking answer carries the same clock.
    api.post("/v1/servers", &operator, server_body("srv", 1))
        .await;
    let start = Utc::now() + Duration::hours(1);
    let (status, a) = api.post("/v1/reservations", &alice, json!({"server_id": "srv", "start": ts(start), "end": ts(start + Duration::minutes(5))})).await;
    assert_eq!(status, 201);
    assert_eq!(a["server_time"]["state"], "synced");
    assert_eq!(a["server_time"]["ntp"]["stratum"], LOCAL_STRATUM);
    let (status, ready) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (status, ready["clock"]["state"].as_str()),
        (200, Some("synced"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ntp_leaves_the_clock_unsynced_and_booking_working() {
    let db = TestDb::new().await;
    let alice = token(&db, "distributor", "alice");
    let operator = token(&db, "operator", "ops");
    let api = Api::start(&db, &[("SLOTCAST_NTP_SERVERS", "127.0.0.1:9")]);
    let (status, t) = api.call("GET", "/v1/time", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            t["state"].as_str(),
            t["source"].as_str(),
            t["ntp"].is_null()
        ),
        (Some("unsynced"), Some("system"), true)
    );
    api.post("/v1/servers", &operator, server_body("srv", 1))
        .await;
    let start = Utc::now() + Duration::hours(1);
    let (status, a) = api.post("/v1/reservations", &alice, json!({"server_id": "srv", "start": ts(start), "end": ts(start + Duration::minutes(5))})).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["server_time"]["state"], "unsynced");
    let (status, ready) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (status, ready["clock"]["state"].as_str()),
        (200, Some("unsynced"))
    );
    let metrics = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("slotcast_ntp_synced 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_and_clean_shutdown() {
    let db = TestDb::new().await;
    let api = Api::start(&db, &[]);
    let (status, health) = api.call("GET", "/healthz", None, None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = api.call("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["database"].as_str()), (200, Some("ok")));
    let (status, spec) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/time",
        "/v1/servers",
        "/v1/servers/{id}/schedule",
        "/v1/reservations",
        "/v1/reservations/{id}/history",
        "/v1/reservations/{id}/rotate-key",
    ] {
        assert!(spec["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    assert!(spec["components"]["schemas"].get("Accepted").is_some());
    let metrics = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("slotcast_http_requests_total"),
        "{metrics}"
    );
    let resp = api
        .http
        .get(api.url("/v1/time"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me");
    assert_eq!(api.stop(), Some(0), "SIGTERM ends the server cleanly");
}

/// JSON Schema counts `2.0` as an integer, so the api takes it where a whole number is due;
/// `1.5` is refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_numbers_written_as_floats_are_taken_and_fractions_are_refused() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let api = Api::start(&db, &[]);
    let mut body = server_body("floats", 1);
    body["capacity"] = json!(2.0);
    body["horizon_s"] = json!(86400.0);
    let (status, created) = api.post("/v1/servers", &operator, body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["capacity"], 2);
    assert_eq!(created["horizon_s"], 86400);
    let mut half = server_body("halves", 1);
    half["capacity"] = json!(1.5);
    let (status, refused) = api.post("/v1/servers", &operator, half).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("capacity: ") && m.contains("whole number")),
        "{refused}"
    );
    let (status, patched) = api
        .call(
            "PATCH",
            "/v1/servers/floats",
            Some(&operator),
            Some(json!({"grace_s": 5.0})),
        )
        .await;
    assert_eq!(
        (status, patched["grace_s"].as_i64()),
        (200, Some(5)),
        "{patched}"
    );
}

/// Polls `/v1/time` until `done` holds (bounded); the last answer.
async fn wait_time(api: &Api, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        let (_, t) = api.call("GET", "/v1/time", None, None).await;
        if done(&t) {
            return t;
        }
        last = t;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 15 s; last {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_ntp_server_that_jumps_is_refused_and_two_that_agree_are_followed() {
    let db = TestDb::new().await;
    // One server: synced, then it jumps 5 s ahead.
    let mut lone = Chrony::start();
    let api = Api::start(
        &db,
        &[
            ("SLOTCAST_NTP_SERVERS", &lone.server()),
            ("SLOTCAST_NTP_INTERVAL_S", "1"),
        ],
    );
    let synced = wait_time(&api, "a first sync", |t| t["state"] == "synced").await;
    let before = synced["ntp"]["offset_ms"].as_f64().unwrap();
    assert!(synced["ntp"]["step_refused"].is_null(), "{synced}");
    lone.restart_shifted(Some("+5s"));
    let refused = wait_time(&api, "the step refused", |t| {
        !t["ntp"]["step_refused"].is_null()
    })
    .await;
    let step = refused["ntp"]["step_refused"]["step_ms"].as_f64().unwrap();
    assert!((4_800.0..5_200.0).contains(&step), "{refused}");
    assert_eq!(refused["ntp"]["step_refused"]["server"], lone.server());
    assert_eq!(
        refused["state"], "synced",
        "the state values stay as they are"
    );
    // The offset in use did not move, and /readyz says the same.
    assert!((refused["ntp"]["offset_ms"].as_f64().unwrap() - before).abs() < 100.0);
    let (_, ready) = api.call("GET", "/readyz", None, None).await;
    assert!(!ready["clock"]["ntp"]["step_refused"].is_null(), "{ready}");
    drop(api);

    // Two servers, synced, then both 5 s ahead: they agree, so the clock steps.
    let mut a = Chrony::start();
    let mut b = Chrony::start();
    let servers = format!("{},{}", a.server(), b.server());
    let api = Api::start(
        &db,
        &[
            ("SLOTCAST_NTP_SERVERS", &servers),
            ("SLOTCAST_NTP_INTERVAL_S", "1"),
        ],
    );
    let synced = wait_time(&api, "a first sync", |t| t["ntp"]["agreeing"] == 2).await;
    assert!(synced["ntp"]["offset_ms"].as_f64().unwrap().abs() < 100.0);
    a.restart_shifted(Some("+5s"));
    b.restart_shifted(Some("+5s"));
    let stepped = wait_time(&api, "the agreed step taken", |t| {
        t["ntp"]["offset_ms"].as_f64().is_some_and(|o| o > 4_800.0)
    })
    .await;
    assert_eq!(stepped["ntp"]["agreeing"], 2, "{stepped}");
    assert!(stepped["ntp"]["step_refused"].is_null(), "{stepped}");
    assert!((time(&stepped["now"]) - Utc::now()).num_milliseconds() > 4_000);

    // Three servers, one 5 s off from the start: the two that agree win.
    let c = Chrony::start_shifted(Some("+5s"));
    let d = Chrony::start();
    let e = Chrony::start();
    let servers = format!("{},{},{}", c.server(), d.server(), e.server());
    let api = Api::start(&db, &[("SLOTCAST_NTP_SERVERS", &servers)]);
    let synced = wait_time(&api, "a first sync", |t| t["state"] == "synced").await;
    assert!(
        synced["ntp"]["offset_ms"].as_f64().unwrap().abs() < 100.0,
        "{synced}"
    );
    assert_eq!(synced["ntp"]["agreeing"], 2, "{synced}");
    assert_ne!(synced["ntp"]["server"], c.server());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_takes_rtmp_srt_and_whip_gives_each_address_without_the_key() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    let mut body = server_body("srv", 1);
    body["carriers"][0]["rtmp_url"] = json!("rtmp://127.0.0.2:1935");
    body["carriers"][0]["srt_url"] = json!("srt://127.0.0.2:9000");
    body["carriers"][0]["whip_url"] = json!("http://127.0.0.2:8889");
    let (status, server) = api.post("/v1/servers", &operator, body.clone()).await;
    assert_eq!(status, 201, "{server}");
    assert_eq!(server["carriers"], body["carriers"], "registered as sent");
    let (_, listed) = api.get("/v1/servers/srv", &alice).await;
    assert_eq!(listed["carriers"], body["carriers"]);

    let start = Utc::now() + Duration::hours(1);
    let booking =
        json!({"server_id": "srv", "start": ts(start), "end": ts(start + Duration::minutes(30))});
    let (status, booked) = api.post("/v1/reservations", &alice, booking).await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap();
    let key = booked["setting"]["stream_key"].as_str().unwrap();
    let expected = json!([
        {
            "carrier": "carrier-a",
            "url": format!("rtsp://127.0.0.2:8554/live/{id}"),
            "urls": {
                "rtsp": format!("rtsp://127.0.0.2:8554/live/{id}"),
                "rtmp": format!("rtmp://127.0.0.2:1935/live/{id}"),
                "srt": "srt://127.0.0.2:9000",
                "whip": format!("http://127.0.0.2:8889/whip/{id}"),
            }
        },
        {
            "carrier": "carrier-b",
            "url": format!("rtsp://127.0.0.3:8554/live/{id}"),
            "urls": {"rtsp": format!("rtsp://127.0.0.3:8554/live/{id}")}
        }
    ]);
    assert_eq!(booked["setting"]["carriers"], expected);
    assert!(!booked["setting"]["carriers"].to_string().contains(key));
    let (_, shown) = api.get(&format!("/v1/reservations/{id}"), &alice).await;
    assert_eq!(shown["setting"]["carriers"], expected);

    // An address a publisher could not use is refused, naming the field.
    for (field, url) in [
        ("rtmp_url", "rtmp://127.0.0.2:1935/live"),
        ("srt_url", "srt://127.0.0.2"),
        ("whip_url", "http://127.0.0.2:8889/whip"),
    ] {
        let mut bad = server_body("bad", 1);
        bad["carriers"][0][field] = json!(url);
        let (status, answer) = api.post("/v1/servers", &operator, bad).await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 422, "{field} {url}: {answer}");
        assert!(
            message.starts_with(&format!("carriers[].{field}")),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_says_where_it_serves_viewers_and_an_operator_changes_or_removes_it() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    let mut body = server_body("srv", 1);
    body["viewer_url"] = json!("http://127.0.0.2:8888");
    let (status, created) = api.post("/v1/servers", &operator, body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["viewer_url"], "http://127.0.0.2:8888");
    let (_, shown) = api.get("/v1/servers/srv", &alice).await;
    assert_eq!(shown["viewer_url"], "http://127.0.0.2:8888", "{shown}");
    let (_, listed) = api.get("/v1/servers", &alice).await;
    assert_eq!(listed["servers"][0]["viewer_url"], "http://127.0.0.2:8888");

    // A change that does not name it keeps it; one that does replaces it; null removes it.
    let patch = |body: Value| api.call("PATCH", "/v1/servers/srv", Some(&operator), Some(body));
    let (status, kept) = patch(json!({"capacity": 2})).await;
    assert_eq!(
        (status, &kept["viewer_url"]),
        (200, &json!("http://127.0.0.2:8888"))
    );
    let (status, moved) = patch(json!({"viewer_url": "https://watch.example"})).await;
    assert_eq!(
        (status, &moved["viewer_url"]),
        (200, &json!("https://watch.example"))
    );
    let (_, shown) = api.get("/v1/servers/srv", &alice).await;
    assert_eq!(shown["viewer_url"], "https://watch.example");
    let (status, removed) = patch(json!({"viewer_url": null})).await;
    assert_eq!(status, 200, "{removed}");
    assert!(removed.get("viewer_url").is_none(), "{removed}");
    let (_, shown) = api.get("/v1/servers/srv", &alice).await;
    assert!(shown.get("viewer_url").is_none(), "{shown}");

    // What is not an origin is refused, naming the field, on registering and on changing.
    for bad in [
        "http://127.0.0.2:8888/watch",
        "rtsp://127.0.0.2",
        "http://x:99999",
    ] {
        let mut body = server_body("bad", 1);
        body["viewer_url"] = json!(bad);
        let (status, answer) = api.post("/v1/servers", &operator, body).await;
        assert_eq!(status, 422, "{bad}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("viewer_url: must be http://host[:port]")),
            "{answer}"
        );
        let (status, answer) = patch(json!({ "viewer_url": bad })).await;
        assert_eq!(status, 422, "{bad}: {answer}");
    }
    // A distributor may not set it.
    let (status, _) = api
        .call(
            "PATCH",
            "/v1/servers/srv",
            Some(&alice),
            Some(json!({"viewer_url": null})),
        )
        .await;
    assert_eq!(status, 403);

    // The OpenAPI document describes it on registering, changing and reading.
    let (_, spec) = api.call("GET", "/openapi.json", None, None).await;
    for schema in ["CreateServer", "PatchServer", "ServerDto"] {
        let field = &spec["components"]["schemas"][schema]["properties"]["viewer_url"];
        assert!(field.is_object(), "{schema} lacks viewer_url: {field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_gives_each_slot_the_window_it_was_booked_with() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let bob = token(&db, "distributor", "bob");
    let api = Api::start(&db, &[]);
    let mut body = server_body("srv", 1);
    body["preroll_s"] = json!(60);
    body["grace_s"] = json!(10);
    let (status, created) = api.post("/v1/servers", &operator, body).await;
    assert_eq!(status, 201, "{created}");
    let start = Utc::now() + Duration::hours(1);
    let end = start + Duration::minutes(30);
    let (status, booked) = api
        .post(
            "/v1/reservations",
            &alice,
            json!({"server_id": "srv", "start": ts(start), "end": ts(end)}),
        )
        .await;
    assert_eq!(status, 201, "{booked}");

    // The operator widens the rules afterwards: the booked slot keeps its window, and the
    // schedule says which, to anyone who may see the slot at all (bob sees neither title nor
    // owner, but the window).
    let (status, changed) = api
        .call(
            "PATCH",
            "/v1/servers/srv",
            Some(&operator),
            Some(json!({"preroll_s": 600, "grace_s": 120})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    for who in [&alice, &bob] {
        let (status, schedule) = api.get("/v1/servers/srv/schedule", who).await;
        assert_eq!(status, 200, "{schedule}");
        let slot = &schedule["slots"][0];
        assert_eq!(
            time(&slot["opens_at"]),
            time(&booked["setting"]["opens_at"])
        );
        assert_eq!(
            time(&slot["closes_at"]),
            time(&booked["setting"]["closes_at"])
        );
        assert_eq!(
            time(&slot["opens_at"]),
            time(&slot["start"]) - Duration::seconds(60),
            "{slot}"
        );
        assert_eq!(
            time(&slot["closes_at"]),
            time(&slot["end"]) + Duration::seconds(10),
            "{slot}"
        );
    }
}
