//! The publishing policy of `slotcast live`, sans-IO: when to wait, which carrier to connect
//! over, how long to back off, and when to stop.
//!
//! Contract: the edge (`run`) calls [`Policy::poll`] and does what it says until it says
//! [`Action::Wait`]: report an [`Event`], connect to a [`Target`], stop with an [`Ended`], or
//! fail with a message. It tells the policy what happened with [`Policy::handle`] (an
//! attempt's outcome, a drop, the end of the source, a shutdown) and polls again, and polls
//! when a wait is over. The policy never blocks, reads a clock or touches a socket: every
//! time is passed in, on the server's clock (the terminal's, corrected by the measured
//! offset). What it decides:
//!
//! - Before `opens_at`: a countdown event on each whole second left.
//! - From `opens_at`: connect over the current carrier. A carrier that cannot be reached is
//!   left for the next one at once with fallback (until every one was tried this round),
//!   else tried again backing off. Backing off is 0.5 s, doubling up to [`MAX_BACKOFF`].
//! - A refusal is decided on its code (docs/publishing.md), never its words: in the
//!   [`OPENING_GRACE`] after `opens_at`, `not_open` and `unknown` are asked again after 10 ms,
//!   doubling up to 500 ms (the streamer may not have heard of the opening yet); a code worth
//!   retrying, or a 5xx, backs off; a 401 fails with the way to fetch a rotated key; any
//!   other refusal fails, unless the window closes within [`CLOSING_MARGIN`] (then the policy
//!   waits for the close).
//! - A drop is reconnected at once the first time and after a connection that held for
//!   [`LASTING`]; one that keeps dropping soon after connecting backs off. Once it has been
//!   live, being off the air within [`CLOSING_MARGIN`] of the close is the close.
//! - Nothing is tried at or after `closes_at`: the run stops there. A shutdown stops it at
//!   once; so does the end of the source (an error before the window opened).

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use slotcast_domain::contract::RefusalCode;

use crate::clock::Offset;
use crate::TerminalError;

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first wait of backing off.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// After `opens_at`, how long a "not open yet" or "unknown" answer is taken for a streamer
/// that has not yet heard of the opening (and asked again quickly).
pub const OPENING_GRACE: Duration = Duration::from_secs(5);
/// The first quick retry while the gate is opening, and the longest.
const OPENING_RETRY: Duration = Duration::from_millis(10);
const OPENING_RETRY_MAX: Duration = Duration::from_millis(500);
/// How long a connection must have lasted for the next drop to be retried at once.
pub const LASTING: Duration = Duration::from_secs(10);
/// After a drop retried at once, the wait before the next one if that one drops soon too
/// (backing off then doubles it to 0.5 s).
const AFTER_LASTING: Duration = Duration::from_millis(250);
/// A drop this close to the end is the window closing.
pub const CLOSING_MARGIN: Duration = Duration::from_secs(1);

/// One carrier's publish URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub carrier: String,
    pub url: String,
}

/// What to publish to, and when.
#[derive(Clone)]
pub struct Plan {
    /// The preset carrier first; with fallback, the others after it.
    pub targets: Vec<Target>,
    pub fallback: bool,
    /// The reservation (SRT names it in the stream id; the other protocols in the URL).
    pub reservation_id: String,
    pub key: String,
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    /// This terminal's clock against the server's; `None`: taken as agreeing.
    pub offset: Option<Offset>,
}

/// Everything but the stream key.
impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("targets", &self.targets)
            .field("fallback", &self.fallback)
            .field("reservation_id", &self.reservation_id)
            .field("opens_at", &self.opens_at)
            .field("closes_at", &self.closes_at)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// What is happening, as it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Before the window: time left (once a second, on whole seconds left).
    Waiting {
        left: Duration,
    },
    Connecting {
        carrier: String,
        url: String,
    },
    /// RECORD accepted; `at` is the server time by the corrected clock.
    Live {
        carrier: String,
        at: DateTime<Utc>,
    },
    /// The carrier could not be reached; `next` is the carrier tried next, if any.
    Unreachable {
        carrier: String,
        why: String,
        next: Option<String>,
    },
    /// The server said no, and it is worth asking again in `retry_in`.
    Refused {
        carrier: String,
        status: u16,
        reason: String,
        retry_in: Duration,
    },
    /// The connection broke while live, or the attempt broke before it went live.
    Dropped {
        carrier: String,
        why: String,
    },
}

