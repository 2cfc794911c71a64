//! Following a change until it is done: `service create|update|scale|rollback|restart`
//! wait (`--wait`, `--detach`) until every replica runs or, when the change started a
//! rollout, until the rollout completes — and fail, saying why, as soon as a replica
//! cannot make progress or the rollout is rolled back or paused. Batch work (restart
//! condition `on-failure` or `none`) is done once every slot completed. With `--detach=false`
//! (the default on a terminal) a progress bar shows how far it got.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;
use mycluster_client::{Client, ClientError};
use mycluster_core::progress::Progress;
use mycluster_core::rollout::{RolloutKind, RolloutState};
use mycluster_core::service::RestartCondition;
use mycluster_core::wire::RolloutDoc;

use crate::cli::{Global, WaitArgs};
use crate::output::json;

/// How a change is followed.
pub struct Follow {
    /// How long (`None`: not at all).
    wait: Option<Duration>,
    bar: Option<Bar>,
}

/// What a change is done at.
pub enum Goal {
    /// Every one of this many replicas runs — unless the change started a rollout, which
    /// is then followed instead.
    Replicas(u32),
    /// The rollout of this version completes (a create also when every replica runs).
    Rollout(u64),
}

impl Follow {
    /// From `--wait` and `--detach`: progress shown when asked (`--detach=false`), or by
    /// default on a terminal; on stderr with `--json`, which keeps stdout for the
    /// document.
    pub fn new(args: WaitArgs, global: &Global) -> anyhow::Result<Follow> {
        if !(0.0..=86_400.0).contains(&args.wait) {
            bail!("--wait must be between 0 and 86400 seconds");
        }
        let wait = Some(Duration::from_secs_f64(args.wait)).filter(|d| !d.is_zero());
        let (wait, show) = match args.detach {
            Some(true) => (None, false),
            Some(false) => (wait, true),
            None => (wait, std::io::stdout().is_terminal()),
        };
        let to_stderr = global.json;
        let redraw = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        Ok(Follow {
            bar: (show && wait.is_some()).then_some(Bar {
                to_stderr,
                redraw,
                last: String::new(),
            }),
            wait,
        })
    }

    pub fn waits(&self) -> bool {
        self.wait.is_some()
    }
}

/// What the manager says of `service` before a change: its tasks (their failures are
/// not news) and its rollout (a new one is the change's).
pub struct Before {
    known: BTreeSet<String>,
    rollout: Option<u64>,
}

impl Before {
    pub async fn read(client: &Client, service: &str, follow: &Follow) -> anyhow::Result<Before> {
        if !follow.waits() {
            return Ok(Before {
                known: BTreeSet::new(),
                rollout: None,
            });
        }
        let known = client
            .tasks(Some(service), None)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        let rollout = match client.rollout(service).await {
            Ok(r) => Some(r.version),
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Before { known, rollout })
    }

    /// What the change just made is done at: its rollout if it started one, else
    /// `replicas` running.
    pub async fn goal(
        &self,
        client: &Client,
        service: &str,
        replicas: u32,
    ) -> anyhow::Result<Goal> {
        let now = client.rollout(service).await?;
        Ok(match now.kind {
            Some(_) if Some(now.version) != self.rollout => Goal::Rollout(now.version),
            _ => Goal::Replicas(replicas),
        })
    }
}

/// Makes a change (`change`), prints its answer with `--json`, and follows it to `goal`
/// (given the answer). Returns the answer and " (3 of 3 running)" to show.
pub async fn change_and_follow<T: serde::Serialize>(
    client: &Client,
    global: &Global,
    service: &str,
    mut follow: Follow,
    goal: impl FnOnce(&T) -> Goal,
    change: impl std::future::Future<Output = Result<T, ClientError>>,
) -> anyhow::Result<(T, String)> {
    let before = Before::read(client, service, &follow).await?;
    let answer = change.await?;
    if global.json {
        json(&answer)?;
    }
    if !follow.waits() {
        return Ok((answer, String::new()));
    }
    let goal = match goal(&answer) {
        Goal::Replicas(replicas) => before.goal(client, service, replicas).await?,
        rollout => rollout,
    };
    let shown = until_done(client, service, &mut follow, &before.known, goal).await;
    if let Some(bar) = follow.bar.as_mut() {
        bar.finish();
    }
    Ok((answer, shown?))
}

