//! A request body that streams as it arrives while a copy is kept, so it
//! can be sent again: in memory up to a bound, then in a temporary file up
//! to another, under a bound on what all such bodies keep on disk at once.
//!
//! Every attempt reads through its own [`Reader`]: first what the copy
//! holds, then on from the stream, adding to the copy as it goes. The first
//! attempt therefore sends each byte as soon as it arrives (nothing waits
//! for the buffer to fill, so a full-duplex exchange works), and a later
//! attempt replays the copy and then continues from the stream. Once a
//! byte could not be kept (a bound was reached), the copy is dropped: the
//! attempt reading goes on, and no other may start.
//!
//! Temporary files are made unlinked (`O_TMPFILE` on Linux, else created
//! with mode 0600 and unlinked at once), so no other user can open them
//! and nothing is left behind, even by a crash; the file is gone when its
//! body is.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

use crate::transport::BoxError;

/// Where a streamed request body is kept so that it can be sent again
/// ([`Body::replayable`](crate::Body::replayable)).
///
/// | setting | default |
/// | --- | --- |
/// | [`memory`](Self::memory) | 1 MiB |
/// | [`disk`](Self::disk) (per body, beyond the memory) | 64 MiB |
/// | [`disk_total`](Self::disk_total) (every body made with this buffer or its clones, at once) | 1 GiB |
/// | [`temp_dir`](Self::temp_dir) | [`std::env::temp_dir`] |
///
/// Clones share the count of what is on disk, so one buffer given to every
/// request bounds them together. A body that outgrows its bounds streams
/// on (nothing is lost for the attempt reading it) but can no longer be
/// sent again; [`Body::not_replayable_because`](crate::Body::not_replayable_because)
/// says why.
///
/// ```
/// use fallback_chain::ReplayBuffer;
/// let buffer = ReplayBuffer::new().memory(256 * 1024).disk(16 << 20);
/// assert_eq!(buffer.disk_in_use(), 0);
/// # buffer.validate().unwrap();
/// ```
#[derive(Clone)]
#[must_use]
pub struct ReplayBuffer {
    memory: u64,
    disk: u64,
    disk_total: u64,
    temp_dir: Option<PathBuf>,
    on_disk: Arc<AtomicU64>,
}

impl Default for ReplayBuffer {
    fn default() -> Self {
        ReplayBuffer {
            memory: 1024 * 1024,
            disk: 64 * 1024 * 1024,
            disk_total: 1024 * 1024 * 1024,
            temp_dir: None,
            on_disk: Arc::default(),
        }
    }
}

impl fmt::Debug for ReplayBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBuffer")
            .field("memory", &self.memory)
            .field("disk", &self.disk)
            .field("disk_total", &self.disk_total)
            .field("temp_dir", &self.temp_dir)
            .field("disk_in_use", &self.disk_in_use())
            .finish()
    }
}

impl ReplayBuffer {
    /// The defaults (see the table above).
    pub fn new() -> ReplayBuffer {
        ReplayBuffer::default()
    }

    /// Bytes of each body kept in memory. Default: 1 MiB.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// Bytes of each body kept on disk beyond the memory; 0 keeps nothing
    /// on disk. Default: 64 MiB.
    pub fn disk(mut self, bytes: u64) -> Self {
        self.disk = bytes;
        self
    }

    /// Bytes kept on disk at once by every body of this buffer and its
    /// clones; a body that would go over it is not kept whole. Default:
    /// 1 GiB.
    pub fn disk_total(mut self, bytes: u64) -> Self {
        self.disk_total = bytes;
        self
    }

    /// The directory of the temporary files. Default: the system's
    /// ([`std::env::temp_dir`]).
    pub fn temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// Bytes on disk now, for every body of this buffer and its clones.
    pub fn disk_in_use(&self) -> u64 {
        self.on_disk.load(Ordering::Relaxed)
    }

