//! The default transport's connection pool: keep-alive connections kept
//! per origin (scheme, host and port, and h2c apart from HTTP/1; a Unix
//! socket's apart from the host's).
//!
//! - HTTP/1: idle connections, newest first. A connection comes back when
//!   its answer's body has been read to the end (the body hands it back,
//!   so no task waits per answer); one that is closed, not ready, or idle
//!   for longer than the idle timeout is dropped when it is taken, so
//!   nothing runs per connection while it sits idle. hyper's connection
//!   task reads an idle connection, so a server's `FIN` closes it and the
//!   check at checkout sees that without a system call of its own.
//! - HTTP/2: connections shared by streams, up to a number of streams
//!   each; a call opens another connection only when every open one
//!   carries that many. One that closes or refused a request (a `GOAWAY`)
//!   leaves the pool.
//! - One sweeper task per pool, and only while something is idle, closes
//!   connections idle past the idle timeout that no request came to take.
//!
//! There is no race between checkout and connect: a call takes an idle
//! connection if there is one, and connects otherwise.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// A Unix socket's connections are its own, whatever the authority.
    pub(crate) unix: Option<Arc<std::path::Path>>,
}

pub(crate) type H1 = http1::SendRequest<RequestBody>;
pub(crate) type H2 = http2::SendRequest<RequestBody>;

/// An idle HTTP/1 connection, since when it has been idle, and when it
/// was opened.
pub(crate) struct Idle {
    pub(crate) tx: H1,
    since: Instant,
    pub(crate) born: Instant,
}

/// An HTTP/2 connection of the pool.
struct H2Conn {
    tx: H2,
    /// When it was opened.
    born: Instant,
    /// When a stream last started on it.
    used: Instant,
    /// Its streams in flight, counted by their [`Stream`]s.
    streams: Arc<AtomicUsize>,
}

/// A stream's place on an HTTP/2 connection, held until its answer has
/// been read (or dropped), so that the pool knows how busy the connection
/// is.
pub(crate) struct Stream(Arc<AtomicUsize>);

impl Stream {
    fn on(streams: &Arc<AtomicUsize>) -> Stream {
        streams.fetch_add(1, Ordering::Relaxed);
        Stream(streams.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Slot {
    /// Oldest first; taken from the end.
    idle: Vec<Idle>,
    h2: Vec<H2Conn>,
    /// A call is opening the origin's HTTP/2 connection; the others wait
    /// for it rather than each open one.
    h2_opening: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Slot {
    /// An open HTTP/2 connection with room for another stream (marked used
    /// now), and the stream's place on it; closed ones are dropped.
    fn open_h2(&mut self, shared: &Shared) -> Option<(H2, Stream)> {
        if self.h2.is_empty() {
            return None;
        }
        // One past the age bound leaves the pool; its streams in flight
        // hold it open until they end.
        self.h2
            .retain(|c| !c.tx.is_closed() && !shared.aged(c.born));
        let max_streams = shared.max_streams;
        let conn = self
            .h2
            .iter_mut()
            .find(|c| c.streams.load(Ordering::Relaxed) < max_streams)?;
        conn.used = Instant::now();
        Some((conn.tx.clone(), Stream::on(&conn.streams)))
    }

    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.h2.is_empty() && self.h2_opening.is_none()
    }
}

/// What a call does for an origin that speaks HTTP/2 only (h2c).
pub(crate) enum H2Checkout {
    /// An open connection with room, and the stream's place on it.
    Ready(H2, Stream),
    /// Another call is opening one: wait for it. The wait ends when that
    /// call has put it in the pool (`true`: check out again) or failed.
    Wait(tokio::sync::watch::Receiver<bool>),
    /// Open one; the others wait until the gate is dropped.
    Open(Gate),
}

/// Held by the call opening an origin's HTTP/2 connection.
pub(crate) struct Gate {
    pool: Pool,
    key: Key,
    open: tokio::sync::watch::Sender<bool>,
    /// The slot no longer waits on this gate: another may have taken its
    /// place, so it must not be cleared again.
    closed: bool,
}

impl Gate {
    /// The connection is in the pool: the waiters check out again.
    pub(crate) fn opened(mut self) {
        // Closed first, so that a waiter who finds the new connection full
        // already opens the next rather than waits here again.
        self.close();
        let _ = self.open.send(true);
    }

    fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let mut slots = self.pool.shared.lock();
        if let Some(slot) = slots.map.get_mut(&self.key) {
            slot.h2_opening = None;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
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
    max_streams: usize,
    max_age: Option<Duration>,
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
    /// origin (0: none) for at most `idle_timeout` each, puts at most
    /// `max_streams` streams at once on an HTTP/2 connection, and gives
    /// no new request to a connection `max_age` old (`None`: any age).
    pub(crate) fn new(
        idle_timeout: Option<Duration>,
        max_idle: usize,
        max_streams: usize,
        max_age: Option<Duration>,
    ) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                slots: Mutex::new(Slots::default()),
                idle_timeout,
                max_idle,
                max_streams: max_streams.max(1),
                max_age,
            }),
        }
    }

