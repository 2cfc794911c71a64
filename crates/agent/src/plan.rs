//! The agent's decision, as a pure function: given the tasks the manager assigned to this
//! worker and the containers the runtime has, what to start, what to remove, and what to
//! report. Level-triggered: it looks only at the two lists (and the health checks' latest
//! verdicts), so a pass that was missed or failed is repaired by the next.
//!
//! Health: a verdict that differs from the health the manager holds is reported, with the
//! task still running. A container found unhealthy is removed like a crashed one; once it
//! is gone the task is reported failed, `error: "unhealthy: <why>"`, and the manager
//! replaces it with its crash backoff. One with ports may be in the route table: it is
//! first reported running and unhealthy, which takes it out (the table routes healthy
//! replicas only), and removed once the manager holds that, after the deregister delay
//! (as a task the manager stops), so no ingress sends it a connection while it stops.
//!
//! Stops: how each container is stopped is decided here too (see `stop`).
//!
//! Where a task is reached: the sync pass adds the address and ports to every `running`
//! report (the plan only decides to report). A running task with ports whose address the
//! manager lacks is reported again at every pass until this agent announced its
//! container: reported it running with its address (see [`announces`]). So a restarted
//! agent fills in what its predecessor did not send, and an address the runtime could
//! not tell once is asked for again rather than never.

use std::collections::{BTreeMap, BTreeSet};

use mycluster_core::service::Health;
use mycluster_core::wire::{DesiredState, TaskDoc, TaskReport, TaskState};
use mycluster_runtime::{Container, ContainerState};

pub use crate::stop::Stop;
use crate::verdict::Verdict;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a container for this task, then report it running (or failed).
    Start(Box<TaskDoc>),
    /// Stop and remove this container; `report` says the task was shut down.
    Remove {
        container: Container,
        report: Option<String>,
        stop: Stop,
    },
}