    /// Checks that the temporary files can be made: when the buffer keeps
    /// anything on disk, its directory must exist and take a file.
    pub fn validate(&self) -> Result<(), crate::BuildError> {
        if self.disk == 0 || self.disk_total == 0 {
            return Ok(());
        }
        let dir = self.dir();
        let fail = |reason: String| crate::BuildError::Setting {
            setting: "temp_dir",
            reason: format!("{}: {reason}", dir.display()),
        };
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(fail("not a directory".into())),
            Err(e) => return Err(fail(e.to_string())),
        }
        tempfile::tempfile_in(&dir)
            .map(drop)
            .map_err(|e| fail(format!("cannot make a temporary file there: {e}")))
    }

    fn dir(&self) -> PathBuf {
        self.temp_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// The stream, the copy, and every reader's way to wait on the stream.
pub(crate) struct Tee {
    state: Mutex<State>,
    buffer: ReplayBuffer,
    /// Wakes every reader waiting on the stream: the one that polled it
    /// may be an attempt that has ended.
    waiters: Arc<Waiters>,
}

struct State {
    source: Option<UnsyncBoxBody<Bytes, BoxError>>,
    /// Bytes taken from the stream so far.
    taken: u64,
    /// The copy: `memory` first, then `file`; whole while `gap` is `None`.
    memory: Vec<Bytes>,
    memory_len: u64,
    file: Option<File>,
    file_len: u64,
    /// Bytes of `file_len` counted in the buffer's disk total.
    reserved: u64,
    /// Why the copy is not whole; it is dropped then.
    gap: Option<String>,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// The stream's error: every reader that reaches it gets it, and the
    /// body is spent (what came before it is not the whole body).
    failed: Option<String>,
    /// The call is over (an attempt won, or none will follow): nothing
    /// more is kept once the last reader is the one reading on.
    settled: bool,
    /// Readers alive now.
    readers: usize,
}

#[derive(Default)]
struct Waiters(Mutex<Vec<Waker>>);

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}

impl Tee {
    pub(crate) fn new<B>(body: B, buffer: &ReplayBuffer) -> Tee
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Tee {
            state: Mutex::new(State {
                source: Some(body.map_err(Into::into).boxed_unsync()),
                taken: 0,
                memory: Vec::new(),
                memory_len: 0,
                file: None,
                file_len: 0,
                reserved: 0,
                gap: None,
                trailers: None,
                ended: false,
                failed: None,
                settled: false,
                readers: 0,
            }),
            buffer: buffer.clone(),
            waiters: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the body cannot be sent again, once a reader has gone past
    /// what was kept.
    pub(crate) fn gap(&self) -> Option<String> {
        let s = self.state();
        s.gap.clone().or_else(|| {
            s.failed.as_ref().map(|e| {
                format!("the request body could not be read whole ({e}): it cannot be sent again")
            })
        })
    }

    /// Whether the body can no longer be sent again: an attempt has read
    /// bytes that were not kept, or the stream failed.
    pub(crate) fn is_spent(&self) -> bool {
        let s = self.state();
        (s.gap.is_some() && s.taken > 0) || s.failed.is_some()
    }

    /// The call is over: no attempt will start again, so once the reader
    /// still reading is the only one, the copy is freed and nothing more
    /// is kept (a long full-duplex stream holds no memory or disk for it).
    pub(crate) fn settle(&self) {
        let mut s = self.state();
        s.settled = true;
        if s.readers == 0 {
            self.free(&mut s);
        }
    }

    /// A reader from the first byte, for one attempt.
    pub(crate) fn reader(self: &Arc<Self>) -> Reader {
        self.state().readers += 1;
        Reader {
            tee: self.clone(),
            pos: 0,
            chunk: 0,
            trailers_sent: false,
        }
    }

    /// Keeps `data`, the stream's bytes from `taken - data.len()`, if the
    /// bounds allow; else drops the copy and says why.
    fn keep(&self, s: &mut State, data: &Bytes) {
        if s.gap.is_some() {
            return;
        }
        if s.settled && s.readers <= 1 {
            // Only the reader that took `data` is left, and no attempt
            // will start: nobody will read the copy again.
            self.free(s);
            return;
        }
        let len = data.len() as u64;
        let b = &self.buffer;
        if s.file.is_none() && s.memory_len + len <= b.memory {
            s.memory.push(data.clone());
            s.memory_len += len;
            return;
        }
        let why = if s.file_len + len > b.disk {
            Some(format!(
                "the request body is larger than the replay buffer ({} in memory and {} on disk): it streamed once and cannot be sent again",
                bytes(b.memory),
                bytes(b.disk)
            ))
        } else if reserve(&b.on_disk, len, b.disk_total).is_err() {
            Some(format!(
                "the replay buffer's disk total ({}) was reached: the request body streamed once and cannot be sent again",
                bytes(b.disk_total)
            ))
        } else {
            s.reserved += len;
            match write_at(s, &b.dir(), data) {
                Ok(()) => None,
                Err(e) => Some(format!(
                    "the request body could not be kept on disk ({e}): it streamed once and cannot be sent again"
                )),
            }
        };
        if let Some(why) = why {
            s.gap = Some(why);
            // A copy with a hole in it is of no use: free it now.
            self.free(s);
        }
    }

    /// Drops the copy and gives its disk back.
    fn free(&self, s: &mut State) {
        s.memory = Vec::new();
        s.memory_len = 0;
        s.file = None;
        s.file_len = 0;
        self.release(s);
    }

    fn release(&self, s: &mut State) {
        let n = std::mem::take(&mut s.reserved);
        if n > 0 {
            self.buffer.on_disk.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.release(&mut s);
    }
}

/// Adds `len` to the disk in use, unless that would go over `total`.
fn reserve(on_disk: &AtomicU64, len: u64, total: u64) -> Result<(), ()> {
    on_disk
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(len).filter(|&n| n <= total)
        })
        .map(drop)
        .map_err(drop)
}

