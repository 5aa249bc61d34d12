//! The poll grid: once media flows, publishers' connections are polled by a few shard threads
//! that wake on one timer grid, instead of each connection waking on its own.
//!
//! Contract: [`Poller::adopt`] takes a connection until it is over and then gives it back with
//! the reason, so its owner finishes it as it always did. A shard polls up to
//! [`SHARD_CAPACITY`] connections one after the other at every grid point (counted from the
//! streamer's start); a new shard starts only when every shard is full, and a shard holding
//! nothing sleeps without a timer. A connection's poll runs on the shard's plain thread, so it
//! must not need a tokio runtime. After shutdown a shard keeps polling what it holds, told it
//! is shutting down, until each is over; then it ends, and a connection adopted after that is
//! given straight back.
//!
//! Why shards and not a task per connection: each connection task parked on its own timer
//! meant, per grid point, one timer re-registration (which wakes tokio's driver through its
//! eventfd) per connection, and the worker that woke woke another to steal or search. A shard
//! thread wakes once per grid point however many connections it holds, and nothing else
//! wakes with it; sixty-four connections take a couple of milliseconds of a core per grid
//! point, well inside one period.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Connections per shard thread, at most.
pub const SHARD_CAPACITY: usize = 64;
/// The read buffer a shard lends to each connection it polls.
const SCRATCH: usize = 64 * 1024;

/// A connection a shard can poll.
pub trait Pollable: Send + 'static {
    /// Why a connection is over.
    type Over: Send + 'static;
    /// Handles everything that came in since the last poll, using `scratch` to read into;
    /// `Some` once the connection is over.
    fn poll(&mut self, now: Instant, scratch: &mut [u8], shutting_down: bool)
        -> Option<Self::Over>;
    /// Why it is over after its poll panicked (a bug): it is given back to be finished.
    fn panicked(&mut self) -> Self::Over;
}

/// Hands connections to the shards. Clones share the shards.
pub struct Poller<T: Pollable> {
    inner: Arc<Inner<T>>,
}

impl<T: Pollable> Clone for Poller<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<T: Pollable> {
    epoch: Instant,
    period: Duration,
    shutdown: CancellationToken,
    shards: Mutex<Vec<Arc<Shard<T>>>>,
}

type Done<T> = oneshot::Sender<(T, <T as Pollable>::Over)>;

struct Shard<T: Pollable> {
    held: Mutex<Held<T>>,
    /// The shard's thread, once started.
    thread: OnceLock<Thread>,
}

struct Held<T: Pollable> {
    /// Adopted, not yet picked up by the shard's thread.
    waiting: Vec<(T, Done<T>)>,
    /// Connections the shard holds: waiting plus being polled.
    count: usize,
    /// The shard's thread has ended: it takes nothing more.
    closed: bool,
}

impl<T: Pollable> Poller<T> {
    /// Shards poll at `epoch + k × period`; after `shutdown` they wind down. Call it inside
    /// the streamer's runtime: a task of it wakes idle shards at shutdown.
    pub fn new(epoch: Instant, period: Duration, shutdown: CancellationToken) -> Self {
        let inner = Arc::new(Inner {
            epoch,
            period,
            shutdown,
            shards: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let shutdown = inner.shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if let Some(inner) = weak.upgrade() {
                lock(&inner.shards).iter().for_each(|shard| shard.unpark());
            }
        });
        Self { inner }
    }

    /// Polls `connection` on the grid until it is over, then gives it back with the reason.
    pub async fn adopt(&self, connection: T) -> Adopted<T> {
        let (done, over) = oneshot::channel();
        if let Err((connection, why)) = self.place(connection, done) {
            return Adopted::Refused(connection, why);
        }
        match over.await {
            Ok((connection, why)) => Adopted::Over(connection, why),
            Err(_) => Adopted::Lost,
        }
    }

    /// How many shard threads have started.
    pub fn shards(&self) -> usize {
        lock(&self.inner.shards).len()
    }