    /// Whether connections are kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.shared.max_idle > 0
    }

    /// An open HTTP/2 connection of the origin with room for a stream, if
    /// it has one.
    pub(crate) fn h2(&self, key: &Key) -> Option<(H2, Stream)> {
        let mut slots = self.shared.lock();
        slots.map.get_mut(key)?.open_h2(&self.shared)
    }

    /// The origin's HTTP/2 connection, a wait for the one another call is
    /// opening, or the gate to open it.
    pub(crate) fn h2_checkout(&self, key: &Key) -> H2Checkout {
        let mut slots = self.shared.lock();
        let slot = slots.map.entry(key.clone()).or_default();
        if let Some((tx, stream)) = slot.open_h2(&self.shared) {
            return H2Checkout::Ready(tx, stream);
        }
        if let Some(rx) = &slot.h2_opening {
            return H2Checkout::Wait(rx.clone());
        }
        let (open, rx) = tokio::sync::watch::channel(false);
        slot.h2_opening = Some(rx);
        H2Checkout::Open(Gate {
            pool: self.clone(),
            key: key.clone(),
            open,
            closed: false,
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
            if !idle.tx.is_closed() && !self.shared.aged(idle.born) {
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

    /// Adds `tx`, a new HTTP/2 connection, to the origin's; gives back the
    /// place of the stream its opener sends on it.
    pub(crate) fn put_h2(&self, key: Key, tx: H2) -> Stream {
        let streams = Arc::new(AtomicUsize::new(0));
        let stream = Stream::on(&streams);
        if !self.enabled() {
            return stream;
        }
        let mut slots = self.shared.lock();
        slots.map.entry(key).or_default().h2.push(H2Conn {
            tx,
            born: Instant::now(),
            used: Instant::now(),
            streams,
        });
        self.sweep_later(&mut slots);
        stream
    }

    /// Takes the connection `stream` is on out of the pool: it refused a
    /// request (a `GOAWAY`), so no other should be sent on it.
    pub(crate) fn forget_h2(&self, key: &Key, stream: &Stream) {
        let mut slots = self.shared.lock();
        if let Some(slot) = slots.map.get_mut(key) {
            slot.h2.retain(|c| !Arc::ptr_eq(&c.streams, &stream.0));
        }
    }

    /// Gives an HTTP/1 connection (opened at `born`) back once its answer
    /// has been read; one past the age bound closes instead.
    pub(crate) fn put_h1(&self, key: Key, tx: H1, born: Instant) {
        if !self.enabled() || tx.is_closed() || self.shared.aged(born) {
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
            born,
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
        slots.map.values().map(|s| s.idle.len() + s.h2.len()).sum()
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
                .retain(|i| !shared.expired(i.since) && !shared.aged(i.born) && !i.tx.is_closed());
            // A connection with streams in flight is in use, however long
            // ago they started.
            slot.h2.retain(|c| {
                let busy = c.streams.load(Ordering::Relaxed) > 0;
                !c.tx.is_closed() && !shared.aged(c.born) && (busy || !shared.expired(c.used))
            });
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

    /// Past the age bound: it takes no new request.
    fn aged(&self, born: Instant) -> bool {
        self.max_age.is_some_and(|t| born.elapsed() >= t)
    }
}

/// What an answer's body gives back at its end: held until the body has
/// been read to the end.
pub(crate) enum Checkin {
    /// An HTTP/1 connection on its way back to the pool. Dropped before
    /// the end, the connection goes with it (hyper closes a connection
    /// whose answer was not read).
    H1 {
        pool: Pool,
        key: Key,
        tx: H1,
        born: Instant,
    },
    /// A stream's place on an HTTP/2 connection, freed either way.
    H2(Stream),
}

impl Checkin {
    /// The answer was read to the end: the connection can serve another.
    pub(crate) fn done(self) {
        match self {
            Checkin::H1 {
                pool,
                key,
                tx,
                born,
            } => pool.put_h1(key, tx, born),
            Checkin::H2(stream) => drop(stream),
        }
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
            unix: None,
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
        let pool = Pool::new(Some(FOUR_S), usize::MAX, 100, None);
        let (tx, _server) = conn().await;
        pool.put_h1(key("a:1"), tx, Instant::now());
        assert!(pool.h1(&key("b:1")).is_none(), "another origin's");
        pass(Duration::from_millis(3_999)).await;
        let idle = pool.h1(&key("a:1")).expect("idle for 3.999 s");
        pool.put_h1(key("a:1"), idle.tx, idle.born);
        pass(FOUR_S).await;
        assert!(pool.h1(&key("a:1")).is_none(), "idle for 4 s");
        assert_eq!(pool.len(), 0, "taking an expired one drops it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_newest_is_handed_out_first_and_the_oldest_dropped_past_the_bound() {
        let pool = Pool::new(Some(FOUR_S), 2, 100, None);
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (tx, server) = conn().await;
            pool.put_h1(key("a:1"), tx, Instant::now());
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
        let pool = Pool::new(Some(FOUR_S), usize::MAX, 100, None);
        let (tx, mut server) = conn().await;
        pool.put_h1(key("a:1"), tx, Instant::now());
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
        pool.put_h1(key("a:1"), tx, Instant::now());
        pass(Duration::from_secs(9)).await;
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_put_back_keeps_its_idle_time_and_goes_last() {
        let ten_s = Duration::from_secs(10);
        let pool = Pool::new(Some(ten_s), usize::MAX, 100, None);
        let (a, mut a_server) = conn().await;
        pool.put_h1(key("a:1"), a, Instant::now());
        pass(Duration::from_secs(1)).await;
        let (b, _b_server) = conn().await;
        pool.put_h1(key("a:1"), b, Instant::now());
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
        let pool = Pool::new(None, usize::MAX, 100, None);
        let (tx, server) = conn().await;
        pool.put_h1(key("a:1"), tx, Instant::now());
        drop(server);
        // hyper's task reads the end of the stream and closes.
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        assert!(pool.h1(&key("a:1")).is_none());
    }

    /// An HTTP/2 connection whose server end is never read: enough for
    /// the pool's bookkeeping, which never sends on it.
    async fn h2_conn() -> (H2, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (tx, conn) =
            http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        (tx, server)
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_takes_streams_up_to_its_bound_then_another_is_opened() {
        let pool = Pool::new(Some(FOUR_S), usize::MAX, 2, None);
        let (tx, _server) = h2_conn().await;
        let first = pool.put_h2(key("a:1"), tx);
        let second = pool
            .h2(&key("a:1"))
            .map(|(_, s)| s)
            .expect("room for a second stream");
        assert!(pool.h2(&key("a:1")).is_none(), "two streams: full");
        // A second connection takes the next streams.
        let (tx, _server2) = h2_conn().await;
        let third = pool.put_h2(key("a:1"), tx);
        let fourth = pool
            .h2(&key("a:1"))
            .map(|(_, s)| s)
            .expect("room on the second");
        assert!(pool.h2(&key("a:1")).is_none());
        assert_eq!(pool.len(), 2);
        // A stream that ends frees its place.
        drop(second);
        let again = pool.h2(&key("a:1")).map(|(_, s)| s).expect("a freed place");
        assert!(pool.h2(&key("a:1")).is_none());
        // A connection forgotten after a GOAWAY takes no more streams,
        // even once its streams end.
        pool.forget_h2(&key("a:1"), &third);
        drop((third, fourth));
        assert_eq!(pool.len(), 1);
        assert!(pool.h2(&key("a:1")).is_none(), "the first is still full");
        drop(first);
        assert!(pool.h2(&key("a:1")).is_some());
        drop(again);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_with_a_stream_in_flight_outlives_the_idle_timeout() {
        let pool = Pool::new(Some(FOUR_S), usize::MAX, 100, None);
        let (tx, _server) = h2_conn().await;
        let stream = pool.put_h2(key("a:1"), tx);
        pass(Duration::from_secs(9)).await;
        assert_eq!(pool.len(), 1, "a long stream keeps its connection pooled");
        drop(stream);
        pass(Duration::from_secs(4)).await;
        assert_eq!(pool.len(), 0, "idle past the timeout once the stream ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_past_its_age_takes_no_new_request() {
        let age = Duration::from_secs(300);
        let pool = Pool::new(None, usize::MAX, 100, Some(age));
        let (tx, mut server) = conn().await;
        let born = Instant::now();
        pool.put_h1(key("a:1"), tx, born);
        pass(Duration::from_secs(299)).await;
        let idle = pool.h1(&key("a:1")).expect("299 s old");
        pool.put_h1(key("a:1"), idle.tx, idle.born);
        pass(Duration::from_secs(1)).await;
        assert!(pool.h1(&key("a:1")).is_none(), "300 s old");
        let mut byte = [0u8; 1];
        assert_eq!(server.read(&mut byte).await.unwrap(), 0, "closed");
        // Given back past its age (its answer was long), it is closed.
        let (tx, mut server) = conn().await;
        pool.put_h1(key("a:1"), tx, Instant::now() - age);
        assert_eq!(pool.len(), 0);
        assert_eq!(server.read(&mut byte).await.unwrap(), 0, "closed");
        // HTTP/2: no new stream on an aged connection; its own stream goes
        // on (it holds the connection).
        let (tx, _server) = h2_conn().await;
        let stream = pool.put_h2(key("a:1"), tx);
        pass(Duration::from_secs(299)).await;
        let second = pool.h2(&key("a:1")).expect("299 s old");
        pass(Duration::from_secs(1)).await;
        assert!(pool.h2(&key("a:1")).is_none(), "300 s old");
        assert_eq!(pool.len(), 0);
        drop((stream, second));
    }

    #[tokio::test]
    async fn a_pool_without_idle_connections_keeps_none() {
        let pool = Pool::new(None, 0, 100, None);
        assert!(!pool.enabled());
        let (tx, _server) = conn().await;
        pool.put_h1(key("a:1"), tx, Instant::now());
        assert_eq!(pool.len(), 0);
    }
}
