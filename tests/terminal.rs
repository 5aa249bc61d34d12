//! The broadcaster's terminal against a running `slotcast server all`: login, the clock
//! (also under libfaketime with a known skew), booking and the stored setting info, refusals,
//! `--json`, a wrong token, the reservation commands, and `slotcast import` of a booking
//! made through the API (as the console makes it).

mod support;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::terminal::{mode, ok, output, Run, Terminal};
use support::{server_body, token, ts, Api, TestDb};

/// `server all` (api and scheduler; no streamer) with a server `s1` of one slot at a time.
async fn stack(db: &TestDb) -> (Api, String) {
    let api = Api::start_role(db, "all", &[]);
    let operator = token(db, "operator", "ops");
    let (status, body) = api
        .post("/v1/servers", &operator, server_body("s1", 1))
        .await;
    assert_eq!(status, 201, "{body}");
    (api, token(db, "distributor", "alice"))
}

/// The stack and a terminal logged in to it as the distributor.
async fn logged_in(db: &TestDb) -> (Api, Terminal) {
    let (api, alice) = stack(db).await;
    let t = Terminal::new();
    ok(
        &t.run(&["login", "--api", &api.base, "--token", &alice]),
        "login",
    );
    (api, t)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcaster_logs_in_checks_the_clock_books_and_finds_the_setting_stored() {
    let db = TestDb::new().await;
    let (api, t) = logged_in(&db).await;
    let alice = std::fs::read_to_string(t.profiles()).unwrap();
    assert_eq!(mode(&t.profiles()), 0o600);
    assert!(
        alice.contains(&format!("api = \"{}\"", api.base)),
        "{alice}"
    );
    assert!(alice.contains("token = \"sct_"), "{alice}");

    let time = t.run(&["time", "--samples", "3"]);
    ok(&time, "time");
    assert!(time.stdout.starts_with("Your clock "), "{}", time.stdout);
    // The test server has no NTP server: it says so.
    assert!(
        time.stdout.contains("server NOT synced to NTP"),
        "{}",
        time.stdout
    );
    assert!(std::fs::read_to_string(t.profiles())
        .unwrap()
        .contains("offset_ms"));

    let booked = t.run(&[
        "book",
        "--server",
        "s1",
        "--start",
        "+3m",
        "--duration",
        "30m",
        "--title",
        "Evening",
    ]);
    ok(&booked, "book");
    let out = &booked.stdout;
    assert!(out.starts_with("Booked "), "{out}");
    for shown in [
        "carrier-a rtsp://127.0.0.2:8554/live/",
        "carrier-b",
        "+09:00",
        "clock     Your clock",
    ] {
        assert!(out.contains(shown), "{shown:?} missing in:\n{out}");
    }
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("Booked <id>")
        .to_string();
    let file = t.setting(&id);
    assert_eq!(mode(&file), 0o600);
    let setting: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(setting["stream_key"].as_str().map(str::len), Some(32));
    let carriers: Vec<&str> = setting["carriers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["carrier"].as_str().unwrap())
        .collect();
    assert_eq!(carriers, ["carrier-a", "carrier-b"]);
    assert_eq!(setting["title"], "Evening");

    // The carrier preset.
    ok(&t.run(&["carrier", "use", "carrier-b"]), "carrier use");
    let list = t.run(&["carrier", "list", &id]);
    ok(&list, "carrier list");
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with('*') && l.contains("carrier-b")),
        "{}",
        list.stdout
    );
    let listed = t.run(&["--json", "carrier", "list", &id]).json();
    assert_eq!(listed["carriers"][1]["preset"], true);

    // The same window again: refused, with the conflict and free windows, exit 1.
    let again = t.run(&[
        "book",
        "--server",
        "s1",
        "--start",
        setting["start"].as_str().unwrap(),
        "--duration",
        "30m",
    ]);
    assert_eq!(again.code, 1, "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.starts_with("Refused: "), "{}", again.stdout);
    assert!(again.stdout.contains("Conflicts with:"), "{}", again.stdout);
    assert!(
        again.stdout.contains("Free windows of that length nearby:"),
        "{}",
        again.stdout
    );
    let refused = t.run(&[
        "--json",
        "book",
        "--server",
        "s1",
        "--start",
        setting["start"].as_str().unwrap(),
        "--duration",
        "30m",
    ]);
    assert_eq!(refused.code, 1);
    assert_eq!(refused.json()["status"], "rejected");

    // Lists and views.
    let listed = t.run(&["--json", "reservations"]).json();
    let ids: Vec<&str> = listed["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id.as_str()), "{listed}");
    let table = t.run(&["reservations", "--status", "accepted"]);
    ok(&table, "reservations");
    assert!(
        table.stdout.contains(&id) && table.stdout.contains("START (local)"),
        "{}",
        table.stdout
    );
    let shown = t.run(&["show", &id]);
    ok(&shown, "show");
    assert!(
        shown.stdout.contains("accepted \"Evening\""),
        "{}",
        shown.stdout
    );
    let history = t.run(&["history", &id]);
    ok(&history, "history");
    assert!(
        history.stdout.contains("ReservationAccepted"),
        "{}",
        history.stdout
    );
    let day = t.run(&["schedule", "s1", "--date", &{
        let start =
            chrono::DateTime::parse_from_rfc3339(setting["start"].as_str().unwrap()).unwrap();
        start
            .with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
            .format("%Y-%m-%d")
            .to_string()
    }]);
    ok(&day, "schedule");
    assert!(
        day.stdout
            .lines()
            // At least one half-hour cell: a slot booked near midnight ends the day's row.
            .any(|l| l.starts_with(&id[..13]) && l.contains('#') && l.contains("accepted")),
        "{}",
        day.stdout
    );
    ok(&t.run(&["servers"]), "servers");

    // A new key: the stored file follows.
    let rotated = t.run(&["rotate-key", &id]);
    ok(&rotated, "rotate-key");
    let after: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_ne!(after["stream_key"], setting["stream_key"]);
    assert_eq!(mode(&file), 0o600);

    ok(&t.run(&["cancel", &id]), "cancel");
    let shown = t.run(&["--json", "show", &id]).json();
    assert_eq!(shown["status"], "cancelled");
}

/// The server cannot take the booking for a moment (its database refuses the write): the
/// terminal says so, waits as the answer tells it, and books with the same key once it can.
#[tokio::test(flavor = "multi_thread")]
async fn a_booking_answered_503_is_retried_after_its_retry_after_with_the_same_key() {
    use std::io::{BufRead, BufReader};
    let db = TestDb::new().await;
    let (_api, t) = logged_in(&db).await;
    let mut conn = db.connect().await;
    let refuse = "ALTER TABLE events ADD CONSTRAINT refuse_s1 \
                  CHECK (aggregate_id <> 's1' OR sequence < 2) NOT VALID";
    sqlx::raw_sql(refuse)
        .execute(&mut conn)
        .await
        .expect("refuse s1's events");
    let mut book = t.command(&[
        "book",
        "--server",
        "s1",
        "--start",
        "+3m",
        "--duration",
        "30m",
    ]);
    let mut child = book
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the terminal");
    let stderr = child.stderr.take().expect("stderr");
    let (told, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = told.send(line);
        }
    });
    let line = heard
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the terminal says what happened");
    assert!(
        line.starts_with(
            "the server cannot answer now; retrying in 1 s with the same Idempotency-Key (1/3)"
        ),
        "{line}"
    );
    // The database takes writes again before the terminal's next attempt.
    sqlx::raw_sql("ALTER TABLE events DROP CONSTRAINT refuse_s1")
        .execute(&mut conn)
        .await
        .expect("take writes again");
    let out = child.wait_with_output().expect("the terminal ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("Booked "), "{stdout}");
    assert_eq!(
        db.count("SELECT count(*) FROM events WHERE event_type = 'ReservationAccepted'")
            .await,
        1
    );
    let id = stdout.split_whitespace().nth(1).expect("Booked <id>");
    assert!(t.setting(id).exists(), "the setting info is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_or_no_api_is_one_line_and_a_distinct_exit_code() {
    let db = TestDb::new().await;
    let (api, _) = stack(&db).await;
    let t = Terminal::new();
    let wrong = t.run(&["--api", &api.base, "--token", "sct_wrong", "reservations"]);
    assert_eq!(wrong.code, 3, "{}{}", wrong.stdout, wrong.stderr);
    assert_eq!(wrong.stderr.lines().count(), 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("slotcast login"), "{}", wrong.stderr);
    let login = t.run(&["login", "--api", &api.base, "--token", "sct_wrong"]);
    assert_eq!(login.code, 3, "{}", login.stderr);
    assert!(!t.profiles().exists(), "a refused token is not stored");
    let nothing = t.run(&["reservations"]);
    assert_eq!(nothing.code, 2, "{}", nothing.stderr);
    assert!(
        nothing.stderr.contains("slotcast login"),
        "{}",
        nothing.stderr
    );
    let down = t.run(&["--api", "http://127.0.0.1:9", "--token", "x", "servers"]);
    assert_eq!(down.code, 4, "{}", down.stderr);
    assert_eq!(down.stderr.lines().count(), 1, "{}", down.stderr);
    let bad_time = t.run(&[
        "--api",
        &api.base,
        "--token",
        "x",
        "book",
        "--server",
        "s1",
        "--start",
        "soon",
        "--duration",
        "5m",
    ]);
    assert_eq!(bad_time.code, 2, "{}", bad_time.stderr);
    assert!(
        bad_time.stderr.contains("is not a time"),
        "{}",
        bad_time.stderr
    );
    for run in [&wrong, &login, &nothing, &down, &bad_time] {
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}

/// A terminal whose clock runs 3 s slow (libfaketime) against a server on the true clock.
#[tokio::test(flavor = "multi_thread")]
async fn time_under_faketime_reports_the_skew_within_5_ms() {
    let db = TestDb::new().await;
    let (_api, t) = logged_in(&db).await;
    let run = output(t.faketime("-3s", &["--json", "time", "--samples", "8"]));
    ok(&run, "faketime slotcast time");
    let measured = run.json();
    let offset = measured["offset_ms"].as_f64().unwrap();
    assert!(
        (offset - 3000.0).abs() <= 5.0,
        "a 3 s slow clock measured as {offset} ms behind: {measured}"
    );
    // Without the fake, the same terminal agrees with the server.
    let plain = t.run(&["--json", "time"]).json();
    assert!(plain["offset_ms"].as_f64().unwrap().abs() <= 5.0, "{plain}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_history_is_paged_both_ways_and_the_terminal_follows_every_page() {
    let db = TestDb::new().await;
    let (api, t) = logged_in(&db).await;
    let alice = token(&db, "distributor", "alice2");
    let start = chrono::Utc::now() + chrono::Duration::hours(2);
    let (status, booked) = api
        .post(
            "/v1/reservations",
            &alice,
            serde_json::json!({
                "server_id": "s1",
                "start": support::ts(start),
                "end": support::ts(start + chrono::Duration::minutes(30)),
            }),
        )
        .await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_string();
    // 1,004 key rotations: with the booking, 1,005 events, more than a page of 1,000.
    let rotations = futures_util::stream::iter(0..1004)
        .map(|_| {
            let (api, alice, id) = (&api, &alice, &id);
            async move {
                api.post(
                    &format!("/v1/reservations/{id}/rotate-key"),
                    alice,
                    serde_json::json!({}),
                )
                .await
                .0
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<u16>>()
        .await;
    assert!(rotations.iter().all(|s| *s == 200));

    // Seven at a time, oldest first and newest first: every event once, in order.
    let page_through = |first: String, forward: bool| {
        let (api, alice, id) = (&api, &alice, &id);
        async move {
            let mut seen = Vec::new();
            let mut query = first;
            for _ in 0..1000 {
                let (status, page) = api
                    .get(&format!("/v1/reservations/{id}/history?{query}"), alice)
                    .await;
                assert_eq!(status, 200, "{page}");
                let events = page["events"].as_array().unwrap();
                assert!(events.len() <= 7);
                seen.extend(events.iter().map(|e| e["sequence"].as_i64().unwrap()));
                let next = &page["next"];
                let key = if forward { "after" } else { "before" };
                match next[key].as_i64() {
                    Some(cursor) => query = format!("{key}={cursor}&limit=7"),
                    None => {
                        assert!(next.is_null(), "{next}");
                        return seen;
                    }
                }
            }
            panic!("more than 1,000 pages");
        }
    };
    let oldest_first = page_through("limit=7".into(), true).await;
    assert_eq!(oldest_first.len(), 1005);
    assert!(oldest_first.windows(2).all(|w| w[0] < w[1]));
    let last = oldest_first[oldest_first.len() - 1];
    let newest_first = page_through(format!("before={}&limit=7", last + 1), false).await;
    let mut reversed = newest_first.clone();
    reversed.reverse();
    assert_eq!(reversed, oldest_first);
    // Without a query: the first 1,000, oldest first, and where the rest begins.
    let (_, first) = api
        .get(&format!("/v1/reservations/{id}/history"), &alice)
        .await;
    assert_eq!(first["events"].as_array().unwrap().len(), 1000);
    assert_eq!(first["next"]["after"], oldest_first[999]);

    // What cannot be a page is refused, naming the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=2.5", "limit"),
        ("after=-3", "after"),
    ] {
        let (status, body) = api
            .get(&format!("/v1/reservations/{id}/history?{query}"), &alice)
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{query}: {body}");
    }
    let (status, _) = api
        .get(&format!("/v1/reservations/{id}/history?limit=7.0"), &alice)
        .await;
    assert_eq!(
        status, 200,
        "a whole number written as 7.0 is a whole number"
    );
    // Both cursors: the events between them, oldest first, paged within the range.
    let (a, b) = (oldest_first[10], oldest_first[20]);
    let (_, between) = api
        .get(
            &format!("/v1/reservations/{id}/history?after={a}&before={b}&limit=4"),
            &alice,
        )
        .await;
    let got: Vec<i64> = between["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(got, oldest_first[11..15]);
    assert_eq!(between["next"]["after"], oldest_first[14]);
    assert_eq!(between["next"]["before"], b);

    // The terminal pages through it all, logged in as the reservation's owner.
    ok(
        &t.run(&["login", "--api", &api.base, "--token", &alice]),
        "login",
    );
    let shown = t.run(&["--json", "history", &id]).json();
    let events = shown["events"].as_array().unwrap();
    assert_eq!(events.len(), 1005);
    let table = t.run(&["history", &id]);
    ok(&table, "history");
    assert_eq!(
        table
            .stdout
            .lines()
            .filter(|l| l.contains("StreamKeyRotated"))
            .count(),
        1004
    );
}

/// Books `[now + from_min, now + to_min)` minutes on s1 through the API as `who`, the way the
/// console does; returns the answer as sent (201).
async fn book_over_http(api: &Api, who: &str, from_min: i64, to_min: i64) -> Value {
    let now = chrono::Utc::now();
    let body = json!({
        "server_id": "s1",
        "start": ts(now + chrono::Duration::minutes(from_min)),
        "end": ts(now + chrono::Duration::minutes(to_min)),
        "title": "From the console",
    });
    let (status, answer) = api.post("/v1/reservations", who, body).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

/// The setting file `t` stores for `id`.
fn stored(t: &Terminal, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(t.setting(id)).unwrap()).unwrap()
}

/// Refused with `code`, saying `shown` in one line, with nothing stored for `id`.
fn refused(t: &Terminal, run: &Run, code: i32, shown: &str, id: &str) {
    assert_eq!(run.code, code, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(shown),
        "{shown:?} missing in {}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!t.setting(id).exists(), "stored after a refusal: {id}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_booking_made_through_the_api_is_imported_from_standard_input_and_shown() {
    let db = TestDb::new().await;
    let (api, alice) = stack(&db).await;
    let t = Terminal::new();
    ok(
        &t.run(&["login", "--api", &api.base, "--token", &alice]),
        "login",
    );

    // The API's answer, piped in whole: stored as `slotcast book` stores it.
    let booked = book_over_http(&api, &alice, 3, 33).await;
    let id = booked["id"].as_str().unwrap().to_string();
    let key = booked["setting"]["stream_key"]
        .as_str()
        .unwrap()
        .to_string();
    let run = t.run_with_input(&["import"], booked.to_string().as_bytes());
    ok(&run, "import");
    for shown in [
        &format!("Imported {id} on s1 (accepted)"),
        "carrier-a rtsp://127.0.0.2:8554/live/",
        "(mode 0600)",
        &format!("slotcast live {id} --input FILE"),
    ] {
        assert!(
            run.stdout.contains(shown),
            "{shown:?} missing in:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("replaced"), "{}", run.stdout);
    assert!(!format!("{}{}", run.stdout, run.stderr).contains(&key));
    assert_eq!(mode(&t.setting(&id)), 0o600);
    let setting = stored(&t, &id);
    assert_eq!(setting["stream_key"], key.as_str());
    assert_eq!(setting["carriers"], booked["setting"]["carriers"]);
    assert_eq!(setting["title"], "From the console");
    assert_eq!(setting["api"], api.base.as_str());

    // `show` finds it, as it finds a booking of its own.
    let shown = t.run(&["show", &id]);
    ok(&shown, "show");
    assert!(
        shown.stdout.contains("stream key inside"),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains("carrier-b rtsp://127.0.0.3:8554/live/"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains("not booked from this terminal"));

    // The console's copy (the answer and its address), from a file, after the slot moved:
    // the key is the copy's, the slot and window the API's now, and both changes are said.
    let (status, moved) = api
        .post(
            &format!("/v1/reservations/{id}/reschedule"),
            &alice,
            json!({"start": ts(chrono::Utc::now() + chrono::Duration::minutes(40)),
                   "end": ts(chrono::Utc::now() + chrono::Duration::minutes(70))}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    let copy = t.home.path().join(format!("{id}.json"));
    let mut console = booked.clone();
    console["api"] = json!(api.base);
    std::fs::write(&copy, console.to_string()).unwrap();
    let again = t.run(&["--json", "import", copy.to_str().unwrap()]).json();
    assert_eq!(again["replaced"], true, "{again}");
    assert_eq!(
        again["updated_from_api"],
        json!(["slot", "window"]),
        "{again}"
    );
    assert_eq!(
        support::time(&stored(&t, &id)["start"]),
        support::time(&moved["start"])
    );
    assert_eq!(stored(&t, &id)["stream_key"], key.as_str());

    // A key rotation's answer replaces the key, and says so.
    let (status, rotated) = api
        .post(
            &format!("/v1/reservations/{id}/rotate-key"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let run = t.run_with_input(&["import", "-"], rotated.to_string().as_bytes());
    ok(&run, "import of a rotation");
    assert!(run.stdout.contains("had another key"), "{}", run.stdout);
    assert_eq!(
        stored(&t, &id)["stream_key"],
        rotated["setting"]["stream_key"]
    );

    // The booking's answer again, now that its key was rotated away: refused, and the
    // working key stays stored.
    let run = t.run_with_input(&["import"], console.to_string().as_bytes());
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("was replaced by a key rotation at")
            && run.stderr.contains("nothing stored"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&key), "the key shown: {}", run.stderr);
    assert_eq!(
        stored(&t, &id)["stream_key"],
        rotated["setting"]["stream_key"]
    );

    // Refusals: one line each, a distinct exit code, nothing stored.
    let other = book_over_http(&api, &alice, 80, 90).await;
    let other_id = other["id"].as_str().unwrap();
    let text = other.to_string();
    refused(
        &t,
        &t.run_with_input(&["import"], &text.as_bytes()[..text.len() / 2]),
        2,
        "the setting info does not read: it is not JSON (EOF while parsing",
        other_id,
    );
    let (_, page) = api
        .get(&format!("/v1/reservations/{other_id}"), &alice)
        .await;
    refused(
        &t,
        &t.run_with_input(&["import"], page.to_string().as_bytes()),
        2,
        "setting.stream_key is missing",
        other_id,
    );
    let bob = token(&db, "distributor", "bob");
    let bobs = book_over_http(&api, &bob, 100, 110).await;
    let bobs_id = bobs["id"].as_str().unwrap();
    let run = t.run_with_input(&["import"], bobs.to_string().as_bytes());
    refused(&t, &run, 1, "HTTP 404", bobs_id);
    assert!(
        run.stderr
            .contains(&format!("{bobs_id} is not a reservation of yours")),
        "{}",
        run.stderr
    );
    ok(&t.run(&["cancel", other_id]), "cancel");
    refused(
        &t,
        &t.run_with_input(&["import"], text.as_bytes()),
        2,
        &format!("reservation {other_id} is cancelled"),
        other_id,
    );
}