    fn place(&self, connection: T, done: Done<T>) -> Result<(), (T, String)> {
        let mut shards = lock(&self.inner.shards);
        for shard in shards.iter() {
            let mut held = lock(&shard.held);
            if !held.closed && held.count < SHARD_CAPACITY {
                held.count += 1;
                held.waiting.push((connection, done));
                drop(held);
                shard.unpark();
                return Ok(());
            }
        }
        if self.inner.shutdown.is_cancelled() {
            return Err((connection, "the streamer is shutting down".into()));
        }
        let shard = Arc::new(Shard {
            held: Mutex::new(Held {
                waiting: Vec::new(),
                count: 0,
                closed: false,
            }),
            thread: OnceLock::new(),
        });
        if let Err(err) = shard.start(self.inner.clone(), shards.len()) {
            tracing::error!(%err, "cannot start a poller shard");
            return Err((connection, format!("the streamer cannot poll it: {err}")));
        }
        {
            let mut held = lock(&shard.held);
            held.count = 1;
            held.waiting.push((connection, done));
        }
        shard.unpark();
        shards.push(shard);
        Ok(())
    }
}

/// What became of an adopted connection.
pub enum Adopted<T: Pollable> {
    /// It is over, for this reason.
    Over(T, T::Over),
    /// Not taken, for this reason (the streamer is shutting down, or no thread could start).
    Refused(T, String),
    /// Its shard's thread died with it (a bug that a poll's own panic is not: that one is
    /// given back as over). The connection is gone.
    Lost,
}

impl<T: Pollable> Shard<T> {
    /// Runs the shard on a thread of its own: each grid point wakes that one thread, and no
    /// worker of the streamer's runtime.
    fn start(self: &Arc<Self>, inner: Arc<Inner<T>>, index: usize) -> std::io::Result<()> {
        let shard = self.clone();
        let thread = std::thread::Builder::new()
            .name(format!("slotcast-poll-{index}"))
            .spawn(move || shard.run(&inner))?;
        // Nobody unparks the shard before this: it is not listed yet.
        let _ = self.thread.set(thread.thread().clone());
        Ok(())
    }

    /// Wakes the shard's thread: a connection arrived, or the streamer is shutting down.
    fn unpark(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    fn run(&self, inner: &Inner<T>) {
        let mut polling: Vec<(T, Done<T>)> = Vec::new();
        let mut scratch = vec![0u8; SCRATCH];
        let mut last = inner.epoch;
        loop {
            {
                let mut held = lock(&self.held);
                polling.append(&mut held.waiting);
                if polling.is_empty() && inner.shutdown.is_cancelled() {
                    held.closed = true;
                    return;
                }
            }
            if polling.is_empty() {
                // Nothing to poll: asleep until a connection arrives or shutdown.
                std::thread::park();
                continue;
            }
            // Sleeping to the instant itself, not through tokio's timer wheel: the wheel also
            // wakes its thread at each 64 ms boundary a timer crosses, about 15 more wakes a
            // second.
            let next = next_grid_point(
                inner.epoch,
                Instant::now().max(last + Duration::from_nanos(1)),
                inner.period,
            );
            while let Some(left) = next
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
            {
                std::thread::sleep(left);
            }
            last = next;
            let now = Instant::now();
            let shutting_down = inner.shutdown.is_cancelled();
            let mut i = 0;
            while i < polling.len() {
                let connection = &mut polling[i].0;
                let polled = catch_unwind(AssertUnwindSafe(|| {
                    connection.poll(now, &mut scratch, shutting_down)
                }));
                let over = match polled {
                    Ok(None) => {
                        i += 1;
                        continue;
                    }
                    Ok(Some(over)) => over,
                    Err(_) => {
                        tracing::error!("a polled connection panicked; it is given back");
                        polling[i].0.panicked()
                    }
                };
                let (connection, done) = polling.swap_remove(i);
                lock(&self.held).count -= 1;
                let _ = done.send((connection, over));
            }
        }
    }
}

/// The first instant of `period`'s grid (counted from `epoch`, the streamer's start) at or
/// after `now`.
fn next_grid_point(epoch: Instant, now: Instant, period: Duration) -> Instant {
    let period_ns = period.as_nanos().max(1);
    let since = now.saturating_duration_since(epoch).as_nanos();
    let steps = since.div_ceil(period_ns);
    let offset = u64::try_from(steps * period_ns).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one holds consistent data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_counted_from_the_epoch() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        let period = ms(20);
        assert_eq!(next_grid_point(epoch, epoch, period), epoch);
        assert_eq!(
            next_grid_point(epoch, epoch + ms(1), period),
            epoch + ms(20)
        );
        assert_eq!(
            next_grid_point(epoch, epoch + ms(25), period),
            epoch + ms(40)
        );
        assert_eq!(
            next_grid_point(epoch, epoch + ms(40), period),
            epoch + ms(40)
        );
        // Before the epoch (a clock read early): the epoch itself.
        assert_eq!(next_grid_point(epoch + ms(5), epoch, period), epoch + ms(5));
    }