/// Polls until `goal`, a failure, or the deadline.
async fn until_done(
    client: &Client,
    service: &str,
    follow: &mut Follow,
    known: &BTreeSet<String>,
    goal: Goal,
) -> anyhow::Result<String> {
    let wait = follow.wait.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    let hint = format!("`mycluster service ps {service}` shows its replicas");
    // Batch work (restart on-failure or none) is done once its slots completed.
    let restart = client
        .service(service)
        .await?
        .restart
        .map_or(RestartCondition::Any, |r| r.condition);
    let label = match restart {
        RestartCondition::Any => "running",
        _ => "running or complete",
    };
    loop {
        let tasks = client.tasks(Some(service), None).await?;
        let late = tokio::time::Instant::now() >= deadline;
        match goal {
            Goal::Replicas(wanted) => {
                let progress = Progress::with_restart(wanted, restart, &tasks, known);
                if let Some(bar) = follow.bar.as_mut() {
                    let done = progress.running.saturating_add(progress.complete);
                    bar.show(service, done, wanted, label);
                }
                if progress.is_done() {
                    return Ok(format!(" ({})", progress.summary()));
                }
                if progress.is_stuck() {
                    bail!(
                        "service {service} cannot make progress: {}; {} ({hint})",
                        progress.summary(),
                        progress.stuck.join("; ")
                    );
                }
                if late {
                    bail!(
                        "service {service}: {} after {:.0}s ({hint}; --wait SECONDS waits longer)",
                        progress.summary(),
                        wait.as_secs_f64()
                    );
                }
            }
            Goal::Rollout(version) => {
                // Read after the tasks: a failure they show is already in the record.
                let rollout = client.rollout(service).await?;
                let progress = Progress::with_restart(rollout.total, restart, &tasks, known);
                if let Some(bar) = follow.bar.as_mut() {
                    let state = format!("updated, {}", rollout.state.as_str());
                    bar.show(service, rollout.updated, rollout.total, &state);
                }
                if let Some(done) = settled(service, version, &rollout, &progress)? {
                    return Ok(done);
                }
                if late {
                    bail!(
                        "service {service}: the {} to version {version} is still in progress after {:.0}s, {}/{} updated (`mycluster service rollout {service}` shows it; --wait SECONDS waits longer)",
                        what(rollout.kind),
                        wait.as_secs_f64(),
                        rollout.updated,
                        rollout.total
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the rollout of `version` is over: `Some(" (4/4 updated)")` when it
/// completed (or, for a create, every replica runs); an error when it was rolled back,
/// paused, superseded, or a created service cannot make progress.
fn settled(
    service: &str,
    version: u64,
    rollout: &RolloutDoc,
    progress: &Progress,
) -> anyhow::Result<Option<String>> {
    let what = what(rollout.kind);
    let because = rollout.reason.as_deref().unwrap_or("no reason given");
    if rollout.version != version {
        // An automatic rollback is a version of its own, after ours (and after any scale
        // made meanwhile); it says why, and if it failed too, that it is paused.
        let automatic = rollout.kind == Some(RolloutKind::Rollback)
            && rollout.version > version
            && matches!(
                rollout.state,
                RolloutState::RolledBack | RolloutState::Paused
            );
        if automatic {
            bail!("version {version} of {service} was rolled back: {because}");
        }
        bail!(
            "the change of {service} to version {version} was superseded by version {} (a {}); `mycluster service rollout {service}` shows it",
            rollout.version,
            what
        );
    }
    match rollout.state {
        // Batch work that finished says so ("3/3 complete").
        RolloutState::Completed if progress.complete > 0 && progress.is_done() => {
            Ok(Some(format!(" ({})", progress.summary())))
        }
        RolloutState::Completed => Ok(Some(format!(
            " ({}/{} updated)",
            rollout.updated, rollout.total
        ))),
        RolloutState::Paused => bail!("{what} of {service} paused: {because}"),
        RolloutState::RolledBack => bail!("{what} of {service} rolled back: {because}"),
        RolloutState::InProgress if rollout.kind == Some(RolloutKind::Create) => {
            // A create's new tasks are not failures of a rollout (there is nothing to
            // roll back to): its replicas say how it goes.
            if progress.is_done() {
                return Ok(Some(format!(" ({})", progress.summary())));
            }
            if progress.is_stuck() {
                bail!(
                    "service {service} cannot make progress: {}; {} (`mycluster service ps {service}` shows its replicas)",
                    progress.summary(),
                    progress.stuck.join("; ")
                );
            }
            Ok(None)
        }
        RolloutState::InProgress => Ok(None),
    }
}

/// A rollout's kind, for people.
pub fn what(kind: Option<RolloutKind>) -> &'static str {
    match kind {
        Some(RolloutKind::Create) => "create",
        Some(RolloutKind::Update) | None => "update",
        Some(RolloutKind::Rollback) => "rollback",
        Some(RolloutKind::Restart) => "restart",
    }
}

/// The progress bar: `web: [=====>    ] 2/4 updated, in_progress`.
struct Bar {
    to_stderr: bool,
    /// Redrawn in place (a terminal), else a line per change.
    redraw: bool,
    last: String,
}

impl Bar {
    fn show(&mut self, service: &str, done: u32, total: u32, what: &str) {
        let line = bar_line(service, done, total, what);
        if line == self.last {
            return;
        }
        let text = if self.redraw {
            format!("\r\x1b[K{line}")
        } else {
            format!("{line}\n")
        };
        self.last = line;
        self.write(&text);
    }

    fn finish(&mut self) {
        if self.redraw && !self.last.is_empty() {
            self.write("\n");
        }
    }

    // A progress line that cannot be written (a closed pipe) is not worth failing for.
    fn write(&self, text: &str) {
        if self.to_stderr {
            let mut err = std::io::stderr();
            let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
        } else {
            let mut out = std::io::stdout();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        }
    }
}

/// `web: [=====>    ] 2/4 updated, in_progress` (20 columns of bar).
pub fn bar_line(service: &str, done: u32, total: u32, what: &str) -> String {
    const WIDTH: usize = 20;
    let filled = match total {
        0 => WIDTH,
        t => (done.min(t) as usize * WIDTH) / t as usize,
    };
    let mut bar = "=".repeat(filled);
    if filled < WIDTH {
        bar.push('>');
        bar.push_str(&" ".repeat(WIDTH - filled - 1));
    }
    format!("{service}: [{bar}] {done}/{total} {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_slots_done() {
        assert_eq!(
            bar_line("web", 2, 4, "updated, in_progress"),
            "web: [==========>         ] 2/4 updated, in_progress"
        );
        assert_eq!(
            bar_line("web", 4, 4, "running"),
            "web: [====================] 4/4 running"
        );
        assert_eq!(
            bar_line("web", 0, 0, "running"),
            "web: [====================] 0/0 running"
        );
    }

    fn rollout(version: u64, kind: RolloutKind, state: RolloutState) -> RolloutDoc {
        RolloutDoc {
            service: "web".into(),
            version,
            from_version: Some(version - 1),
            kind: Some(kind),
            state,
            updated: 1,
            total: 2,
            failures: 1,
            reason: Some("replica 1 of version 3 failed: exited with code 1".into()),
            started_at: 0.0,
            updated_at: 0.0,
        }
    }

    #[test]
    fn a_rolled_back_or_paused_rollout_fails_saying_why() {
        let progress = Progress::of(2, &[], &BTreeSet::new());
        let back = rollout(4, RolloutKind::Rollback, RolloutState::RolledBack);
        let err = settled("web", 3, &back, &progress).expect_err("rolled back");
        assert_eq!(
            err.to_string(),
            "version 3 of web was rolled back: replica 1 of version 3 failed: exited with code 1"
        );
        let paused = rollout(3, RolloutKind::Update, RolloutState::Paused);
        let err = settled("web", 3, &paused, &progress).expect_err("paused");
        assert!(
            err.to_string().starts_with("update of web paused: "),
            "{err}"
        );
        let other = rollout(5, RolloutKind::Update, RolloutState::InProgress);
        let err = settled("web", 3, &other, &progress).expect_err("superseded");
        assert!(err.to_string().contains("superseded by version 5"), "{err}");
        let done = rollout(3, RolloutKind::Restart, RolloutState::Completed);
        assert_eq!(
            settled("web", 3, &done, &progress).expect("done"),
            Some(" (1/2 updated)".into())
        );
        let going = rollout(3, RolloutKind::Update, RolloutState::InProgress);
        assert_eq!(settled("web", 3, &going, &progress).expect("going"), None);
    }
}
