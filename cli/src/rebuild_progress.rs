//! `slotcast admin rebuild` on a terminal: the rebuild's progress (stage, events, events/s,
//! ETA) redrawn on one stderr line while it runs, erased when it ends.
//!
//! Contract: shows progress only when stderr is a terminal; otherwise it prints nothing, and
//! the caller's one-line summary on stdout is all the output. The line is rendered by a pure
//! function of the progress; the redraw never holds up the rebuild (a `watch` channel, read
//! four times a second).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use slotcast_readmodel::{Progress, RebuildReport, Stage};
use sqlx::PgPool;
use tokio::sync::watch;

/// Runs the rebuild, drawing its progress on stderr when that is a terminal.
pub async fn rebuild(pool: &PgPool) -> slotcast_readmodel::Result<RebuildReport> {
    let (tx, rx) = watch::channel(Progress {
        stage: Stage::Starting,
        events: 0,
        expected: 0,
        elapsed: Duration::ZERO,
    });
    if !std::io::stderr().is_terminal() {
        return slotcast_readmodel::rebuild(pool, &tx).await;
    }
    let draw = tokio::spawn(draw(rx));
    let result = slotcast_readmodel::rebuild(pool, &tx).await;
    // Dropping the sender ends the drawing, which erases its line.
    drop(tx);
    let _ = draw.await;
    result
}

async fn draw(mut rx: watch::Receiver<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = tick.tick() => {
                let progress = *rx.borrow_and_update();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{}", line(&progress));
                let _ = err.flush();
            }
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

/// The progress line, e.g. `rebuilding the read model: 412,160 of ~1,000,000 events, 61,203
/// events/s, about 10 s left`.
fn line(p: &Progress) -> String {
    let secs = p.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        p.events as f64 / secs
    } else {
        0.0
    };
    let head = "rebuilding the read model:";
    match p.stage {
        Stage::Starting => format!("{head} starting"),
        Stage::Loading => {
            let eta = if rate > 0.0 && p.expected > p.events {
                format!(
                    ", about {} left",
                    seconds((p.expected - p.events) as f64 / rate)
                )
            } else {
                String::new()
            };
            format!(
                "{head} {} of ~{} events, {} events/s{eta}",
                grouped(p.events),
                grouped(p.expected),
                grouped(rate as u64)
            )
        }
        Stage::Indexing => format!(
            "{head} {} events loaded in {}, building indexes",
            grouped(p.events),
            seconds(secs)
        ),
        Stage::CatchingUp => format!(
            "{head} {} events, catching up with what came in meanwhile",
            grouped(p.events)
        ),
        Stage::Swapping => format!("{head} {} events, swapping the copies", grouped(p.events)),
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn seconds(s: f64) -> String {
    let whole = s as u64;
    if whole < 60 {
        format!("{s:.0} s")
    } else if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stage: Stage, events: u64, expected: u64, secs: u64) -> String {
        line(&Progress {
            stage,
            events,
            expected,
            elapsed: Duration::from_secs(secs),
        })
    }

    #[test]
    fn loading_shows_the_count_the_rate_and_what_is_left() {
        assert_eq!(
            at(Stage::Loading, 400_000, 1_000_000, 8),
            "rebuilding the read model: 400,000 of ~1,000,000 events, 50,000 events/s, \
             about 12 s left"
        );
        assert_eq!(
            at(Stage::Loading, 100, 20_000_000, 1),
            "rebuilding the read model: 100 of ~20,000,000 events, 100 events/s, about \
             55h33m left"
        );
        assert_eq!(
            at(Stage::Loading, 0, 0, 0),
            "rebuilding the read model: 0 of ~0 events, 0 events/s"
        );
    }

    #[test]
    fn later_stages_say_what_they_do() {
        assert_eq!(
            at(Stage::Indexing, 1_000_000, 1_000_000, 16),
            "rebuilding the read model: 1,000,000 events loaded in 16 s, building indexes"
        );
        assert!(at(Stage::Swapping, 5, 5, 1).ends_with("swapping the copies"));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