/// Appends `data` to the body's file, made on first use.
fn write_at(s: &mut State, dir: &std::path::Path, data: &[u8]) -> io::Result<()> {
    let at = s.file_len;
    let file = match &mut s.file {
        Some(f) => f,
        None => s.file.insert(private_tempfile(dir)?),
    };
    file_write_all_at(file, data, at)?;
    s.file_len += data.len() as u64;
    Ok(())
}

/// A temporary file with no name (`O_TMPFILE` where the system has it,
/// else created and unlinked at once), readable by its owner only: an
/// `O_TMPFILE` file is made with the umask's mode, so it is set here.
fn private_tempfile(dir: &std::path::Path) -> io::Result<File> {
    let file = tempfile::tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

#[cfg(unix)]
fn file_write_all_at(f: &File, data: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, data, at)
}

#[cfg(unix)]
fn file_read_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, at)
}

#[cfg(windows)]
fn file_write_all_at(f: &File, mut data: &[u8], mut at: u64) -> io::Result<()> {
    while !data.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(f, data, at)?;
        data = &data[n..];
        at += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn file_read_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, at)
}

/// `1 MiB`, `64 KiB`, `512 bytes`.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// The size of one read from the file.
const FILE_READ: u64 = 64 * 1024;

/// One attempt's read of a replayable body: the copy, then the stream.
pub(crate) struct Reader {
    tee: Arc<Tee>,
    /// Bytes given to this attempt.
    pos: u64,
    /// The next memory chunk (reads of memory go chunk by chunk).
    chunk: usize,
    trailers_sent: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut s = self.tee.state();
        s.readers = s.readers.saturating_sub(1);
        if s.settled && s.readers == 0 {
            self.tee.free(&mut s);
        }
    }
}

impl Reader {
    /// The next piece of the copy, from memory chunk by chunk, then from
    /// the file.
    fn read_copy(&mut self, s: &State) -> Result<Frame<Bytes>, BoxError> {
        if let Some(why) = &s.gap {
            return Err(why.clone().into());
        }
        if self.pos < s.memory_len {
            let chunk = s.memory[self.chunk].clone();
            self.chunk += 1;
            self.pos += chunk.len() as u64;
            return Ok(Frame::data(chunk));
        }
        let at = self.pos - s.memory_len;
        let want = (s.file_len - at).min(FILE_READ) as usize;
        let mut buf = vec![0; want];
        let read = match &s.file {
            Some(f) => file_read_at(f, &mut buf, at),
            None => Err(io::Error::other("the kept copy is gone")),
        };
        match read {
            Ok(0) => Err("the kept copy of the request body is shorter than it was written".into()),
            Ok(n) => {
                buf.truncate(n);
                self.pos += n as u64;
                Ok(Frame::data(Bytes::from(buf)))
            }
            Err(e) => Err(format!("reading the kept copy of the request body: {e}").into()),
        }
    }