    /// A connection that is over after `over_after` polls, or when told, or at shutdown.
    struct Fake {
        id: usize,
        polls: Vec<Instant>,
        over_after: usize,
        panic_at: Option<usize>,
        release: Option<Arc<std::sync::atomic::AtomicBool>>,
        saw_shutdown: bool,
    }

    fn fake(id: usize, over_after: usize) -> Fake {
        Fake {
            id,
            polls: Vec::new(),
            over_after,
            panic_at: None,
            release: None,
            saw_shutdown: false,
        }
    }

    impl Pollable for Fake {
        type Over = String;

        fn poll(
            &mut self,
            now: Instant,
            scratch: &mut [u8],
            shutting_down: bool,
        ) -> Option<String> {
            assert_eq!(scratch.len(), SCRATCH);
            self.polls.push(now);
            if self.panic_at == Some(self.polls.len()) {
                panic!("a bug in connection {}", self.id);
            }
            if shutting_down {
                self.saw_shutdown = true;
                return Some("shutdown".into());
            }
            let released = self
                .release
                .as_ref()
                .is_some_and(|r| r.load(std::sync::atomic::Ordering::SeqCst));
            (released || self.polls.len() >= self.over_after).then(|| format!("over {}", self.id))
        }

        fn panicked(&mut self) -> String {
            format!("panicked {}", self.id)
        }
    }

    fn poller(period_ms: u64) -> (Poller<Fake>, CancellationToken, Instant) {
        let shutdown = CancellationToken::new();
        let epoch = Instant::now();
        let poller = Poller::new(epoch, Duration::from_millis(period_ms), shutdown.clone());
        (poller, shutdown, epoch)
    }

    fn over(adopted: Adopted<Fake>) -> (Fake, String) {
        match adopted {
            Adopted::Over(fake, why) => (fake, why),
            Adopted::Refused(_, why) => panic!("refused: {why}"),
            Adopted::Lost => panic!("lost"),
        }
    }

    #[tokio::test]
    async fn connections_are_polled_together_on_the_grid_and_given_back_when_over() {
        let (poller, _shutdown, epoch) = poller(5);
        let period = Duration::from_millis(5);
        let (a, b, c) = tokio::join!(
            poller.adopt(fake(1, 6)),
            poller.adopt(fake(2, 10)),
            poller.adopt(fake(3, 14)),
        );
        let (a, why_a) = over(a);
        let (b, why_b) = over(b);
        let (c, why_c) = over(c);
        assert_eq!((a.id, why_a.as_str()), (1, "over 1"));
        assert_eq!((b.id, why_b.as_str()), (2, "over 2"));
        assert_eq!((c.id, why_c.as_str()), (3, "over 3"));
        assert_eq!((a.polls.len(), b.polls.len(), c.polls.len()), (6, 10, 14));
        // While all three are held, one wake polls them all: the same instants.
        let from = a.polls[0].max(b.polls[0]).max(c.polls[0]);
        let until = a.polls[5];
        let held = |f: &Fake| -> Vec<Instant> {
            f.polls
                .iter()
                .copied()
                .filter(|t| (from..=until).contains(t))
                .collect()
        };
        assert!(
            held(&a).len() >= 3,
            "the three were held together for a few polls"
        );
        assert_eq!(held(&a), held(&b));
        assert_eq!(held(&b), held(&c));
        // Each poll is at or after a grid point later than the one before it.
        let step = |t: Instant| t.duration_since(epoch).as_nanos() / period.as_nanos();
        for pair in c.polls.windows(2) {
            assert!(step(pair[1]) > step(pair[0]), "two polls in one period");
        }
        assert_eq!(poller.shards(), 1);
    }