/// Why a `live` run stopped (without an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ended {
    #[default]
    WindowClosed,
    /// The clip (without `--loop`) or the camera's stream came to its end.
    SourceEnded,
    /// Ctrl-C or SIGTERM.
    Stopped,
    StoppedBeforeOpening,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WindowClosed => "the window closed",
            Self::SourceEnded => "the input ended",
            Self::Stopped => "stopped on request (Ctrl-C or SIGTERM)",
            Self::StoppedBeforeOpening => "stopped before the window opened",
        })
    }
}

/// What the edge is to do next.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Action {
    /// Tell the user, then poll again.
    Report(Event),
    /// Connect and run the dialogue up to RECORD, then [`Policy::handle`] the outcome.
    Connect(Target),
    /// Nothing to do before `until` (server time), unless something happens first.
    Wait { until: DateTime<Utc> },
    /// Hang up if connected; the run is over.
    Stop(Ended),
    /// Hang up if connected; the run failed, for this reason.
    Fail(String),
}

/// What happened, as the edge saw it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Input {
    /// The attempt went live (RECORD accepted).
    Live,
    /// The server refused the attempt: its status, its code (`None`: no code, or one this
    /// build does not know), its words.
    Refused {
        status: u16,
        code: Option<RefusalCode>,
        reason: String,
    },
    /// The carrier could not be reached (no connection).
    Unreachable(String),
    /// The attempt broke before going live (the dialogue failed, timed out, a bad URL).
    Failed(String),
    /// The live connection broke.
    Dropped(String),
    SourceEnded,
    SourceFailed(String),
    Shutdown,
}

/// What a run did, for its summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Carriers that went live, in order (repeats collapsed).
    pub carriers: Vec<String>,
    /// Connections made after the first one went live.
    pub reconnects: u32,
    /// Time spent live.
    pub live_for: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not connected; the next attempt is due at this time.
    Idle {
        retry_at: DateTime<Utc>,
    },
    /// An attempt is under way.
    Connecting,
    Live {
        since: DateTime<Utc>,
    },
}

pub(super) struct Policy {
    targets: Vec<Target>,
    fallback: bool,
    opens_at: DateTime<Utc>,
    closes_at: DateTime<Utc>,
    /// Whether a poll has seen `opens_at` pass.
    opened: bool,
    /// Before the window: when the next countdown event is due.
    next_tick: Option<DateTime<Utc>>,
    /// Index into `targets` of the carrier to try next.
    target: usize,
    backoff: Duration,
    link: Link,
    tally: Tally,
    /// Decided, not yet returned by [`Policy::poll`].
    queue: VecDeque<Action>,
    /// The last action, once the run is over: returned by every poll from then on.
    end: Option<Action>,
}

