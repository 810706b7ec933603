//! Where the winner's body goes: a file (through a temporary beside it,
//! renamed into place only on success) or stdout (through a spool, so a
//! failed attempt's bytes never reach it).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fallback_chain::BodySink;
use indicatif::ProgressBar;

/// Streams into a temporary file beside the destination.
pub struct FileSink {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    progress: Option<ProgressBar>,
}

impl FileSink {
    pub fn new(dest: &Path, progress: Option<ProgressBar>) -> io::Result<FileSink> {
        Ok(FileSink {
            tmp: temp_beside(dest)?,
            dest: dest.to_path_buf(),
            progress,
        })
    }

    fn temp_beside(&self) -> io::Result<tempfile::NamedTempFile> {
        temp_beside(&self.dest)
    }

    /// Moves the finished file into place, after `head` if given (the
    /// status line and headers of `-i`). Dropping a `FileSink` without
    /// calling this deletes the temporary.
    pub fn commit(mut self, head: Option<&[u8]>) -> io::Result<()> {
        let done = match head {
            None => self.tmp,
            Some(head) => {
                // The head is known only once the body has streamed in.
                let mut with_head = self.temp_beside()?;
                with_head.as_file_mut().write_all(head)?;
                let body = self.tmp.as_file_mut();
                body.seek(SeekFrom::Start(0))?;
                io::copy(body, with_head.as_file_mut())?;
                with_head
            }
        };
        done.as_file().sync_all()?;
        done.persist(&self.dest).map_err(|e| e.error)?;
        Ok(())
    }
}

impl BodySink for FileSink {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.tmp.as_file_mut().write_all(&chunk)?;
        if let Some(p) = &self.progress {
            p.inc(chunk.len() as u64);
        }
        Ok(())
    }

    async fn reset(&mut self) -> io::Result<()> {
        let f = self.tmp.as_file_mut();
        f.set_len(0)?;
        f.seek(SeekFrom::Start(0))?;
        if let Some(p) = &self.progress {
            p.set_position(0);
        }
        Ok(())
    }
}

/// A temporary file in `dest`'s folder, so that renaming it into place is
/// atomic.
fn temp_beside(dest: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".part");
    // Like any new file (0666 less the umask), not tempfile's private 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

const SPOOL_IN_MEMORY: usize = 8 * 1024 * 1024;

/// Holds a body in memory, spilling to an anonymous temporary file past
/// 8 MiB, until the call has succeeded.
#[derive(Default)]
pub struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    progress: Option<ProgressBar>,
}

impl Spool {
    pub fn new(progress: Option<ProgressBar>) -> Spool {
        Spool {
            progress,
            ..Spool::default()
        }
    }

    /// Copies everything held to `out`.
    pub fn copy_to(mut self, out: &mut impl Write) -> io::Result<()> {
        match &mut self.file {
            Some(f) => {
                f.seek(SeekFrom::Start(0))?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                }
            }
            None => out.write_all(&self.mem)?,
        }
        out.flush()
    }
}

impl BodySink for Spool {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if let Some(p) = &self.progress {
            p.inc(chunk.len() as u64);
        }
        if let Some(f) = &mut self.file {
            return f.write_all(&chunk);
        }
        if self.mem.len() + chunk.len() <= SPOOL_IN_MEMORY {
            self.mem.extend_from_slice(&chunk);
            return Ok(());
        }
        let mut f = tempfile::tempfile()?;
        f.write_all(&self.mem)?;
        f.write_all(&chunk)?;
        self.mem = Vec::new();
        self.file = Some(f);
        Ok(())
    }

    async fn reset(&mut self) -> io::Result<()> {
        self.mem.clear();
        self.file = None;
        if let Some(p) = &self.progress {
            p.set_position(0);
        }
        Ok(())
    }
}
