//! The publishing policy in simulated time: each case drives [`Policy`] with server times and
//! outcomes, and reads back what it reports and decides.

use super::*;
use chrono::TimeZone;

/// `ms` milliseconds from the opening (negative: before it).
fn at(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap() + TimeDelta::milliseconds(ms)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn target(carrier: &str) -> Target {
    Target {
        carrier: carrier.into(),
        url: format!("rtsp://{carrier}/live/r1"),
    }
}

/// Opens at `at(0)`, closes at `at(closes_ms)`.
fn plan(carriers: &[&str], fallback: bool, closes_ms: i64) -> Plan {
    Plan {
        reservation_id: "r-1".into(),
        targets: carriers.iter().map(|c| target(c)).collect(),
        fallback,
        key: "k".into(),
        opens_at: at(0),
        closes_at: at(closes_ms),
        offset: None,
    }
}

/// Polls at `now` until the policy waits, connects or ends: what it reported, and that.
fn step(p: &mut Policy, now: DateTime<Utc>) -> (Vec<Event>, Action) {
    let mut events = Vec::new();
    for _ in 0..100 {
        match p.poll(now) {
            Action::Report(event) => events.push(event),
            action => return (events, action),
        }
    }
    panic!("the policy kept reporting: {events:?}");
}

fn connecting(carrier: &str) -> Event {
    let t = target(carrier);
    Event::Connecting {
        carrier: t.carrier,
        url: t.url,
    }
}

/// The policy at the opening, connecting over its first carrier.
fn started(plan: &Plan) -> Policy {
    let mut p = Policy::new(plan, at(0)).unwrap();
    let first = &plan.targets[0].carrier;
    assert_eq!(
        step(&mut p, at(0)),
        (vec![connecting(first)], Action::Connect(target(first)))
    );
    p
}

fn refused(status: u16, code: Option<RefusalCode>, reason: &str) -> Input {
    Input::Refused {
        status,
        code,
        reason: reason.into(),
    }
}

/// `input` at `now` is answered by asking again: the wait it reports, checked against the
/// wait it keeps and the attempt at its end.
fn asked_again(p: &mut Policy, now: DateTime<Utc>, input: Input) -> Duration {
    p.handle(now, input);
    let (events, action) = step(p, now);
    let [Event::Refused { retry_in, .. }] = events[..] else {
        panic!("{events:?}");
    };
    let again = after(now, retry_in);
    assert_eq!(action, Action::Wait { until: again });
    assert_eq!(step(p, again).1, Action::Connect(target("a")));
    retry_in
}

#[test]
fn counts_down_on_whole_seconds_then_connects_at_the_opening() {
    let mut p = Policy::new(&plan(&["a"], false, 10_000), at(-2_500)).unwrap();
    let waiting = |left| Event::Waiting { left: ms(left) };
    assert_eq!(
        step(&mut p, at(-2_500)),
        (vec![waiting(2_500)], Action::Wait { until: at(-2_000) })
    );
    // Woken early (a camera's frame drained): no event, the same wait.
    assert_eq!(
        step(&mut p, at(-2_300)),
        (vec![], Action::Wait { until: at(-2_000) })
    );
    assert_eq!(
        step(&mut p, at(-2_000)),
        (vec![waiting(2_000)], Action::Wait { until: at(-1_000) })
    );
    assert_eq!(
        step(&mut p, at(-1_000)),
        (vec![waiting(1_000)], Action::Wait { until: at(0) })
    );
    assert_eq!(
        step(&mut p, at(0)),
        (vec![connecting("a")], Action::Connect(target("a")))
    );
}

#[test]
fn a_plan_needs_a_carrier_and_a_window_not_yet_closed() {
    let none = plan(&[], false, 10_000);
    assert!(matches!(
        Policy::new(&none, at(0)),
        Err(TerminalError::Usage(_))
    ));
    let Err(TerminalError::Live(why)) = Policy::new(&plan(&["a"], false, 10_000), at(10_000))
    else {
        panic!("a closed window is an error");
    };
    assert_eq!(why, "the window closed at 2030-01-01T12:00:10.000Z");
}

#[test]
fn not_open_or_unknown_at_the_opening_is_asked_again_quickly_then_backing_off() {
    let mut p = started(&plan(&["a"], false, 60_000));
    let mut now = at(0);
    let mut waits = Vec::new();
    for n in 0..20 {
        // The streamer has not heard of the opening: either answer means "not yet".
        let code = [RefusalCode::NotOpen, RefusalCode::Unknown][n % 2];
        let wait = asked_again(&mut p, now, refused(403, Some(code), "not yet"));
        waits.push(wait.as_millis());
        now = after(now, wait);
    }
    // Quick in the first 5 s after the opening (10 ms doubling up to 500 ms), then backing off
    // (1 s doubling up to 5 s).
    assert_eq!(
        waits,
        [
            10, 20, 40, 80, 160, 320, 500, 500, 500, 500, 500, 500, 500, 500, 500, 1_000, 2_000,
            4_000, 5_000, 5_000
        ]
    );
}

#[test]
fn busy_and_server_errors_back_off_up_to_the_cap() {
    let mut p = started(&plan(&["a"], false, 60_000));
    let mut now = at(0);
    let mut waits = Vec::new();
    let answers = [
        refused(403, Some(RefusalCode::Busy), "another publisher"),
        refused(503, None, "Service Unavailable"),
    ];
    for n in 0..7 {
        // Busy is not "not open yet": no quick retries at the opening.
        let wait = asked_again(&mut p, now, answers[n / 5].clone());
        waits.push(wait.as_millis());
        now = after(now, wait);
    }
    assert_eq!(waits, [500, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
}

#[test]
fn a_refusal_retrying_cannot_fix_fails_and_its_words_do_not_count() {
    let plan = plan(&["a"], false, 60_000);
    let fails = |input: Input| {
        let mut p = started(&plan);
        p.handle(at(100), input);
        let (events, action) = step(&mut p, at(100));
        assert!(events.is_empty(), "{events:?}");
        let Action::Fail(why) = action else {
            panic!("{action:?}");
        };
        // Over for good: whatever comes next.
        p.handle(at(200), Input::Live);
        assert_eq!(step(&mut p, at(200)).1, Action::Fail(why.clone()));
        why
    };
    assert_eq!(
        fails(refused(401, Some(RefusalCode::BadKey), "wrong stream key")),
        "the server refused the stream key (401 wrong stream key); if it was rotated \
         elsewhere, `slotcast show ID` fetches the new setting"
    );
    assert!(fails(refused(401, None, "Unauthorized")).contains("refused the stream key"));
    for code in [
        RefusalCode::Closed,
        RefusalCode::OtherServer,
        RefusalCode::NotACarrier,
        RefusalCode::PullsACamera,
    ] {
        assert_eq!(
            fails(refused(403, Some(code), "no")),
            "a refused: 403 no",
            "{code}"
        );
    }
    // Without a code, the words are not read, and a 404 is not "unknown".
    assert_eq!(
        fails(refused(
            403,
            None,
            "reservation not open: it opens at 12:00:00Z"
        )),
        "a refused: 403 reservation not open: it opens at 12:00:00Z"
    );
    assert_eq!(
        fails(refused(404, None, "Not Found")),
        "a refused: 404 Not Found"
    );
}

#[test]
fn in_the_last_second_a_standing_refusal_waits_for_the_close() {
    let mut p = started(&plan(&["a"], false, 10_000));
    p.handle(at(9_500), refused(403, Some(RefusalCode::Closed), "closed"));
    assert_eq!(
        step(&mut p, at(9_500)),
        (vec![], Action::Wait { until: at(10_000) })
    );
    assert_eq!(
        step(&mut p, at(10_000)),
        (vec![], Action::Stop(Ended::WindowClosed))
    );
    assert!(p.tally().carriers.is_empty());
}

#[test]
fn fallback_moves_on_at_once_and_comes_back_after_a_round() {
    let mut p = started(&plan(&["a", "b", "c"], true, 60_000));
    p.handle(at(0), Input::Unreachable("refused".into()));
    assert_eq!(
        step(&mut p, at(0)),
        (
            vec![
                Event::Unreachable {
                    carrier: "a".into(),
                    why: "refused".into(),
                    next: Some("b".into())
                },
                connecting("b")
            ],
            Action::Connect(target("b"))
        )
    );
    p.handle(at(0), Input::Failed("no RECORD".into()));
    assert_eq!(
        step(&mut p, at(0)),
        (
            vec![
                Event::Dropped {
                    carrier: "b".into(),
                    why: "no RECORD".into()
                },
                connecting("c")
            ],
            Action::Connect(target("c"))
        )
    );
    // Every carrier tried this round: back to the first, after backing off.
    p.handle(at(0), Input::Unreachable("timeout".into()));
    let (events, action) = step(&mut p, at(0));
    assert_eq!(
        events,
        [Event::Unreachable {
            carrier: "c".into(),
            why: "timeout".into(),
            next: Some("a".into())
        }]
    );
    assert_eq!(action, Action::Wait { until: at(500) });
    assert_eq!(step(&mut p, at(500)).1, Action::Connect(target("a")));
    p.handle(at(500), Input::Live);
    assert_eq!(
        step(&mut p, at(500)),
        (
            vec![Event::Live {
                carrier: "a".into(),
                at: at(500)
            }],
            Action::Wait { until: at(60_000) }
        )
    );

    // Without fallback: the same carrier, backing off, and told so.
    let mut p = started(&plan(&["a", "b"], false, 60_000));
    p.handle(at(0), Input::Unreachable("refused".into()));
    assert_eq!(
        step(&mut p, at(0)),
        (
            vec![Event::Unreachable {
                carrier: "a".into(),
                why: "refused".into(),
                next: None
            }],
            Action::Wait { until: at(500) }
        )
    );
    assert_eq!(step(&mut p, at(500)).1, Action::Connect(target("a")));
    p.handle(at(500), Input::Unreachable("refused".into()));
    assert_eq!(step(&mut p, at(500)).1, Action::Wait { until: at(1_500) });
}

#[test]
fn a_drop_after_a_connection_that_held_is_retried_at_once_and_quick_drops_back_off() {
    let mut p = started(&plan(&["a", "b"], true, 60_000));
    p.handle(at(0), Input::Live);
    step(&mut p, at(0));
    p.handle(at(12_000), Input::Dropped("reset".into()));
    assert_eq!(
        step(&mut p, at(12_000)),
        (
            vec![
                Event::Dropped {
                    carrier: "a".into(),
                    why: "reset".into()
                },
                connecting("a")
            ],
            Action::Connect(target("a"))
        )
    );
    p.handle(at(12_000), Input::Live);
    step(&mut p, at(12_000));
    // Dropped again 2 s later: not at once this time.
    p.handle(at(14_000), Input::Dropped("reset".into()));
    assert_eq!(
        step(&mut p, at(14_000)).1,
        Action::Wait { until: at(14_500) }
    );
    assert_eq!(step(&mut p, at(14_500)).1, Action::Connect(target("a")));
    p.handle(at(14_500), Input::Unreachable("down".into()));
    assert_eq!(step(&mut p, at(14_500)).1, Action::Connect(target("b")));
    p.handle(at(14_500), Input::Live);
    step(&mut p, at(14_500));
    p.handle(at(15_000), Input::Dropped("reset".into()));
    assert_eq!(
        step(&mut p, at(15_000)).1,
        Action::Wait { until: at(16_000) }
    );
    p.handle(at(15_500), Input::Shutdown);
    assert_eq!(
        step(&mut p, at(15_500)),
        (vec![], Action::Stop(Ended::Stopped))
    );
    assert_eq!(
        p.tally(),
        &Tally {
            carriers: vec!["a".into(), "b".into()],
            reconnects: 2,
            live_for: ms(12_000 + 2_000 + 500),
        }
    );
}

#[test]
fn the_window_closing_during_a_backoff_ends_the_run() {
    // Never live: the backoff is cut short by the close.
    let mut p = started(&plan(&["a"], false, 3_000));
    for (now, next) in [(0, 500), (500, 1_500), (1_500, 3_000)] {
        p.handle(at(now), Input::Unreachable("down".into()));
        assert_eq!(step(&mut p, at(now)).1, Action::Wait { until: at(next) });
        if next < 3_000 {
            assert_eq!(step(&mut p, at(next)).1, Action::Connect(target("a")));
        }
    }
    assert_eq!(step(&mut p, at(3_000)).1, Action::Stop(Ended::WindowClosed));

    // Once live, a drop whose retry would come in the last second is the close.
    let mut p = started(&plan(&["a"], false, 3_000));
    p.handle(at(0), Input::Live);
    step(&mut p, at(0));
    p.handle(at(1_000), Input::Dropped("reset".into()));
    assert_eq!(step(&mut p, at(1_000)).1, Action::Connect(target("a")));
    p.handle(at(1_000), Input::Live);
    step(&mut p, at(1_000));
    p.handle(at(1_800), Input::Dropped("reset".into()));
    assert_eq!(step(&mut p, at(1_800)).1, Action::Wait { until: at(2_000) });
    assert_eq!(
        step(&mut p, at(2_000)),
        (vec![], Action::Stop(Ended::WindowClosed))
    );

    // A drop in the last second is the streamer closing the window: not reported.
    let mut p = started(&plan(&["a"], false, 3_000));
    p.handle(at(0), Input::Live);
    step(&mut p, at(0));
    p.handle(at(2_500), Input::Dropped("closed".into()));
    assert_eq!(
        step(&mut p, at(2_500)),
        (vec![], Action::Stop(Ended::WindowClosed))
    );
    assert_eq!(p.tally().live_for, ms(2_500));
}

#[test]
fn shutdown_stops_before_or_after_the_opening_and_counts_the_time_live() {
    let mut p = Policy::new(&plan(&["a"], false, 10_000), at(-5_000)).unwrap();
    p.handle(at(-4_000), Input::Shutdown);
    assert_eq!(
        step(&mut p, at(-4_000)),
        (vec![], Action::Stop(Ended::StoppedBeforeOpening))
    );

    let mut p = started(&plan(&["a"], false, 10_000));
    p.handle(at(0), Input::Live);
    step(&mut p, at(0));
    p.handle(at(3_000), Input::Shutdown);
    p.handle(at(4_000), Input::Dropped("reset".into()));
    assert_eq!(
        step(&mut p, at(5_000)),
        (vec![], Action::Stop(Ended::Stopped))
    );
    assert_eq!(p.tally().live_for, ms(3_000));
}

#[test]
fn the_end_of_the_source_ends_the_run_and_before_the_window_is_an_error() {
    let mut p = Policy::new(&plan(&["a"], false, 10_000), at(-5_000)).unwrap();
    p.handle(at(-4_000), Input::SourceEnded);
    assert_eq!(
        step(&mut p, at(-4_000)).1,
        Action::Fail("the input ended before the window opened".into())
    );

    let mut p = started(&plan(&["a"], false, 10_000));
    p.handle(at(1_000), Input::SourceEnded);
    assert_eq!(step(&mut p, at(1_000)).1, Action::Stop(Ended::SourceEnded));

    let mut p = started(&plan(&["a"], false, 10_000));
    p.handle(at(1_000), Input::SourceFailed("the camera hung up".into()));
    assert_eq!(
        step(&mut p, at(1_000)).1,
        Action::Fail("the camera hung up".into())
    );
}