    /// At the copy's end: on from the stream, keeping what comes. Every
    /// reader waiting on it is woken when it moves, whichever polled it
    /// last.
    fn pull(
        &mut self,
        tee: &Tee,
        mut s: std::sync::MutexGuard<'_, State>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        {
            let mut waiters = tee.waiters.0.lock().unwrap_or_else(|e| e.into_inner());
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        let fan_out = Waker::from(tee.waiters.clone());
        let mut fcx = Context::from_waker(&fan_out);
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = match Pin::new(source).poll_frame(&mut fcx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                s.source = None;
                // Trailers another reader took from the stream are this
                // reader's too.
                let trailers = s.trailers.clone().filter(|_| !self.trailers_sent);
                self.trailers_sent = true;
                trailers.map(|t| Ok(Frame::trailers(t)))
            }
            Poll::Ready(Some(Err(e))) => {
                let msg = crate::transport::error_chain(&*e);
                s.failed = Some(msg.clone());
                s.source = None;
                Some(Err(msg.into()))
            }
            Poll::Ready(Some(Ok(frame))) => Some(Ok(match frame.into_data() {
                Ok(data) => {
                    s.taken += data.len() as u64;
                    tee.keep(&mut s, &data);
                    self.pos = s.taken;
                    self.chunk = s.memory.len();
                    Frame::data(data)
                }
                Err(frame) => {
                    if let Some(t) = frame.trailers_ref() {
                        s.trailers = Some(t.clone());
                        self.trailers_sent = true;
                    }
                    frame
                }
            })),
        };
        drop(s);
        // Others waiting at the copy's end can read on, or see the end.
        tee.waiters.wake_by_ref();
        Poll::Ready(polled)
    }
}

