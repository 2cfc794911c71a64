//! Reading the process driver's log files back: the lines of every file of both streams
//! in the order they were written, then — when following — what is written next, as the
//! writers say they wrote it, across rotations (a follower keeps reading the file it has
//! open after it was renamed, to its end, before it opens the new one).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::files::{path, Progress};
use super::{select, LogLine, LogLines, LogOptions, OutputStream};
use crate::RuntimeError;

/// How often a follower looks at its files even when no writer said it wrote: a
/// backstop, not the way lines are found.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// The lines of the task whose files are in `dir`, as `options` asks; `progress` is what
/// its writers say (see `files`).
pub(crate) fn read(
    dir: PathBuf,
    files: u32,
    progress: watch::Receiver<Progress>,
    options: LogOptions,
) -> LogLines {
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = give(dir, files, progress, options, &sender).await {
            let _ = sender.send(Err(e)).await;
        }
    });
    receiver
}

/// Closed when the receiver went away: nothing more to do.
struct Gone;

async fn give(
    dir: PathBuf,
    files: u32,
    mut progress: watch::Receiver<Progress>,
    options: LogOptions,
    sender: &mpsc::Sender<Result<LogLine, RuntimeError>>,
) -> Result<(), RuntimeError> {
    let cannot = |e: std::io::Error| {
        RuntimeError::Engine(format!("cannot read the logs in {}: {e}", dir.display()))
    };
    // Taken before reading: whatever is written after shows as a change.
    let mut seen = *progress.borrow_and_update();
    let mut streams = [
        Follower::open(&dir, files, OutputStream::Stdout).map_err(cannot)?,
        Follower::open(&dir, files, OutputStream::Stderr).map_err(cannot)?,
    ];
    let mut all = Vec::new();
    for follower in &mut streams {
        all.extend(follower.history().map_err(cannot)?);
    }
    all.sort_by_key(|line| line.time);
    if send(sender, select(all, &options)).await.is_err() || !options.follow {
        return Ok(());
    }
    let since = LogOptions {
        since: options.since,
        ..LogOptions::default()
    };
    loop {
        let mut new = Vec::new();
        for follower in &mut streams {
            new.extend(follower.next_lines().map_err(cannot)?);
        }
        new.sort_by_key(|line| line.time);
        if send(sender, select(new, &since)).await.is_err() {
            return Ok(());
        }
        // Every stream closed before this round read: all was read.
        if seen.open == 0 {
            return Ok(());
        }
        tokio::select! {
            changed = progress.changed() => if changed.is_err() {
                // The writers and the task are gone: one last round.
                seen.open = 0;
                continue;
            },
            _ = sender.closed() => return Ok(()),
            _ = tokio::time::sleep(LOOK_AGAIN) => {}
        }
        seen = *progress.borrow_and_update();
    }
}

async fn send(
    sender: &mpsc::Sender<Result<LogLine, RuntimeError>>,
    lines: Vec<LogLine>,
) -> Result<(), Gone> {
    for line in lines {
        sender.send(Ok(line)).await.map_err(|_| Gone)?;
    }
    Ok(())
}

/// One stream's current file, read up to where it was read.
struct Follower {
    stream: OutputStream,
    dir: PathBuf,
    /// How many files the stream keeps (the current one and the rotated ones).
    files: u32,
    path: PathBuf,
    file: Option<File>,
    /// The end of a line still being written.
    partial: Vec<u8>,
}

impl Follower {
    fn open(dir: &Path, files: u32, stream: OutputStream) -> std::io::Result<Follower> {
        let path = path(dir, stream, 0);
        Ok(Follower {
            stream,
            dir: dir.to_path_buf(),
            files,
            file: open_if_there(&path)?,
            path,
            partial: Vec::new(),
        })
    }

    /// Every line kept: the rotated files, oldest first, then the current one.
    fn history(&mut self) -> std::io::Result<Vec<LogLine>> {
        let open = self.open_inode()?;
        let mut lines = Vec::new();
        for (ino, mut file) in self.rotated()? {
            // Rotated since it was opened: read below, as the open file.
            if Some(ino) == open {
                continue;
            }
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            lines.extend(parse(self.stream, &mut bytes));
        }
        lines.extend(self.drain()?);
        Ok(lines)
    }

    /// What was written since the last call: the rest of the open file and, if it was
    /// rotated meanwhile, the files written after it (more than one when the writer
    /// rotated more than once between two looks), then the new current one.
    fn next_lines(&mut self) -> std::io::Result<Vec<LogLine>> {
        let mut lines = self.drain()?;
        let current = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(meta.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let open = self.open_inode()?;
        if current.is_none() || current == open {
            return Ok(lines);
        }
        // Rotated: what the writer added to the open file after the read above and
        // before it rotated is still in it (its handle reads the renamed file).
        lines.extend(self.drain()?);
        let rotated = self.rotated()?;
        // The files newer than the one that was open: all of them if it is gone (the
        // writer went round more often than the files it keeps: those lines are lost).
        let newer = match rotated.iter().position(|(ino, _)| Some(*ino) == open) {
            Some(at) => at + 1,
            None if open.is_none() => rotated.len(),
            None => 0,
        };
        for (_, mut file) in rotated.into_iter().skip(newer) {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            lines.extend(parse(self.stream, &mut bytes));
        }
        self.file = open_if_there(&self.path)?;
        self.partial.clear();
        lines.extend(self.drain()?);
        Ok(lines)
    }

    /// The rotated files there are now, oldest first, with their inodes.
    fn rotated(&self) -> std::io::Result<Vec<(u64, File)>> {
        let mut out = Vec::new();
        for n in (1..self.files).rev() {
            if let Some(file) = open_if_there(&path(&self.dir, self.stream, n))? {
                out.push((file.metadata()?.ino(), file));
            }
        }
        Ok(out)
    }

    fn open_inode(&self) -> std::io::Result<Option<u64>> {
        match &self.file {
            Some(file) => Ok(Some(file.metadata()?.ino())),
            None => Ok(None),
        }
    }

    fn drain(&mut self) -> std::io::Result<Vec<LogLine>> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        file.read_to_end(&mut self.partial)?;
        Ok(parse(self.stream, &mut self.partial))
    }
}

fn open_if_there(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The whole lines of `bytes` (`<nanoseconds> <text>`), leaving an unfinished one in it.
fn parse(stream: OutputStream, bytes: &mut Vec<u8>) -> Vec<LogLine> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(end) = bytes[start..].iter().position(|b| *b == b'\n') {
        let line = &bytes[start..start + end];
        start += end + 1;
        let Some(space) = line.iter().position(|b| *b == b' ') else {
            continue;
        };
        let Some(time) = std::str::from_utf8(&line[..space])
            .ok()
            .and_then(|t| t.parse().ok())
        else {
            continue;
        };
        lines.push(LogLine {
            stream,
            time,
            text: String::from_utf8_lossy(&line[space + 1..]).into_owned(),
        });
    }
    bytes.drain(..start);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_are_read_and_the_rest_kept() {
        let mut bytes = b"1 one\n2 two words\n3 unfini".to_vec();
        let lines = parse(OutputStream::Stdout, &mut bytes);
        assert_eq!(
            lines
                .iter()
                .map(|l| (l.time, l.text.as_str()))
                .collect::<Vec<_>>(),
            [(1, "one"), (2, "two words")]
        );
        assert_eq!(bytes, b"3 unfini");
        bytes.extend_from_slice(b"shed\n");
        assert_eq!(
            parse(OutputStream::Stdout, &mut bytes)[0].text,
            "unfinished"
        );
    }
}
