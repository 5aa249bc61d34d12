//! API tokens as an operator manages them: listed, revoked everywhere at
//! once, expiring on their own; what the api says to a token that is not one; and `GET
//! /v1/me`, whose token it is.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{slotcast, token, Api, TestDb};

/// Polls `GET /v1/reservations` with `token` on `api` until it answers `want`, within a bound
/// far below the token cache's own 30 s, so only the announced revocation (or the expiry
/// check) can make it.
async fn until_status(api: &Api, token: &str, want: u16, within: Duration) -> Value {
    until_status_of(api, "/v1/reservations", token, want, within).await
}

/// [`until_status`] on `GET path`.
async fn until_status_of(api: &Api, path: &str, token: &str, want: u16, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = api.get(path, token).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {status} after {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token_id(db: &TestDb, name: &str) -> i64 {
    let (code, out, err) = slotcast(db, &["admin", "token", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let tokens: Vec<Value> = serde_json::from_str(&out).expect("token list JSON");
    assert!(
        !out.contains("sct_") && !out.contains("hash"),
        "the list shows neither tokens nor hashes: {out}"
    );
    tokens
        .iter()
        .find(|t| t["name"] == name)
        .and_then(|t| t["id"].as_i64())
        .unwrap_or_else(|| panic!("no token {name} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_by_every_api_at_once() {
    let db = TestDb::new().await;
    let alice = token(&db, "distributor", "alice");
    let apis = [Api::start(&db, &[]), Api::start(&db, &[])];
    for api in &apis {
        // Accepted, and so in each api's cache.
        until_status(api, &alice, 200, Duration::from_secs(10)).await;
    }
    let id = token_id(&db, "alice");
    let (code, out, err) = slotcast(&db, &["admin", "token", "revoke", &id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("token {id} revoked"));
    for api in &apis {
        let body = until_status(api, &alice, 401, Duration::from_secs(10)).await;
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (code, _, err) = slotcast(&db, &["admin", "token", "revoke", &id.to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("no token {id} in use")), "{err}");
    let (_, table, _) = slotcast(&db, &["admin", "token", "list"]);
    assert!(table.contains("revoked"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stops_working_when_it_expires_and_the_list_says_so() {
    let db = TestDb::new().await;
    let (code, out, err) = slotcast(
        &db,
        &[
            "admin",
            "token",
            "create",
            "--role",
            "distributor",
            "--name",
            "short",
            "--expires-in",
            "5s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let short = out.trim().to_string();
    let api = Api::start(&db, &[]);
    until_status(&api, &short, 200, Duration::from_secs(5)).await;
    until_status(&api, &short, 401, Duration::from_secs(20)).await;
    let (_, table, _) = slotcast(&db, &["admin", "token", "list"]);
    let line = table.lines().find(|l| l.contains("short")).expect("listed");
    assert!(line.contains("expired"), "{table}");
    let (code, _, err) = slotcast(
        &db,
        &[
            "admin",
            "token",
            "create",
            "--role",
            "operator",
            "--name",
            "x",
            "--expires-in",
            "soon",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--expires-in"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn something_that_is_not_a_token_is_refused_without_asking_the_database() {
    let db = TestDb::new().await;
    let api = Api::start(&db, &[]);
    for bad in ["hello", "sct_1234", &format!("sct_{}", "G".repeat(64))] {
        let (status, body) = api.get("/v1/reservations", bad).await;
        assert_eq!(status, 401, "{bad}: {body}");
        assert_eq!(body["error"]["message"], "that is not a slotcast token");
    }
    // A well-formed token nobody issued is looked up, and refused as unknown.
    let (status, body) = api
        .get("/v1/reservations", &format!("sct_{}", "0".repeat(64)))
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "unknown, expired or revoked token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_says_whose_token_it_is_and_its_role_and_refuses_what_is_not_a_token() {
    let db = TestDb::new().await;
    let operator = token(&db, "operator", "ops");
    let alice = token(&db, "distributor", "alice");
    let api = Api::start(&db, &[]);
    let (status, me) = api.get("/v1/me", &operator).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me, serde_json::json!({"name": "ops", "role": "operator"}));
    let (status, me) = api.get("/v1/me", &alice).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me,
        serde_json::json!({"name": "alice", "role": "distributor"})
    );

    // The same refusals as every other route: no token, not a token, a token nobody issued,
    // a revoked one.
    let (status, body) = api.call("GET", "/v1/me", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = api.get("/v1/me", "sct_1234").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "that is not a slotcast token");
    let (status, body) = api.get("/v1/me", &format!("sct_{}", "0".repeat(64))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["error"]["message"],
        "unknown, expired or revoked token"
    );
    let id = token_id(&db, "alice");
    let (code, _, err) = slotcast(&db, &["admin", "token", "revoke", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let body = until_status_of(&api, "/v1/me", &alice, 401, Duration::from_secs(10)).await;
    assert_eq!(body["error"]["code"], "unauthorized");

    // The OpenAPI document describes it.
    let (_, spec) = api.call("GET", "/openapi.json", None, None).await;
    let get = &spec["paths"]["/v1/me"]["get"];
    assert!(get["responses"]["200"].is_object(), "{get}");
    assert!(get["responses"]["401"].is_object(), "{get}");
    assert_eq!(
        spec["components"]["schemas"]["TokenRole"]["enum"],
        serde_json::json!(["operator", "distributor"])
    );
}
