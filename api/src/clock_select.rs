//! Which NTP answer the server clock takes: the best sample of each server, the servers that
//! agree, and whether a jump is believed.
//!
//! Contract, pure (numbers in, a decision out; unit-tested without a network):
//!
//! - Of one server's samples, the one with the least round-trip delay is kept ([`best`]):
//!   its offset is the least disturbed by queueing on the way.
//! - A sample's true offset lies within half its delay of the offset it measured. Servers
//!   *agree* when those intervals (widened by [`AGREEMENT_SLACK_MS`]) overlap at one point;
//!   the largest group that agrees wins ([`choose`], Marzullo's intersection), and the
//!   others are false tickers. Between equal groups, the one nearest the offset in use wins
//!   (a clock does not jump on a tie), else the one with the least delay. The offset taken is
//!   that of the winning group's member with the least delay.
//! - A step, the taken offset minus the offset in use, larger than `max_step` is refused
//!   unless a second server agrees with it ([`decide`]). The first sync is never a step.

/// Slack added to each sample's error bound when servers are compared: clocks of servers on
/// one network agree to well under this, and a few milliseconds of it keep a slow, honest
/// round trip from being counted against them.
pub const AGREEMENT_SLACK_MS: f64 = 5.0;

/// One NTP exchange's result, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub offset_ms: f64,
    pub delay_ms: f64,
}

/// A server's best sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub server: String,
    pub stratum: u8,
    pub sample: Sample,
}

/// The sample with the least delay; `None` for none.
pub fn best(samples: &[Sample]) -> Option<Sample> {
    samples
        .iter()
        .copied()
        .filter(|s| s.offset_ms.is_finite() && s.delay_ms.is_finite())
        .min_by(|a, b| a.delay_ms.total_cmp(&b.delay_ms))
}

/// The winning group's pick, with how many agree with it and who does not.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    pub pick: Candidate,
    /// Servers in the winning group, the pick's own included.
    pub agreeing: usize,
    /// Servers outside it.
    pub falsetickers: Vec<String>,
}

fn bounds(sample: &Sample) -> (f64, f64) {
    let error = sample.delay_ms.max(0.0) / 2.0 + AGREEMENT_SLACK_MS;
    (sample.offset_ms - error, sample.offset_ms + error)
}

/// The largest agreeing group of `candidates` and its pick; `None` for none. `current` is
/// the offset in use, if any (for ties).
pub fn choose(candidates: &[Candidate], current: Option<f64>) -> Option<Chosen> {
    // Every interval's low end is a point where the overlap can be largest; take each group
    // found at one.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for c in candidates {
        let (point, _) = bounds(&c.sample);
        let group: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, other)| {
                let (low, high) = bounds(&other.sample);
                low <= point && point <= high
            })
            .map(|(i, _)| i)
            .collect();
        if !group.is_empty() && !groups.contains(&group) {
            groups.push(group);
        }
    }
    let pick_of = |group: &[usize]| -> usize {
        group
            .iter()
            .copied()
            .min_by(|&a, &b| {
                candidates[a]
                    .sample
                    .delay_ms
                    .total_cmp(&candidates[b].sample.delay_ms)
            })
            .unwrap_or(group[0])
    };
    let nearness = |group: &[usize]| -> f64 {
        let offset = candidates[pick_of(group)].sample.offset_ms;
        current.map_or(candidates[pick_of(group)].sample.delay_ms, |c| {
            (offset - c).abs()
        })
    };
    let winner = groups.into_iter().max_by(|a, b| {
        a.len()
            .cmp(&b.len())
            .then_with(|| nearness(b).total_cmp(&nearness(a)))
    })?;
    let pick = candidates[pick_of(&winner)].clone();
    let falsetickers = candidates
        .iter()
        .enumerate()
        .filter(|(i, _)| !winner.contains(i))
        .map(|(_, c)| c.server.clone())
        .collect();
    Some(Chosen {
        pick,
        agreeing: winner.len(),
        falsetickers,
    })
}

/// Whether to take the chosen offset.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Take(Chosen),
    /// A step larger than the bound that no second server confirms: the offset in use stays.
    RefuseStep {
        chosen: Chosen,
        step_ms: f64,
    },
}

