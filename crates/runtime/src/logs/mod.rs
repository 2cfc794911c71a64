//! Task logs, as every driver gives them: lines of a container's output with their
//! stream and time (`ContainerRuntime::logs`). The docker driver asks its engine; the
//! process driver keeps each task's stdout and stderr in size-bounded rotating files of
//! its own (`files`: written as the task prints, each line with its time; `read`: read
//! back, followed as they grow and rotate), removed with the task. The sim driver keeps
//! none.

pub(crate) mod files;
pub(crate) mod read;

use std::path::PathBuf;

pub use mycluster_core::logs::Nanos;

use crate::RuntimeError;

/// Which of a task's outputs a line was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of a task's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub stream: OutputStream,
    /// When it was written (the process driver: when its agent read it).
    pub time: Nanos,
    /// Without its end of line; lossy UTF-8.
    pub text: String,
}

/// What lines to give. Every line carries its time: whether to show it is the reader's
/// choice, not the driver's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep giving lines as they are written, until the task ends (or the receiver is
    /// dropped).
    pub follow: bool,
    /// Only the last lines (after `since`); `None`: all.
    pub tail: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<Nanos>,
}

/// Lines as they come; the channel closes when there are no more (or the driver failed:
/// its last item says why).
pub type LogLines = tokio::sync::mpsc::Receiver<Result<LogLine, RuntimeError>>;

/// Where and how much of its tasks' output the process driver keeps: per task, per
/// stream, the current file and `files - 1` rotated ones, each at most `max_bytes`, in
/// `<dir>/<task id>/stdout.log` (`.1`, `.2`, ...), `stderr.log` likewise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFiles {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub files: u32,
}

impl LogFiles {
    /// The default bound: 1 MiB × 2 files per stream.
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
    pub const DEFAULT_FILES: u32 = 2;
    /// The smallest file: room for a few lines besides the longest one kept.
    pub const MIN_MAX_BYTES: u64 = 1024;

    pub fn new(dir: impl Into<PathBuf>) -> LogFiles {
        LogFiles {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            files: Self::DEFAULT_FILES,
        }
    }

    /// Whether the bound is one the files can keep (the messages name the agent's flags).
    pub fn check(&self) -> Result<(), String> {
        if self.max_bytes < Self::MIN_MAX_BYTES {
            return Err(format!(
                "--log-max-size must be at least {} bytes",
                Self::MIN_MAX_BYTES
            ));
        }
        if !(1..=100).contains(&self.files) {
            return Err("--log-files must be between 1 and 100".into());
        }
        Ok(())
    }

    /// The directory of one task's files.
    pub(crate) fn task_dir(&self, task_id: &str) -> PathBuf {
        self.dir.join(task_id)
    }
}

/// Now, as a log line's time.
pub(crate) fn now() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The lines of `all` that `options` asks for: from `since`, the last `tail`.
pub(crate) fn select(mut all: Vec<LogLine>, options: &LogOptions) -> Vec<LogLine> {
    if let Some(since) = options.since {
        all.retain(|line| line.time >= since);
    }
    if let Some(tail) = options.tail {
        let keep = usize::try_from(tail).unwrap_or(usize::MAX);
        let drop = all.len().saturating_sub(keep);
        all.drain(..drop);
    }
    all
}