impl http_body::Body for Reader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let tee = this.tee.clone();
        let s = tee.state();
        if this.pos < s.taken {
            return Poll::Ready(Some(this.read_copy(&s)));
        }
        if let Some(e) = &s.failed {
            return Poll::Ready(Some(Err(e.clone().into())));
        }
        if s.ended {
            let trailers = s.trailers.clone().filter(|_| !this.trailers_sent);
            this.trailers_sent = true;
            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
        }
        this.pull(&tee, s, cx)
    }

    fn is_end_stream(&self) -> bool {
        let s = self.tee.state();
        s.ended && self.pos >= s.taken && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.tee.state();
        if s.failed.is_some() {
            // Its length is not known: never let a client frame a short
            // body as whole.
            return SizeHint::default();
        }
        let kept = s.taken.saturating_sub(self.pos);
        let rest = match &s.source {
            Some(src) => src.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(kept));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(kept));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Ready chunks, then the end.
    struct Parts(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Parts {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Parts {
        Parts(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    async fn read(r: Reader) -> Result<Vec<u8>, String> {
        r.collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_second_reader_replays_the_copy_from_memory_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ReplayBuffer::new().memory(4).disk(100).temp_dir(dir.path());
        let tee = Arc::new(Tee::new(chunks(&[b"ab", b"cd", b"efgh", b"ij"]), &buffer));
        assert_eq!(read(tee.reader()).await.unwrap(), b"abcdefghij");
        assert_eq!(buffer.disk_in_use(), 6, "4 bytes in memory, 6 on disk");
        assert_eq!(read(tee.reader()).await.unwrap(), b"abcdefghij");
        assert!(!tee.is_spent());
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "the file has no name"
        );
        drop(tee);
        assert_eq!(buffer.disk_in_use(), 0, "released with the body");
    }

    #[tokio::test]
    async fn past_the_bounds_the_reader_goes_on_and_no_other_may_start() {
        let buffer = ReplayBuffer::new().memory(3).disk(0);
        let tee = Arc::new(Tee::new(chunks(&[b"ab", b"cd", b"ef"]), &buffer));
        assert_eq!(read(tee.reader()).await.unwrap(), b"abcdef", "nothing lost");
        assert!(tee.is_spent());
        let why = read(tee.reader()).await.unwrap_err();
        assert!(
            why.contains("larger than the replay buffer (3 bytes in memory and 0 bytes on disk)"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn the_disk_total_is_shared_by_every_body_of_a_buffer() {
        let buffer = ReplayBuffer::new().memory(0).disk(10).disk_total(12);
        let first = Arc::new(Tee::new(chunks(&[b"0123456789"]), &buffer));
        assert_eq!(read(first.reader()).await.unwrap(), b"0123456789");
        assert_eq!(buffer.disk_in_use(), 10);
        let second = Arc::new(Tee::new(chunks(&[b"abcdef"]), &buffer));
        assert_eq!(read(second.reader()).await.unwrap(), b"abcdef");
        assert!(second
            .gap()
            .unwrap()
            .contains("disk total (12 bytes) was reached"));
        drop(first);
        assert_eq!(buffer.disk_in_use(), 0);
        let third = Arc::new(Tee::new(chunks(&[b"abcdef"]), &buffer));
        assert_eq!(read(third.reader()).await.unwrap(), b"abcdef");
        assert!(third.gap().is_none());
    }

    #[test]
    fn a_missing_temp_dir_is_named() {
        let err = ReplayBuffer::new()
            .temp_dir("/nonexistent/fallback-replay")
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/fallback-replay"),
            "{err}"
        );
        ReplayBuffer::new()
            .disk(0)
            .temp_dir("/nonexistent")
            .validate()
            .unwrap();
    }

    /// Chunks given one by one by the test; the stream may fail.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, BoxError>>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data)))
        }
    }

    #[tokio::test]
    async fn a_stream_that_fails_is_spent_and_never_framed_as_whole() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let tee = Arc::new(Tee::new(Fed(rx), &ReplayBuffer::new()));
        tx.send(Ok(Bytes::from_static(b"part"))).unwrap();
        tx.send(Err("the client went away".into())).unwrap();
        let err = read(tee.reader()).await.unwrap_err();
        assert!(err.contains("went away"), "{err}");
        assert!(tee.is_spent(), "a failed stream cannot be sent again");
        let again = tee.reader();
        assert_eq!(
            http_body::Body::size_hint(&again).upper(),
            None,
            "no length for a broken body"
        );
    }

    #[tokio::test]
    async fn once_settled_the_last_reader_keeps_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = ReplayBuffer::new()
            .memory(2)
            .disk(1 << 20)
            .temp_dir(dir.path());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let tee = Arc::new(Tee::new(Fed(rx), &buffer));
        let mut r = tee.reader();
        tx.send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tx.send(Ok(Bytes::from_static(b"cdef"))).unwrap();
        assert_eq!(r.frame().await.unwrap().unwrap().into_data().unwrap(), "ab");
        assert_eq!(
            r.frame().await.unwrap().unwrap().into_data().unwrap(),
            "cdef"
        );
        assert_eq!(buffer.disk_in_use(), 4);
        tee.settle();
        tx.send(Ok(Bytes::from_static(b"gh"))).unwrap();
        assert_eq!(r.frame().await.unwrap().unwrap().into_data().unwrap(), "gh");
        assert_eq!(buffer.disk_in_use(), 0, "the copy is freed");
        tx.send(Ok(Bytes::from_static(b"ij"))).unwrap();
        drop(tx);
        assert_eq!(r.frame().await.unwrap().unwrap().into_data().unwrap(), "ij");
        assert!(r.frame().await.is_none());
        assert_eq!(buffer.disk_in_use(), 0);
        assert!(!tee.is_spent());
    }

    #[tokio::test]
    async fn trailers_reach_every_reader() {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(map.clone())),
        ];
        struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, std::convert::Infallible>>);
        impl http_body::Body for Frames {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
                Poll::Ready(self.0.pop_front())
            }
        }
        let tee = Arc::new(Tee::new(Frames(frames.into()), &ReplayBuffer::new()));
        let (mut a, mut b) = (tee.reader(), tee.reader());
        // `a` takes the data and the trailers from the stream; `b` then
        // finds the stream's end.
        assert!(a.frame().await.unwrap().unwrap().is_data());
        assert!(a.frame().await.unwrap().unwrap().is_trailers());
        assert!(b.frame().await.unwrap().unwrap().is_data());
        let t = b.frame().await.unwrap().unwrap();
        assert_eq!(t.into_trailers().unwrap(), map);
        assert!(b.frame().await.is_none());
    }
}