/// Takes `chosen` unless it steps the offset in use (`current`) by more than `max_step_ms`
/// with no second server agreeing.
pub fn decide(chosen: Chosen, current: Option<f64>, max_step_ms: f64) -> Decision {
    let Some(current) = current else {
        return Decision::Take(chosen);
    };
    let step_ms = chosen.pick.sample.offset_ms - current;
    if step_ms.abs() <= max_step_ms || chosen.agreeing >= 2 {
        Decision::Take(chosen)
    } else {
        Decision::RefuseStep { chosen, step_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(server: &str, offset_ms: f64, delay_ms: f64) -> Candidate {
        Candidate {
            server: server.into(),
            stratum: 2,
            sample: Sample {
                offset_ms,
                delay_ms,
            },
        }
    }

    #[test]
    fn of_one_servers_samples_the_least_delayed_is_kept() {
        let samples = [
            Sample {
                offset_ms: 9.0,
                delay_ms: 20.0,
            },
            Sample {
                offset_ms: 1.0,
                delay_ms: 0.4,
            },
            Sample {
                offset_ms: f64::NAN,
                delay_ms: 0.1,
            },
        ];
        assert_eq!(best(&samples).unwrap().offset_ms, 1.0);
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn the_majority_wins_and_the_odd_one_out_is_named() {
        let servers = [c("a", 0.5, 1.0), c("b", 5_000.0, 1.0), c("c", 1.2, 0.4)];
        let chosen = choose(&servers, None).unwrap();
        assert_eq!(chosen.agreeing, 2);
        assert_eq!(chosen.pick.server, "c", "the least delayed of the majority");
        assert_eq!(chosen.falsetickers, ["b"]);
    }

    #[test]
    fn between_two_that_disagree_the_one_nearest_the_offset_in_use_stays() {
        let servers = [c("a", 5_000.0, 0.2), c("b", 3.0, 1.0)];
        let chosen = choose(&servers, Some(2.0)).unwrap();
        assert_eq!(chosen.pick.server, "b");
        assert_eq!(chosen.agreeing, 1);
        // With nothing in use, the least delayed.
        assert_eq!(choose(&servers, None).unwrap().pick.server, "a");
    }

    #[test]
    fn a_lone_jump_past_the_bound_is_refused_and_a_confirmed_one_taken() {
        let lone = choose(&[c("a", 5_000.0, 1.0)], Some(0.0)).unwrap();
        match decide(lone, Some(0.0), 1_000.0) {
            Decision::RefuseStep { step_ms, .. } => assert_eq!(step_ms, 5_000.0),
            other => panic!("{other:?}"),
        }
        let confirmed = choose(&[c("a", 5_000.0, 1.0), c("b", 5_001.0, 2.0)], Some(0.0)).unwrap();
        assert!(matches!(
            decide(confirmed, Some(0.0), 1_000.0),
            Decision::Take(Chosen { agreeing: 2, .. })
        ));
        // Small steps and first syncs are taken alone.
        let small = choose(&[c("a", 900.0, 1.0)], Some(0.0)).unwrap();
        assert!(matches!(
            decide(small, Some(0.0), 1_000.0),
            Decision::Take(_)
        ));
        let first = choose(&[c("a", 5_000.0, 1.0)], None).unwrap();
        assert!(matches!(decide(first, None, 1_000.0), Decision::Take(_)));
        // Backwards too.
        let back = choose(&[c("a", -3_000.0, 1.0)], Some(0.0)).unwrap();
        assert!(matches!(
            decide(back, Some(0.0), 1_000.0),
            Decision::RefuseStep { step_ms, .. } if step_ms == -3_000.0
        ));
    }

    #[test]
    fn agreement_allows_for_each_samples_delay() {
        // 30 ms apart, each with 60 ms of delay (±30 ms, plus slack): they agree.
        let near = choose(&[c("a", 0.0, 60.0), c("b", 30.0, 60.0)], None).unwrap();
        assert_eq!(near.agreeing, 2);
        // 30 ms apart with 1 ms delays: they do not.
        let far = choose(&[c("a", 0.0, 1.0), c("b", 30.0, 1.0)], None).unwrap();
        assert_eq!(far.agreeing, 1);
        assert!(choose(&[], None).is_none());
    }
}