    #[tokio::test]
    async fn a_full_shard_starts_another() {
        let (poller, _shutdown, _) = poller(5);
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = |id| Fake {
            release: Some(release.clone()),
            ..fake(id, usize::MAX)
        };
        let mut first: Vec<_> = (0..SHARD_CAPACITY)
            .map(|id| {
                let poller = poller.clone();
                let fake = held(id);
                tokio::spawn(async move { poller.adopt(fake).await })
            })
            .collect();
        while lock(&poller.inner.shards)
            .first()
            .is_none_or(|s| lock(&s.held).count < SHARD_CAPACITY)
        {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            poller.shards(),
            1,
            "{SHARD_CAPACITY} connections fit one shard"
        );
        let one_more = {
            let (poller, fake) = (poller.clone(), held(SHARD_CAPACITY));
            tokio::spawn(async move { poller.adopt(fake).await })
        };
        first.push(one_more);
        while poller.shards() < 2 {
            tokio::task::yield_now().await;
        }
        release.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut ids = Vec::new();
        for task in first {
            let (fake, _) = over(task.await.unwrap());
            assert!(!fake.polls.is_empty());
            ids.push(fake.id);
        }
        ids.sort_unstable();
        assert_eq!(ids, (0..=SHARD_CAPACITY).collect::<Vec<_>>());
        assert_eq!(poller.shards(), 2);
    }

    #[tokio::test]
    async fn at_shutdown_held_connections_are_told_then_new_ones_are_refused() {
        let (poller, shutdown, _) = poller(5);
        let adopted = {
            let poller = poller.clone();
            tokio::spawn(async move { poller.adopt(fake(1, usize::MAX)).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        shutdown.cancel();
        let (fake, why) = over(adopted.await.unwrap());
        assert!(fake.saw_shutdown);
        assert!(fake.polls.len() >= 2, "polled before the shutdown too");
        assert_eq!(why, "shutdown");
        // The shard's thread ends once it holds nothing.
        let closed = || {
            lock(&poller.inner.shards)
                .iter()
                .all(|s| lock(&s.held).closed)
        };
        for _ in 0..500 {
            if closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(closed(), "the shard did not end after shutdown");
        match poller.adopt(fake).await {
            Adopted::Refused(back, why) => {
                assert_eq!(
                    (back.id, why.as_str()),
                    (1, "the streamer is shutting down")
                );
            }
            Adopted::Over(..) => panic!("a shard took a connection after shutdown"),
            Adopted::Lost => panic!("lost"),
        }
    }

    #[tokio::test]
    async fn a_connection_that_panics_is_given_back_and_the_others_go_on() {
        let (poller, _shutdown, _) = poller(5);
        let buggy = Fake {
            panic_at: Some(2),
            ..fake(1, usize::MAX)
        };
        let (buggy, honest) = tokio::join!(poller.adopt(buggy), poller.adopt(fake(2, 4)));
        let (buggy, why) = over(buggy);
        assert_eq!((buggy.polls.len(), why.as_str()), (2, "panicked 1"));
        let (honest, why) = over(honest);
        assert_eq!((honest.polls.len(), why.as_str()), (4, "over 2"));
        assert_eq!(poller.shards(), 1);
    }
}
