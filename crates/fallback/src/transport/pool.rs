//! The default transport's connection pool: keep-alive connections kept
//! per origin (scheme, host and port, and h2c apart from HTTP/1).
//!
//! - HTTP/1: idle connections, newest first. A connection comes back when
//!   its answer's body has been read to the end (the body hands it back,
//!   so no task waits per answer); one that is closed, not ready, or idle
//!   for longer than the idle timeout is dropped when it is taken, so
//!   nothing runs per connection while it sits idle. hyper's connection
//!   task reads an idle connection, so a server's `FIN` closes it and the
//!   check at checkout sees that without a system call of its own.
//! - HTTP/2: one connection per origin, shared by every stream; a new one
//!   replaces it when it closes or a request was refused on it (a
//!   `GOAWAY`).
//! - One sweeper task per pool, and only while something is idle, closes
//!   connections idle past the idle timeout that no request came to take.
//!
//! There is no race between checkout and connect: a call takes an idle
//! connection if there is one, and connects otherwise.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::{http1, http2};
use tokio::time::Instant;

use super::RequestBody;

/// Where a connection goes: one origin, and h2c apart from HTTP/1.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) authority: Authority,
    pub(crate) https: bool,
    pub(crate) h2c: bool,
}

pub(crate) type H1 = http1::SendRequest<RequestBody>;
pub(crate) type H2 = http2::SendRequest<RequestBody>;

/// An idle HTTP/1 connection, and since when it has been idle.
pub(crate) struct Idle {
    pub(crate) tx: H1,
    since: Instant,
}

#[derive(Default)]
struct Slot {
    /// Oldest first; taken from the end.
    idle: Vec<Idle>,
    h2: Option<(H2, Instant)>,
    /// A call is opening the origin's HTTP/2 connection; the others wait
    /// for it rather than each open one.
    h2_opening: Option<tokio::sync::watch::Receiver<()>>,
}

impl Slot {
    /// The HTTP/2 connection if it is open (marked used now); a closed
    /// one is dropped.
    fn open_h2(&mut self) -> Option<H2> {
        let (tx, used) = self.h2.as_mut()?;
        if tx.is_closed() {
            self.h2 = None;
            return None;
        }
        *used = Instant::now();
        Some(tx.clone())
    }

    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.h2.is_none() && self.h2_opening.is_none()
    }
}

/// What a call does for an origin that speaks HTTP/2 only (h2c).
pub(crate) enum H2Checkout {
    /// Its open connection.
    Ready(H2),
    /// Another call is opening one: wait for it (the wait ends when that
    /// call has put it in the pool, or failed).
    Wait(tokio::sync::watch::Receiver<()>),
    /// Open one; the others wait until the gate is dropped.
    Open(Gate),
}

/// Held by the call opening an origin's HTTP/2 connection.
pub(crate) struct Gate {
    pool: Pool,
    key: Key,
    _open: tokio::sync::watch::Sender<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut slots = self.pool.shared.lock();
        if let Some(slot) = slots.map.get_mut(&self.key) {
            slot.h2_opening = None;
        }
        // The sender goes with the gate: every waiter wakes.
    }
}

/// The pool; clones share it.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    slots: Mutex<Slots>,
    idle_timeout: Option<Duration>,
    max_idle: usize,
}

#[derive(Default)]
struct Slots {
    map: HashMap<Key, Slot, BuildHasherDefault<Fnv>>,
    sweeping: bool,
}