/// What to do now, and what to tell the manager (before the actions' own reports).
/// `verdicts` are the health checks' latest, by task id; `announced`, the containers this
/// agent reported running (with where they are reached) since it started.
pub fn plan(
    wanted: &[TaskDoc],
    containers: &[Container],
    verdicts: &BTreeMap<String, Verdict>,
    announced: &BTreeSet<String>,
) -> (Vec<Action>, Vec<TaskReport>) {
    let by_task: BTreeMap<&str, &Container> =
        containers.iter().map(|c| (c.task_id.as_str(), c)).collect();
    let wanted_ids: BTreeSet<&str> = wanted.iter().map(|t| t.id.as_str()).collect();
    let mut actions = Vec::new();
    let mut reports = Vec::new();

    for task in wanted {
        let container = by_task.get(task.id.as_str()).copied();
        if task.desired_state != DesiredState::Running {
            match container {
                Some(container) => actions.push(Action::Remove {
                    container: container.clone(),
                    report: Some(task.id.clone()),
                    stop: Stop::unwanted(task, container),
                }),
                None => reports.push(report(task, TaskState::Shutdown, None)),
            }
            continue;
        }
        // The verdict on this very container, if its health is checked.
        let verdict = verdicts.get(&task.id);
        let on_this = verdict.filter(|v| container.is_some_and(|c| c.id == v.container_id));
        let unhealthy = verdict.filter(|v| v.health == Health::Unhealthy);
        match container.map(|c| &c.state) {
            Some(ContainerState::Running) => {
                let Some(container) = container else { continue };
                // The manager lacks where it is reached, and no report of ours said it.
                let unreached = task.address.is_none()
                    && !task.ports.is_empty()
                    && !announced.contains(&container.id);
                match on_this {
                    // Without ports in no route table: replaced like a crashed container,
                    // removed first, reported failed once gone (below), so no second
                    // report races the removal.
                    Some(v) if v.health == Health::Unhealthy && task.ports.is_empty() => actions
                        .push(Action::Remove {
                            container: container.clone(),
                            report: None,
                            stop: Stop::of(task),
                        }),
                    // Out of the route table now that the manager holds it unhealthy:
                    // stopped once every ingress heard, then reported failed (below).
                    Some(v)
                        if v.health == Health::Unhealthy
                            && task.state == TaskState::Running
                            && task.health == Some(Health::Unhealthy) =>
                    {
                        actions.push(Action::Remove {
                            container: container.clone(),
                            report: None,
                            stop: Stop::deregistered(task),
                        })
                    }
                    // News for the manager: a change of health (unhealthy above all: said
                    // before the stop, it takes the replica out of the route table), or
                    // where it is reached, not yet announced.
                    Some(v)
                        if v.health == Health::Unhealthy
                            || task.state != TaskState::Running
                            || task.health != Some(v.health)
                            || unreached =>
                    {
                        let mut r = report(task, TaskState::Running, None);
                        r.container_id = Some(container.id.clone());
                        r.health = Some(v.health);
                        r.health_message = v.message.clone();
                        reports.push(r);
                    }
                    Some(_) => {}
                    None if task.state != TaskState::Running || unreached => {
                        let mut r = report(task, TaskState::Running, None);
                        r.container_id = Some(container.id.clone());
                        reports.push(r);
                    }
                    None => {}
                }
            }
            // Ended while being removed as unhealthy: that is the news, not its exit.
            Some(ContainerState::Exited { code, .. })
                if on_this.is_some_and(|v| v.health == Health::Unhealthy) =>
            {
                if let Some(v) = on_this {
                    if task.state != TaskState::Failed {
                        let mut r = unhealthy_report(task, v);
                        r.exit_code = Some(*code);
                        reports.push(r);
                    }
                }
            }
            Some(ContainerState::Exited { code, error }) => {
                let state = if *code == 0 && error.is_none() {
                    TaskState::Complete
                } else {
                    TaskState::Failed
                };
                let mut r = report(task, state, error.clone());
                r.exit_code = Some(*code);
                r.container_id = container.map(|c| c.id.clone());
                reports.push(r);
            }
            // Created but never started (a start cut short): begin again from scratch.
            Some(ContainerState::Created) => {
                if let Some(container) = container {
                    actions.push(Action::Remove {
                        container: container.clone(),
                        report: None,
                        stop: Stop::of(task),
                    });
                }
            }
            // Removed as unhealthy: now it is reported failed, and why.
            None if unhealthy.is_some() => {
                if let Some(v) = unhealthy {
                    if task.state != TaskState::Failed {
                        reports.push(unhealthy_report(task, v));
                    }
                }
            }
            None if task.state == TaskState::Running => reports.push(report(
                task,
                TaskState::Failed,
                Some("its container disappeared (removed, or its agent restarted)".into()),
            )),
            // Ended (failed, complete...): the manager replaces it; never started again.
            None if task.state.is_terminal() => {}
            None => actions.push(Action::Start(Box::new(task.clone()))),
        }
    }

    // Ours, but no longer assigned here: a finished, lost or forgotten task's container.
    for container in containers {
        if !wanted_ids.contains(container.task_id.as_str()) {
            actions.push(Action::Remove {
                container: container.clone(),
                report: None,
                stop: Stop::default(),
            });
        }
    }
    (actions, reports)
}

/// Whether an accepted report `r` about `task` announced its container: said it runs
/// and, for a task with ports, where it is reached. Until one did, the plan reports the
/// task again at every pass (and the sync pass asks the runtime for the address again).
pub fn announces(r: &TaskReport, task: Option<&TaskDoc>) -> bool {
    r.state == TaskState::Running
        && r.container_id.is_some()
        && (r.address.is_some() || task.is_none_or(|t| t.ports.is_empty()))
}

/// A task failed because its health check found it unhealthy.
fn unhealthy_report(task: &TaskDoc, verdict: &Verdict) -> TaskReport {
    let why = verdict
        .message
        .as_deref()
        .unwrap_or("its health check failed");
    let mut r = report(task, TaskState::Failed, Some(format!("unhealthy: {why}")));
    r.container_id = Some(verdict.container_id.clone());
    r.health = Some(Health::Unhealthy);
    r.health_message = verdict.message.clone();
    r
}

pub fn report(task: &TaskDoc, state: TaskState, error: Option<String>) -> TaskReport {
    TaskReport {
        error,
        ..TaskReport::new(task.id.clone(), state)
    }
}

#[cfg(test)]
mod tests;
