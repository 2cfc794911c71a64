//! `mycluster events`: the manager's event stream (`GET /api/v1/events`), one line per
//! event in a readable form, or the raw JSON lines (`--json`). With `-f` it keeps
//! following and, when the connection breaks, resumes after the last index it printed
//! (saying so once on stderr), so nothing is missed or printed twice; a manager that no
//! longer holds the events after that index (410) ends it with the manager's words.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use mycluster_background::{LoopControl, StepFuture};
use mycluster_client::{Client, ClientError, EventQuery};
use mycluster_core::events::Event;
use mycluster_core::rollout::RolloutKind;
use mycluster_core::wire::{EventDoc, Topic};
use tokio_util::sync::CancellationToken;

use crate::cli::Global;

#[derive(Args, Clone, Debug)]
#[command(
    after_help = "Each event has an index: `--index N` prints those after N, so a \
script that stopped resumes with the last index it printed. A manager keeps a bounded \
history (--event-history, 10000 events by default) from its own start: an index older than \
that is refused (HTTP 410) with the index to follow from after reading the state again.\n\n\
Topics and the events they carry: service (service_created, service_updated, \
service_deleted), task (task_state, task_relocated), worker (worker_status, worker_removed), \
rollout (rollout_state). Times are UTC."
)]
pub struct EventsArgs {
    /// Keep following new events as they are committed (resuming after a broken
    /// connection).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this topic: service, task, worker or rollout (repeatable, or
    /// comma-separated).
    #[arg(long = "topic", value_name = "TOPIC", value_delimiter = ',', value_parser = topic)]
    pub topics: Vec<Topic>,
    /// Only the events after this index [default: the whole history the manager holds].
    #[arg(long, value_name = "N")]
    pub index: Option<u64>,
}

fn topic(name: &str) -> Result<Topic, String> {
    Topic::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
        format!("unknown topic '{name}': one of {}", known.join(", "))
    })
}

/// The first wait before following again after a broken connection, doubled up to
/// `RESUME_CAP` while the manager cannot be reached.
const RESUME: Duration = Duration::from_millis(250);
const RESUME_CAP: Duration = Duration::from_secs(5);