/// FNV-1a: the map is looked up on every request, with keys of a few
/// bytes that no client chooses (a chain's own links), so a hasher built
/// against flooding (std's SipHash) is cost without benefit here.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Pool {
    /// A pool that keeps at most `max_idle` idle HTTP/1 connections per
    /// origin (0: none) for at most `idle_timeout` each.
    pub(crate) fn new(idle_timeout: Option<Duration>, max_idle: usize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                slots: Mutex::new(Slots::default()),
                idle_timeout,
                max_idle,
            }),
        }
    }

    /// Whether connections are kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.shared.max_idle > 0
    }

    /// The origin's HTTP/2 connection, if it has one that is open.
    pub(crate) fn h2(&self, key: &Key) -> Option<H2> {
        let mut slots = self.shared.lock();
        slots.map.get_mut(key)?.open_h2()
    }

    /// The origin's HTTP/2 connection, a wait for the one another call is
    /// opening, or the gate to open it.
    pub(crate) fn h2_checkout(&self, key: &Key) -> H2Checkout {
        let mut slots = self.shared.lock();
        let slot = slots.map.entry(key.clone()).or_default();
        if let Some(tx) = slot.open_h2() {
            return H2Checkout::Ready(tx);
        }
        if let Some(rx) = &slot.h2_opening {
            return H2Checkout::Wait(rx.clone());
        }
        let (open, rx) = tokio::sync::watch::channel(());
        slot.h2_opening = Some(rx);
        H2Checkout::Open(Gate {
            pool: self.clone(),
            key: key.clone(),
            _open: open,
        })
    }

    /// The newest idle HTTP/1 connection of the origin that is neither
    /// closed nor past the idle timeout. It may not be ready yet (its last
    /// answer has just been read); the caller waits for that.
    pub(crate) fn h1(&self, key: &Key) -> Option<Idle> {
        let mut slots = self.shared.lock();
        let slot = slots.map.get_mut(key)?;
        while let Some(idle) = slot.idle.pop() {
            if self.shared.expired(idle.since) {
                // Every one below it has been idle longer.
                slot.idle.clear();
                return None;
            }
            if !idle.tx.is_closed() {
                return Some(idle);
            }
        }
        None
    }

    /// Puts back connections taken but found busy, as the oldest, keeping
    /// their idle time (so they expire as if never taken).
    pub(crate) fn put_back(&self, key: &Key, busy: Vec<Idle>) {
        if busy.is_empty() {
            return;
        }
        let mut slots = self.shared.lock();
        let slot = slots.map.entry(key.clone()).or_default();
        slot.idle.splice(0..0, busy.into_iter().rev());
        self.sweep_later(&mut slots);
    }

    /// Keeps `tx` as the origin's HTTP/2 connection, in place of any other.
    pub(crate) fn put_h2(&self, key: Key, tx: H2) {
        if !self.enabled() {
            return;
        }
        let mut slots = self.shared.lock();
        slots.map.entry(key).or_default().h2 = Some((tx, Instant::now()));
        self.sweep_later(&mut slots);
    }

    /// Gives an HTTP/1 connection back once its answer has been read.
    pub(crate) fn put_h1(&self, key: Key, tx: H1) {
        if !self.enabled() || tx.is_closed() {
            return;
        }
        let mut slots = self.shared.lock();
        let slot = slots.map.entry(key).or_default();
        if slot.idle.len() >= self.shared.max_idle {
            slot.idle.remove(0);
        }
        slot.idle.push(Idle {
            tx,
            since: Instant::now(),
        });
        self.sweep_later(&mut slots);
    }

    /// Starts the sweeper if none runs and there is an idle timeout.
    fn sweep_later(&self, slots: &mut Slots) {
        let Some(period) = self.shared.idle_timeout else {
            return;
        };
        if slots.sweeping {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        slots.sweeping = true;
        let weak = Arc::downgrade(&self.shared);
        rt.spawn(sweeper(weak, Instant::now(), period));
    }

    /// How many connections the pool holds: idle HTTP/1 ones and HTTP/2
    /// ones.
    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        let slots = self.shared.lock();
        slots
            .map
            .values()
            .map(|s| s.idle.len() + usize::from(s.h2.is_some()))
            .sum()
    }
}

