//! The load generators of `slotcast-bench booking`: a closed loop of N clients and an open
//! loop on a fixed arrival schedule, each bounded in time, and the figures they come to.
//!
//! Contract: every request runs under a timeout and every loop stops taking work at its time
//! cap; failures are counted and grouped by their description, never raised.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use serde::Serialize;

/// What one request came to; `Err` is a short description that groups alike failures.
pub(crate) type Outcome = Result<(), String>;

/// What one measured run did.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figures {
    /// Requests sent.
    pub(crate) sent: usize,
    /// Answered 201 (slotcast) or inserted (raw SQL).
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    /// The run stopped at the time cap before sending every booking.
    pub(crate) capped: bool,
    pub(crate) wall_s: f64,
    /// `ok` per second of wall time.
    pub(crate) rate: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Distinct errors as `count× message`.
    pub(crate) error_samples: Vec<String>,
}

/// Distinct error messages kept per run.
const ERROR_SAMPLES: usize = 5;

pub(crate) async fn bounded(timeout: Duration, request: impl Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(timeout, request)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs())))
}

/// `clients` tasks each take the next index from a shared counter, run `op` on it and wait
/// for the answer before taking another, until `total` or the `cap`.
pub(crate) async fn closed_loop<F, Fut>(
    clients: usize,
    total: usize,
    timeout: Duration,
    cap: Duration,
    op: F,
) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + cap;
    let mut tasks = JoinSet::new();
    for _ in 0..clients.min(total) {
        let (op, next) = (op.clone(), next.clone());
        tasks.spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let sent = Instant::now();
                let outcome = bounded(timeout, op(i)).await;
                samples.push((sent.elapsed(), outcome));
            }
            samples
        });
    }
    collect(tasks, started, total).await
}

/// Sends request `i` at `i / rate` seconds after the start whatever the answers do (a fixed
/// arrival schedule), each in a task of its own, at most `total`, until the `cap`. Latency
/// counts from the scheduled send time, so time spent waiting to be sent shows.
pub(crate) async fn open_loop<F, Fut>(
    rate: f64,
    total: usize,
    timeout: Duration,
    cap: Duration,
    op: F,
) -> Figures
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + cap;
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled = started + Duration::from_secs_f64(i as f64 / rate);
        if scheduled >= deadline {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let request = op(i);
        tasks.spawn(async move {
            let outcome = bounded(timeout, request).await;
            vec![(scheduled.elapsed(), outcome)]
        });
    }
    collect(tasks, started, total).await
}

type Samples = Vec<(Duration, Outcome)>;

async fn collect(mut tasks: JoinSet<Samples>, started: Instant, total: usize) -> Figures {
    let mut samples = Vec::with_capacity(total);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(some) => samples.extend(some),
            Err(err) => samples.push((Duration::ZERO, Err(format!("client task failed: {err}")))),
        }
    }
    figures(samples, started.elapsed(), total)
}

/// Latency percentiles are over every request sent, failures included.
fn figures(samples: Samples, wall: Duration, total: usize) -> Figures {
    let mut latencies: Vec<Duration> = samples.iter().map(|(latency, _)| *latency).collect();
    latencies.sort_unstable();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for (_, outcome) in &samples {
        if let Err(what) = outcome {
            *errors.entry(what.clone()).or_default() += 1;
        }
    }
    let failed: usize = errors.values().sum();
    let ok = samples.len() - failed;
    let mut error_samples: Vec<String> = errors
        .iter()
        .take(ERROR_SAMPLES)
        .map(|(what, count)| format!("{count}× {what}"))
        .collect();
    if errors.len() > ERROR_SAMPLES {
        error_samples.push(format!("and {} other kinds", errors.len() - ERROR_SAMPLES));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let wall_s = wall.as_secs_f64();
    Figures {
        sent: samples.len(),
        ok,
        errors: failed,
        capped: samples.len() < total,
        wall_s,
        rate: if wall_s > 0.0 {
            ok as f64 / wall_s
        } else {
            0.0
        },
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
        error_samples,
    }
}

/// Nearest-rank percentile of sorted values (zero when there are none).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&ms[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
