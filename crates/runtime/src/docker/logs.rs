//! A container's logs from its engine (`docker logs`): stdout and stderr demultiplexed,
//! each line with the engine's own timestamp (always asked for: a line's time is the
//! reader's to show or not). The engine takes `since` in whole seconds: the rest of it
//! is applied here.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use mycluster_core::logs::parse_rfc3339;

use super::engine::{message, status};
use crate::logs::{LogLine, LogLines, LogOptions, OutputStream};
use crate::{Container, RuntimeError};

pub(super) fn logs(docker: &Docker, container: &Container, options: &LogOptions) -> LogLines {
    let since = options.since.unwrap_or(0);
    let query = LogsOptionsBuilder::new()
        .follow(options.follow)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(i32::try_from(since / 1_000_000_000).unwrap_or(i32::MAX))
        .tail(&options.tail.map_or("all".to_string(), |n| n.to_string()))
        .build();
    let mut lines = docker.logs(&container.id, Some(query));
    let name = container.name.clone();
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = sender.closed() => return,
                next = lines.next() => next,
            };
            let line = match next {
                None => return,
                Some(Ok(output)) => match read(output) {
                    Some(line) if line.time >= since => Ok(line),
                    _ => continue,
                },
                Some(Err(e)) if status(&e) == Some(404) => Err(RuntimeError::NotFound(format!(
                    "no container {name}: {}",
                    message(&e)
                ))),
                Some(Err(e)) => Err(RuntimeError::Engine(format!(
                    "reading the logs of {name}: {}",
                    message(&e)
                ))),
            };
            let failed = line.is_err();
            if sender.send(line).await.is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// One line of the engine's: `<RFC 3339 time> <text>\n`, on the stream it came from (a
/// container with a terminal has one: its stdout).
fn read(output: LogOutput) -> Option<LogLine> {
    let (stream, bytes) = match output {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (OutputStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (OutputStream::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let (time, text) = text.split_once(' ').unwrap_or((text, ""));
    Some(LogLine {
        stream,
        time: parse_rfc3339(time)?,
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_engines_lines() {
        let line = read(LogOutput::StdErr {
            message: "2019-06-04T15:41:27.000000005Z oops: a b\n".into(),
        });
        assert_eq!(
            line,
            Some(LogLine {
                stream: OutputStream::Stderr,
                time: 1_559_662_887_000_000_005,
                text: "oops: a b".into(),
            })
        );
        let empty = read(LogOutput::StdOut {
            message: "2019-06-04T15:41:27Z\n".into(),
        });
        assert_eq!(empty.map(|l| l.text), Some(String::new()));
    }
}
