//! Printing that never panics.
//!
//! `println!` and `eprintln!` panic when their stream is closed (`| head`,
//! a reader that went away). A command-line tool stops writing quietly
//! instead: once a stream reports a broken pipe, later writes to it are
//! dropped, and the exit status is the one the command would have had.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// Which standard stream.
#[derive(Clone, Copy)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    fn gone(self) -> &'static AtomicBool {
        match self {
            Stream::Out => &STDOUT_GONE,
            Stream::Err => &STDERR_GONE,
        }
    }

    /// Whether the reader of this stream has gone away.
    pub fn is_gone(self) -> bool {
        self.gone().load(Ordering::Relaxed)
    }

    /// Notes a write error; a broken pipe silences the stream for good.
    pub fn note(self, e: &io::Error) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            self.gone().store(true, Ordering::Relaxed);
        }
    }

    /// Writes `args`; errors are dropped (see [`Stream::note`]).
    pub fn write_fmt(self, args: fmt::Arguments<'_>) {
        if self.is_gone() {
            return;
        }
        let result = match self {
            Stream::Out => {
                let mut out = io::stdout().lock();
                out.write_fmt(args).and_then(|()| out.flush())
            }
            Stream::Err => io::stderr().lock().write_fmt(args),
        };
        if let Err(e) = result {
            self.note(&e);
        }
    }
}

/// `println!` that never panics.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::print::Stream::Out.write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::print::Stream::Err.write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::print::Stream::Err.write_fmt(format_args!($($arg)*))
    };
}

pub(crate) use {err, errln, outln};