pub async fn run(global: &Global, args: EventsArgs) -> anyhow::Result<()> {
    let client = crate::remote::client(global)?;
    let mut reader = Reader {
        client,
        query: EventQuery {
            index: args.index,
            topics: args.topics,
            follow: args.follow,
        },
        json: global.json,
        told: false,
        fatal: None,
    };
    if !args.follow {
        return match reader.once().await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    // Nothing stops it but the user (Ctrl-C) or an answer that must end it.
    let stop = CancellationToken::new();
    mycluster_background::Loop::new("events", RESUME, stop)
        .max_backoff(RESUME_CAP)
        .quiet_recovery()
        .run_with(&mut reader, |reader| -> StepFuture<'_> {
            Box::pin(reader.follow_step())
        })
        .await;
    match reader.fatal.take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

struct Reader {
    client: Client,
    /// Its `index` is the last index printed, once one was.
    query: EventQuery,
    json: bool,
    /// Whether the user was told that the connection broke (once is enough).
    told: bool,
    /// An answer that ends the following (410, a refused token, a bad request).
    fatal: Option<ClientError>,
}

impl Reader {
    /// Prints what one connection gives, until it ends; how many events it printed.
    async fn once(&mut self) -> Result<usize, ClientError> {
        let mut stream = self.client.events(&self.query).await?;
        let mut printed = 0;
        while let Some((event, line)) = stream.next_line().await? {
            self.print(&event, &line);
            self.query.index = Some(event.index);
            printed += 1;
        }
        Ok(printed)
    }

    /// One connection of `-f`: a connection that breaks (or a manager that stops) is
    /// followed again after the last index printed; a refusal ends the loop.
    async fn follow_step(&mut self) -> Result<LoopControl, String> {
        let (printed, broke) = match self.once().await {
            Ok(printed) => (printed, "the manager ended the stream".to_string()),
            Err(ClientError::Unreachable { url, reason }) => {
                (0, format!("cannot reach the manager at {url}: {reason}"))
            }
            Err(e) => {
                self.fatal = Some(e);
                return Ok(LoopControl::Stop);
            }
        };
        if !self.told {
            self.told = true;
            let after = match self.query.index {
                Some(index) => format!("after index {index}"),
                None => "from the start of its history".to_string(),
            };
            eprintln!("{broke}; following again {after} (retrying until it answers)");
        }
        if printed > 0 {
            // It worked for a while: the first wait again, not a longer one.
            Ok(LoopControl::After(RESUME))
        } else {
            Err(broke)
        }
    }

    fn print(&self, event: &EventDoc, line: &str) {
        let text = if self.json {
            line.to_string()
        } else {
            describe(event)
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe ends the program (SIGPIPE, as every client command).
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// `12:03:04.120 task web.2 (4f2a…) running → failed on w3: exited with code 137`.
pub fn describe(doc: &EventDoc) -> String {
    format!(
        "{} {} {}",
        time_of_day(doc.time),
        doc.topic.as_str(),
        what(&doc.event)
    )
}

/// The UTC time of day, to the millisecond.
fn time_of_day(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round().max(0.0) as u64;
    let of_day = (millis / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        millis % 1000
    )
}

fn what(event: &Event) -> String {
    match event {
        Event::ServiceCreated {
            service,
            version,
            replicas,
        } => format!("{service} created: version {version}, {replicas} replicas"),
        Event::ServiceUpdated {
            service,
            version,
            replicas,
            previous_replicas: Some(previous),
        } => format!("{service} scaled {previous} → {replicas} (version {version})"),
        Event::ServiceUpdated {
            service,
            version,
            replicas,
            previous_replicas: None,
        } => format!("{service} updated to version {version} ({replicas} replicas)"),
        Event::ServiceDeleted { service } => format!("{service} deleted"),
        Event::TaskState {
            task,
            service,
            slot,
            worker,
            state,
            previous,
            message,
            ..
        } => {
            let change = match previous {
                Some(previous) => format!("{} → {}", previous.as_str(), state.as_str()),
                None => format!("new, {}", state.as_str()),
            };
            let on = worker
                .as_ref()
                .map(|w| format!(" on {w}"))
                .unwrap_or_default();
            format!(
                "{service}.{slot} ({task}) {change}{on}{}",
                because(message, state.as_str())
            )
        }
        Event::TaskRelocated {
            service,
            slot,
            task,
            from,
            replacement,
            message,
        } => {
            let from = from
                .as_ref()
                .map(|w| format!(" from {w}"))
                .unwrap_or_default();
            let to = match replacement {
                Some(id) => format!(", replaced by {id}"),
                None => ", to be replaced".to_string(),
            };
            format!(
                "{service}.{slot} ({task}) relocated{from}{to}{}",
                because(message, "")
            )
        }
        Event::WorkerStatus {
            worker,
            status,
            previous: Some(previous),
        } => format!("{worker} {previous} → {status}"),
        Event::WorkerStatus {
            worker,
            status,
            previous: None,
        } => format!("{worker} registered: {status}"),
        Event::WorkerRemoved { worker } => format!("{worker} removed"),
        Event::RolloutState {
            service,
            kind,
            version,
            state,
            previous,
            reason,
        } => {
            let kind = match kind {
                RolloutKind::Create => "create",
                RolloutKind::Update => "update",
                RolloutKind::Rollback => "rollback",
                RolloutKind::Restart => "restart",
            };
            let change = match previous {
                Some(previous) => format!("{} → {}", previous.as_str(), state.as_str()),
                None => format!("started ({})", state.as_str()),
            };
            let reason = reason
                .as_deref()
                .map(|r| because(r, ""))
                .unwrap_or_default();
            format!("{service} {kind} to version {version} {change}{reason}")
        }
    }
}

/// `: <message>`, unless it says nothing more than `state`.
fn because(message: &str, state: &str) -> String {
    if message.is_empty() || message == state {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycluster_core::{DesiredState, TaskState};

    #[test]
    fn events_read_as_a_line() {
        let doc = EventDoc {
            index: 42_000_001,
            commit: 42,
            time: 1_764_160_984.12,
            topic: Topic::Task,
            event: Event::TaskState {
                task: "t-abc".into(),
                service: "web".into(),
                slot: 2,
                worker: Some("w3".into()),
                state: TaskState::Failed,
                previous: Some(TaskState::Running),
                desired: DesiredState::Running,
                message: "exited with code 137".into(),
                exit_code: Some(137),
            },
        };
        assert_eq!(
            describe(&doc),
            "12:43:04.120 task web.2 (t-abc) running → failed on w3: exited with code 137"
        );
    }
}