impl Policy {
    /// The policy for `plan`, at `now`: an error if there is nothing to connect over or the
    /// window has closed already.
    pub fn new(plan: &Plan, now: DateTime<Utc>) -> Result<Self, TerminalError> {
        if plan.targets.is_empty() {
            return Err(TerminalError::Usage("no carrier to connect over".into()));
        }
        if now >= plan.closes_at {
            return Err(TerminalError::Live(format!(
                "the window closed at {}",
                crate::view::utc(plan.closes_at)
            )));
        }
        Ok(Self {
            targets: plan.targets.clone(),
            fallback: plan.fallback,
            opens_at: plan.opens_at,
            closes_at: plan.closes_at,
            opened: false,
            next_tick: None,
            target: 0,
            backoff: Duration::ZERO,
            link: Link::Idle { retry_at: now },
            tally: Tally::default(),
            queue: VecDeque::new(),
            end: None,
        })
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Action {
        if let Some(action) = self.queue.pop_front() {
            return action;
        }
        if let Some(end) = &self.end {
            return end.clone();
        }
        if !self.opened {
            if now < self.opens_at {
                return self.count_down(now);
            }
            self.opened = true;
            self.link = Link::Idle { retry_at: now };
        }
        if now >= self.closes_at {
            self.finish(now, Action::Stop(Ended::WindowClosed));
            return self.poll(now);
        }
        let Link::Idle { retry_at } = self.link else {
            return Action::Wait {
                until: self.closes_at,
            };
        };
        let went_live = !self.tally.carriers.is_empty();
        if went_live && self.near_close(now) {
            // Dropped at the very end: the streamer closed the window.
            self.finish(now, Action::Stop(Ended::WindowClosed));
            return self.poll(now);
        }
        if now < retry_at {
            let last = if went_live {
                before(self.closes_at, CLOSING_MARGIN)
            } else {
                self.closes_at
            };
            return Action::Wait {
                until: retry_at.min(last),
            };
        }
        let target = self.targets[self.target].clone();
        self.link = Link::Connecting;
        self.queue.push_back(Action::Connect(target.clone()));
        Action::Report(Event::Connecting {
            carrier: target.carrier,
            url: target.url,
        })
    }

    /// Takes in what happened at `now`. Outcomes of an attempt count only while one is under
    /// way, a drop only while live, and nothing once the run is over.
    pub fn handle(&mut self, now: DateTime<Utc>, input: Input) {
        if self.end.is_some() {
            return;
        }
        match (input, self.link) {
            (Input::Shutdown, _) => {
                let ended = if self.opened {
                    Ended::Stopped
                } else {
                    Ended::StoppedBeforeOpening
                };
                self.finish(now, Action::Stop(ended));
            }
            (Input::SourceEnded, _) if !self.opened => {
                self.finish(
                    now,
                    Action::Fail("the input ended before the window opened".into()),
                );
            }
            (Input::SourceEnded, _) => {
                self.finish(now, Action::Stop(Ended::SourceEnded));
            }
            (Input::SourceFailed(why), _) => {
                self.finish(now, Action::Fail(why));
            }
            (Input::Live, Link::Connecting) => self.went_live(now),
            (Input::Unreachable(why), Link::Connecting) => self.missed(now, why, true),
            (Input::Failed(why), Link::Connecting) => self.missed(now, why, false),
            (
                Input::Refused {
                    status,
                    code,
                    reason,
                },
                Link::Connecting,
            ) => self.refused(now, status, code, reason),
            (Input::Dropped(why), Link::Live { since }) => self.dropped(now, since, why),
            (
                Input::Live
                | Input::Unreachable(_)
                | Input::Failed(_)
                | Input::Refused { .. }
                | Input::Dropped(_),
                _,
            ) => {}
        }
    }

    /// Before the window: an event on each whole second left.
    fn count_down(&mut self, now: DateTime<Utc>) -> Action {
        if let Some(tick) = self.next_tick.filter(|tick| now < *tick) {
            return Action::Wait { until: tick };
        }
        let left = (self.opens_at - now).to_std().unwrap_or_default();
        let step = Duration::from_nanos(u64::from(left.subsec_nanos()));
        let step = if step.is_zero() {
            Duration::from_secs(1)
        } else {
            step
        };
        self.next_tick = Some(after(now, step.min(left)));
        Action::Report(Event::Waiting { left })
    }

    fn went_live(&mut self, now: DateTime<Utc>) {
        let carrier = self.targets[self.target].carrier.clone();
        if !self.tally.carriers.is_empty() {
            self.tally.reconnects += 1;
        }
        if self.tally.carriers.last() != Some(&carrier) {
            self.tally.carriers.push(carrier.clone());
        }
        self.link = Link::Live { since: now };
        self.queue
            .push_back(Action::Report(Event::Live { carrier, at: now }));
    }

    /// The attempt did not reach the server (`unreachable`) or broke before RECORD.
    fn missed(&mut self, now: DateTime<Utc>, why: String, unreachable: bool) {
        let carrier = self.targets[self.target].carrier.clone();
        let next = (self.fallback && self.targets.len() > 1)
            .then(|| (self.target + 1) % self.targets.len());
        let event = if unreachable {
            Event::Unreachable {
                carrier,
                why,
                next: next.map(|n| self.targets[n].carrier.clone()),
            }
        } else {
            Event::Dropped { carrier, why }
        };
        self.queue.push_back(Action::Report(event));
        let retry_at = match next {
            // The next carrier at once, until every one was tried this round.
            Some(n) if n != 0 => {
                self.target = n;
                now
            }
            Some(n) => {
                self.target = n;
                after(now, self.back_off())
            }
            None => after(now, self.back_off()),
        };
        self.link = Link::Idle { retry_at };
    }

    fn refused(
        &mut self,
        now: DateTime<Utc>,
        status: u16,
        code: Option<RefusalCode>,
        reason: String,
    ) {
        let carrier = self.targets[self.target].carrier.clone();
        let opening = (now - self.opens_at).to_std().unwrap_or_default() < OPENING_GRACE;
        let not_yet = matches!(code, Some(RefusalCode::NotOpen | RefusalCode::Unknown));
        let retry_in = if status == 401 || code == Some(RefusalCode::BadKey) {
            self.finish(
                now,
                Action::Fail(format!(
                    "the server refused the stream key ({status} {reason}); if it was \
                     rotated elsewhere, `slotcast show ID` fetches the new setting"
                )),
            );
            return;
        } else if not_yet && opening {
            // The streamer has not heard of the opening yet: ask again soon.
            let wait = OPENING_RETRY.max(self.backoff);
            self.backoff = (wait * 2).min(OPENING_RETRY_MAX);
            wait
        } else if code.is_some_and(RefusalCode::worth_retrying) || status >= 500 {
            self.back_off()
        } else if self.near_close(now) {
            // Not worth an error a moment before the close: wait for it.
            self.link = Link::Idle {
                retry_at: after(now, CLOSING_MARGIN),
            };
            return;
        } else {
            self.finish(
                now,
                Action::Fail(format!("{carrier} refused: {status} {reason}")),
            );
            return;
        };
        self.queue.push_back(Action::Report(Event::Refused {
            carrier,
            status,
            reason,
            retry_in,
        }));
        self.link = Link::Idle {
            retry_at: after(now, retry_in),
        };
    }

    fn dropped(&mut self, now: DateTime<Utc>, since: DateTime<Utc>, why: String) {
        let lasted = (now - since).to_std().unwrap_or_default();
        self.tally.live_for += lasted;
        if lasted >= LASTING {
            // A connection that held: the first retry after its drop is immediate.
            self.backoff = Duration::ZERO;
        }
        if !self.near_close(now) {
            let carrier = self.targets[self.target].carrier.clone();
            self.queue
                .push_back(Action::Report(Event::Dropped { carrier, why }));
        }
        let retry_at = if self.backoff.is_zero() {
            self.backoff = AFTER_LASTING;
            now
        } else {
            // One that keeps dropping soon after connecting is retried ever more slowly.
            after(now, self.back_off())
        };
        self.link = Link::Idle { retry_at };
    }

    /// The next wait: 0.5 s, 1 s, 2 s, … up to [`MAX_BACKOFF`].
    fn back_off(&mut self) -> Duration {
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        self.backoff
    }

    fn near_close(&self, now: DateTime<Utc>) -> bool {
        after(now, CLOSING_MARGIN) >= self.closes_at
    }

    /// Ends the run with `end` (a `Stop` or a `Fail`), counting the time live; what was
    /// reported before it still goes out first.
    fn finish(&mut self, now: DateTime<Utc>, end: Action) {
        if let Link::Live { since } = self.link {
            self.tally.live_for += (now - since).to_std().unwrap_or_default();
        }
        self.link = Link::Idle { retry_at: now };
        self.queue.retain(|a| matches!(a, Action::Report(_)));
        self.end = Some(end);
    }
}

/// `at` plus `d`, saturating.
fn after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at` less `d`, saturating.
fn before(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
