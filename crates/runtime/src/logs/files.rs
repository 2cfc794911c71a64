//! The process driver's log files: each task's stdout and stderr come to the agent
//! through pipes, and are written line by line, each with its time, into rotating files
//! (`stdout.log`, then `stdout.log.1`, ...) that never hold more than the configured
//! bound. Writing never holds the task up: a failing disk loses lines, not the task.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{now, LogFiles, Nanos, OutputStream};

/// The longest line kept (as Docker's json-file driver splits at 16 KiB); a longer one
/// is cut into lines of this size.
pub(crate) const LINE_MAX: usize = 16 * 1024;

/// What the writers of one task have done: readers wait on it to follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Lines written so far, both streams together.
    pub written: u64,
    /// Streams still open (0: the task's processes are all gone, nothing more comes).
    pub open: u8,
}

/// One task's log files. Held by the task's record and by its two writers; the last
/// one to go removes the directory: the files live as long as the task and its output.
pub(crate) struct TaskLog {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub files: u32,
    progress: watch::Sender<Progress>,
}

impl TaskLog {
    pub(crate) fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }
}

impl Drop for TaskLog {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove the logs {}: {e}", self.dir.display());
            }
        }
    }
}

/// The file of `stream` in `dir`: `stdout.log`; rotated `n` times, `stdout.log.<n>`.
pub(crate) fn path(dir: &Path, stream: OutputStream, rotated: u32) -> PathBuf {
    let name = match stream {
        OutputStream::Stdout => "stdout.log",
        OutputStream::Stderr => "stderr.log",
    };
    match rotated {
        0 => dir.join(name),
        n => dir.join(format!("{name}.{n}")),
    }
}

/// A pipe whose both ends are closed on exec (the write end is given to a task's
/// supervisor under a number of its own: see `process::spawn`).
pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened for us and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts keeping a task's output: a fresh directory, and a writer per stream reading
/// the read end of its pipe until every process of the task closed it.
pub(crate) fn capture(
    files: &LogFiles,
    task_id: &str,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> std::io::Result<Arc<TaskLog>> {
    let dir = files.task_dir(task_id);
    // A previous start of the same task that left files (its agent was killed).
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (progress, _) = watch::channel(Progress {
        written: 0,
        open: 2,
    });
    let log = Arc::new(TaskLog {
        dir,
        max_bytes: files.max_bytes,
        files: files.files,
        progress,
    });
    for (stream, fd) in [
        (OutputStream::Stdout, stdout),
        (OutputStream::Stderr, stderr),
    ] {
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
        let file = Rotating::open(&log, stream)?;
        tokio::spawn(pump(log.clone(), pipe, file));
    }
    Ok(log)
}

/// Copies one stream into its files, a line at a time, until its pipe closes.
async fn pump(log: Arc<TaskLog>, mut pipe: tokio::net::unix::pipe::Receiver, mut file: Rotating) {
    let mut buffer = vec![0u8; 8192];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let read = match pipe.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("reading the output of {}: {e}", log.dir.display());
                break;
            }
        };
        let time = now();
        partial.extend_from_slice(&buffer[..read]);
        let mut lines = 0u64;
        let mut start = 0;
        while let Some(end) = partial[start..].iter().position(|b| *b == b'\n') {
            file.write(time, &partial[start..start + end]);
            lines += 1;
            start += end + 1;
        }
        partial.drain(..start);
        // A line that does not end: kept in pieces.
        while partial.len() >= LINE_MAX {
            file.write(time, &partial[..LINE_MAX]);
            partial.drain(..LINE_MAX);
            lines += 1;
        }
        if lines > 0 {
            log.progress.send_modify(|p| p.written += lines);
        }
    }
    // The last line, when the task ended without an end of line.
    let last = !partial.is_empty();
    if last {
        file.write(now(), &partial);
    }
    log.progress.send_modify(|p| {
        p.written += u64::from(last);
        p.open = p.open.saturating_sub(1);
    });
}

/// The current file of one stream, rotated once the next line would take it past the
/// bound.
struct Rotating {
    dir: PathBuf,
    stream: OutputStream,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    files: u32,
    /// Said once: a disk that fails keeps failing.
    warned: bool,
}

impl Rotating {
    fn open(log: &TaskLog, stream: OutputStream) -> std::io::Result<Rotating> {
        let file = create(&path(&log.dir, stream, 0))?;
        Ok(Rotating {
            dir: log.dir.clone(),
            stream,
            file: Some(file),
            size: 0,
            max_bytes: log.max_bytes,
            files: log.files,
            warned: false,
        })
    }

    /// `<time in nanoseconds> <text>\n`, the text cut so that one line always fits in a
    /// file.
    fn write(&mut self, time: Nanos, text: &[u8]) {
        let room = usize::try_from(self.max_bytes / 2).unwrap_or(LINE_MAX);
        let text = &text[..text.len().min(LINE_MAX).min(room)];
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let mut line = format!("{time} ").into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            if let Err(e) = self.rotate() {
                self.warn(&e);
            }
        }
        if self.file.is_none() {
            // A rotation or a creation failed before: try again.
            self.file = create(&path(&self.dir, self.stream, 0)).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(&line) {
            Ok(()) => self.size += len,
            Err(e) => self.warn(&e),
        }
    }

    /// `.n-1` becomes `.n` (the oldest goes), ..., the current file `.1`, and a new
    /// current file starts. With one file, the current one starts again empty.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        self.size = 0;
        let current = path(&self.dir, self.stream, 0);
        if self.files > 1 {
            for n in (1..self.files - 1).rev() {
                let from = path(&self.dir, self.stream, n);
                if from.exists() {
                    std::fs::rename(&from, path(&self.dir, self.stream, n + 1))?;
                }
            }
            std::fs::rename(&current, path(&self.dir, self.stream, 1))?;
        } else {
            // Readers that follow see a new file (another inode), not a truncated one.
            std::fs::remove_file(&current)?;
        }
        self.file = Some(create(&current)?);
        Ok(())
    }

    fn warn(&mut self, e: &std::io::Error) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                "cannot write the logs in {} ({e}): lines are lost until it works again",
                self.dir.display()
            );
        }
    }
}

fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