/// Closes what has been idle past the timeout, every `period` from
/// `start`, until the pool is empty or gone.
async fn sweeper(pool: Weak<Shared>, start: Instant, period: Duration) {
    let mut next = start;
    loop {
        next += period;
        tokio::time::sleep_until(next).await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        let mut slots = shared.lock();
        slots.map.retain(|_, slot| {
            slot.idle
                .retain(|i| !shared.expired(i.since) && !i.tx.is_closed());
            if slot
                .h2
                .as_ref()
                .is_some_and(|(tx, used)| shared.expired(*used) || tx.is_closed())
            {
                slot.h2 = None;
            }
            !slot.is_empty()
        });
        if slots.map.is_empty() {
            // Under the lock, so a connection put back now starts another.
            slots.sweeping = false;
            return;
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The map holds no invariant a panic could break halfway.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self, since: Instant) -> bool {
        self.idle_timeout.is_some_and(|t| since.elapsed() >= t)
    }
}

/// An HTTP/1 connection on its way back to the pool: held by the answer's
/// body until it has been read to the end. Dropped before that, the
/// connection goes with it (hyper closes a connection whose answer was
/// not read).
pub(crate) struct Checkin {
    pool: Pool,
    key: Key,
    tx: H1,
}

impl Checkin {
    pub(crate) fn new(pool: Pool, key: Key, tx: H1) -> Checkin {
        Checkin { pool, key, tx }
    }

    /// The answer was read to the end: the connection can serve another.
    pub(crate) fn done(self) {
        self.pool.put_h1(self.key, self.tx);
    }
}

#[cfg(test)]
mod tests {
    //! The pool's bookkeeping on a paused clock. Connections run over
    //! in-memory pipes: what is tested is when the pool keeps, hands out
    //! and closes them, not the bytes (the transport's tests on loopback
    //! sockets cover those).

    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, DuplexStream};

    async fn conn() -> (H1, DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        let (tx, conn) = http1::handshake(TokioIo::new(client)).await.unwrap();
        tokio::spawn(conn);
        (tx, server)
    }

    fn key(name: &'static str) -> Key {
        Key {
            authority: Authority::from_static(name),
            https: false,
            h2c: false,
        }
    }

    const FOUR_S: Duration = Duration::from_secs(4);

    /// Moves the paused clock on, and lets woken tasks run.
    async fn pass(d: Duration) {
        tokio::time::advance(d).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_handed_out_until_its_idle_timeout() {
        let pool = Pool::new(Some(FOUR_S), usize::MAX);
        let (tx, _server) = conn().await;
        pool.put_h1(key("a:1"), tx);
        assert!(pool.h1(&key("b:1")).is_none(), "another origin's");
        pass(Duration::from_millis(3_999)).await;
        let idle = pool.h1(&key("a:1")).expect("idle for 3.999 s");
        pool.put_h1(key("a:1"), idle.tx);
        pass(FOUR_S).await;
        assert!(pool.h1(&key("a:1")).is_none(), "idle for 4 s");
        assert_eq!(pool.len(), 0, "taking an expired one drops it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_newest_is_handed_out_first_and_the_oldest_dropped_past_the_bound() {
        let pool = Pool::new(Some(FOUR_S), 2);
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (tx, server) = conn().await;
            pool.put_h1(key("a:1"), tx);
            servers.push(server);
            pass(Duration::from_secs(1)).await;
        }
        assert_eq!(pool.len(), 2);
        // The first connection was dropped: hyper closes it.
        let mut byte = [0u8; 1];
        assert_eq!(servers[0].read(&mut byte).await.unwrap(), 0);
        // At 5.5 s, the second has been idle 4.5 s, the third 3.5 s.
        pass(Duration::from_millis(2_500)).await;
        assert!(pool.h1(&key("a:1")).is_some(), "the newest");
        assert!(pool.h1(&key("a:1")).is_none(), "the other had expired");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_closes_connections_nobody_came_for() {
        let pool = Pool::new(Some(FOUR_S), usize::MAX);
        let (tx, mut server) = conn().await;
        pool.put_h1(key("a:1"), tx);
        pass(Duration::from_secs(3)).await;
        assert_eq!(pool.len(), 1);
        // The sweeper runs every 4 s; by 8 s it has seen the connection
        // idle past 4 s.
        pass(Duration::from_secs(5)).await;
        assert_eq!(pool.len(), 0);
        let mut byte = [0u8; 1];
        assert_eq!(server.read(&mut byte).await.unwrap(), 0, "closed");
        // With nothing left, the sweeper has stopped; a new idle
        // connection starts another.
        let (tx, _server) = conn().await;
        pool.put_h1(key("a:1"), tx);
        pass(Duration::from_secs(9)).await;
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_put_back_keeps_its_idle_time_and_goes_last() {
        let ten_s = Duration::from_secs(10);
        let pool = Pool::new(Some(ten_s), usize::MAX);
        let (a, mut a_server) = conn().await;
        pool.put_h1(key("a:1"), a);
        pass(Duration::from_secs(1)).await;
        let (b, _b_server) = conn().await;
        pool.put_h1(key("a:1"), b);
        pass(Duration::from_secs(1)).await;
        // At 2 s: the newest (b) is busy and goes back, as the oldest.
        let b = pool.h1(&key("a:1")).unwrap();
        pool.put_back(&key("a:1"), vec![b]);
        // So a is handed out now: dropped, its server end sees it close.
        drop(pool.h1(&key("a:1")).unwrap());
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(1), a_server.read(&mut byte)).await;
        assert_eq!(read.ok().and_then(Result::ok), Some(0), "a was handed out");
        // b has been idle since 1 s, not since it was put back at 2 s.
        pass(Duration::from_millis(9_200)).await;
        assert!(pool.h1(&key("a:1")).is_none(), "idle 10.2 s");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_handed_out() {
        let pool = Pool::new(None, usize::MAX);
        let (tx, server) = conn().await;
        pool.put_h1(key("a:1"), tx);
        drop(server);
        // hyper's task reads the end of the stream and closes.
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        assert!(pool.h1(&key("a:1")).is_none());
    }

    #[tokio::test]
    async fn a_pool_without_idle_connections_keeps_none() {
        let pool = Pool::new(None, 0);
        assert!(!pool.enabled());
        let (tx, _server) = conn().await;
        pool.put_h1(key("a:1"), tx);
        assert_eq!(pool.len(), 0);
    }
}
