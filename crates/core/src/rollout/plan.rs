//! The rollout planner: given a service and its tasks now, which slots get a new task,
//! which old tasks stop, which new tasks failed, and where the rollout stands. Pure and
//! level-triggered (it reads only the tasks as they are), so `reconcile` runs it on every
//! pass; `tests/rollouts.rs` checks its invariants under random failures, scaling and
//! superseding updates.
//!
//! The rules, for a service of `replicas` slots and a batch of `parallelism`:
//! - A slot is *done* when it has an active task of the current template that is up
//!   (running and healthy). Its older tasks are then stopped.
//! - At most `parallelism` slots are *in flight* (not done, and not simply still running
//!   an old task) at once; a new slot starts only when one is done, and `delay` after the
//!   last slot became healthy.
//! - start-first: a slot's new task starts beside the old one, and the old one stops once
//!   the new one is healthy; live tasks never exceed `replicas + parallelism`.
//! - stop-first: the old task stops first (reconcile starts the new one once it is gone).
//! - A new task that fails, or is not healthy within its start period + `monitor`, is a
//!   failure; past `max_failure_ratio` of the replicas the failure action applies.

use std::collections::{BTreeMap, BTreeSet};

use super::{RolloutKind, RolloutState};
use crate::service::{FailureAction, UpdateOrder};
use crate::span::Span;
use crate::{Millis, Service, Task, TaskState};

/// A task to stop, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMove {
    pub task: String,
    pub why: String,
}

/// Where the rollout goes from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes (under way, or already settled).
    Unchanged,
    /// Every slot runs the version, healthy.
    Completed,
    /// Failures passed the ratio: keep what runs.
    Pause(String),
    /// Failures passed the ratio: roll the version it replaced out again.
    Rollback(String),
}

/// What `plan` decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Slots that get a task of the current template now, beside their old one.
    pub start: Vec<u32>,
    /// Tasks to stop.
    pub stop: Vec<SlotMove>,
    /// Tasks newly counted as failures of the rollout, with their slots.
    pub failed: Vec<(String, u32)>,
    pub verdict: Verdict,
    /// Tasks without a health check that have run for the policy's `monitor`: healthy
    /// since the time given.
    pub healthy: Vec<(String, Millis)>,
    /// Slots done (for the rollout's `updated`), of `replicas`.
    pub done: u32,
}

/// Plans the next moves of `service`'s rollout. `tasks` are all of its tasks.
pub fn plan(service: &Service, tasks: &[&Task], now: Millis) -> Plan {
    let spec = &service.spec;
    let policy = spec.update;
    let monitor = policy.monitor.millis();
    let mut plan = Plan {
        start: Vec::new(),
        stop: Vec::new(),
        failed: Vec::new(),
        verdict: Verdict::Unchanged,
        healthy: Vec::new(),
        done: 0,
    };

    // The manager's own judgement of tasks without a health check: running for
    // `monitor`, and no exit reported for one agent pass more (an agent notices an exit
    // at its next pass: without that margin a task that died just before its monitor
    // ran out would count as healthy, and its slot's old task be stopped).
    for task in tasks {
        if task.state == TaskState::Running
            && task.healthcheck.is_none()
            && task.health != Some(crate::service::Health::Healthy)
        {
            let since = healthy_due(task, monitor);
            if now >= since {
                plan.healthy.push((task.id.clone(), since));
            }
        }
    }
    let up = |task: &Task| {
        task.is_active()
            && task.state == TaskState::Running
            && (task.is_healthy() || plan.healthy.iter().any(|(id, _)| *id == task.id))
    };

    // The active tasks of each wanted slot.
    let mut slots: BTreeMap<u32, Vec<&Task>> =
        (0..spec.replicas).map(|s| (s, Vec::new())).collect();
    for task in tasks.iter().filter(|t| t.is_active()) {
        if let Some(group) = slots.get_mut(&task.slot) {
            group.push(task);
        }
    }
    let live = tasks.iter().filter(|t| t.is_live()).count() as u64;
    // The latest finished task of each slot: a slot its restart policy leaves done (a
    // batch job's replica that completed) is done for the rollout too.
    let mut latest: BTreeMap<u32, &Task> = BTreeMap::new();
    for task in tasks.iter().filter(|t| t.state.is_terminal()) {
        let entry = latest.entry(task.slot).or_insert(task);
        if (task.updated_at, task.created_at) > (entry.updated_at, entry.created_at) {
            *entry = task;
        }
    }

    let mut in_flight = 0u32;
    let mut outdated: Vec<(u32, &Vec<&Task>)> = Vec::new();
    for (&slot, group) in &slots {
        let done = group.iter().any(|t| t.runs(service) && up(t));
        if done {
            plan.done += 1;
            for old in group.iter().filter(|t| !t.runs(service)) {
                plan.stop.push(SlotMove {
                    task: old.id.clone(),
                    why: format!("replaced by version {} of the service", service.version),
                });
            }
            continue;
        }
        // Two old versions serving one slot (a rollback or a superseding update met a
        // slot mid-way): one of them is enough until the slot's turn.
        let mut old_up: Vec<&&Task> = group.iter().filter(|t| !t.runs(service) && up(t)).collect();
        old_up.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id.as_str())));
        for surplus in old_up.iter().skip(1) {
            plan.stop.push(SlotMove {
                task: surplus.id.clone(),
                why: format!(
                    "another task serves slot {slot} until version {} replaces it",
                    service.version
                ),
            });
        }
        if group.is_empty()
            && crate::reconcile::finished_slot(service, latest.get(&slot).copied()).is_some()
        {
            plan.done += 1;
            continue;
        }
        let has_current = group.iter().any(|t| t.runs(service));
        if has_current || group.is_empty() {
            in_flight += 1;
            // An old task that is not up serves nothing while the slot's new one starts.
            for old in group.iter().filter(|t| !t.runs(service) && !up(t)) {
                plan.stop.push(SlotMove {
                    task: old.id.clone(),
                    why: format!("superseded by version {} of the service", service.version),
                });
            }
            continue;
        }
        // Only old tasks: one that is up is kept until its slot's turn. The others serve
        // nothing (pending, starting, not healthy), so they go now, and a slot left
        // empty gets its new task at once (reconcile).
        for old in group.iter().filter(|t| !up(t)) {
            plan.stop.push(SlotMove {
                task: old.id.clone(),
                why: format!("superseded by version {} of the service", service.version),
            });
        }
        if group.iter().any(|t| up(t)) {
            outdated.push((slot, group));
        } else {
            in_flight += 1;
        }
    }

    let Some(rollout) = &service.rollout else {
        return plan;
    };

    // Failures: tasks of this rollout's template, made since it started, that failed,
    // did not become healthy in time, or could not be placed. Counted until the rollout
    // is done (a rollback's too: a version that fails on the way back pauses it).
    if rollout.is_watching() {
        // Something serves: a new task that cannot be placed beside it is the version's
        // failure. With nothing serving (no worker at all), rolling back would not help.
        let serving = tasks.iter().any(|t| up(t));
        let mut failed_slots: BTreeSet<u32> = rollout.failed_slots.iter().copied().collect();
        for task in tasks {
            if !task.runs(service)
                || task.created_at < rollout.started_at
                || rollout.failed.contains(&task.id)
            {
                continue;
            }
            // A batch job's replica that completed did its work: not a failure.
            if task.state == TaskState::Complete
                && crate::reconcile::finished_slot(service, Some(task)).is_some()
            {
                continue;
            }
            let Some(why) = failure(task, monitor, now, up(task), serving) else {
                continue;
            };
            plan.failed.push((task.id.clone(), task.slot));
            failed_slots.insert(task.slot);
            let allowed = policy.max_failure_ratio.0 * f64::from(spec.replicas.max(1));
            if failed_slots.len() as f64 > allowed && plan.verdict == Verdict::Unchanged {
                let reason = format!(
                    "replica {} of version {} failed: {why}",
                    task.slot, service.version
                );
                plan.verdict = match (policy.failure_action, rollout.kind, rollout.state) {
                    // A rollback that fails too stops where it is.
                    (_, _, RolloutState::RolledBack) => {
                        Verdict::Pause(format!("the rollback failed too: {reason}"))
                    }
                    (FailureAction::Continue, _, _) => Verdict::Unchanged,
                    (FailureAction::Rollback, RolloutKind::Update | RolloutKind::Restart, _)
                        if rollout.base.is_some() || rollout.from.is_some() =>
                    {
                        Verdict::Rollback(reason)
                    }
                    _ => Verdict::Pause(reason),
                };
            }
        }
    }

    let settled = matches!(plan.verdict, Verdict::Pause(_) | Verdict::Rollback(_));
    if !rollout.state.is_moving() || settled {
        return plan;
    }
    if outdated.is_empty() && in_flight == 0 {
        if rollout.completed_at.is_none() {
            plan.verdict = Verdict::Completed;
        }
        return plan;
    }

    // The next slots, within the batch, the live-task bound and the delay.
    let batch = policy.batch(spec.replicas);
    let mut room = batch.saturating_sub(in_flight);
    if spec.replace_order() == UpdateOrder::StartFirst {
        let bound = u64::from(spec.replicas) + u64::from(batch);
        room = room.min(bound.saturating_sub(live) as u32);
    }
    let last_up = tasks
        .iter()
        .filter(|t| t.runs(service) && t.created_at >= rollout.started_at)
        .filter_map(|t| t.healthy_at)
        .max();
    if last_up.is_some_and(|at| now < at + policy.delay.millis()) {
        room = 0;
    }
    for (slot, group) in outdated.into_iter().take(room as usize) {
        match spec.replace_order() {
            UpdateOrder::StartFirst => plan.start.push(slot),
            UpdateOrder::StopFirst => {
                for old in group.iter().filter(|t| up(t)) {
                    plan.stop.push(SlotMove {
                        task: old.id.clone(),
                        why: format!(
                            "replaced by version {} of the service (stop-first)",
                            service.version
                        ),
                    });
                }
            }
        }
    }
    plan
}

/// Why a task of a rollout counts as a failure, if it does: it failed, exited before it
/// was healthy, is not healthy within its start period + `monitor` (for a task with a
/// check, at least one probe interval + timeout), or no worker can take it for `monitor`
/// while others of the service serve.
fn failure(task: &Task, monitor: Millis, now: Millis, up: bool, serving: bool) -> Option<String> {
    match task.state {
        TaskState::Failed => Some(failure_reason(task)),
        TaskState::Complete if task.healthy_at.is_none() => {
            Some("exited before it was healthy".to_string())
        }
        TaskState::Running if !up => {
            let (start_period, probe) = task.healthcheck.as_ref().map_or((0, 0), |c| {
                (
                    c.start_period.millis(),
                    c.interval.millis() + c.timeout.millis(),
                )
            });
            // Never before a task without a check could be judged healthy, and with the
            // same margin for a probe's result to be reported.
            let allowed = start_period + monitor.max(probe) + REPORT_LAG;
            let started = task.started_at.unwrap_or(task.updated_at);
            (now >= started + allowed).then(|| {
                format!(
                    "not healthy {} after it started{}",
                    Span(allowed),
                    task.health_message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
        }
        // The scheduler's own words for a task it cannot place.
        TaskState::Pending
            if serving
                && crate::schedule::is_unplaceable(&task.message)
                && now >= task.created_at + monitor =>
        {
            Some(task.message.clone())
        }
        _ => None,
    }
}

/// How long an agent may take to report what it saw: its sync pass runs every second.
pub const REPORT_LAG: Millis = 1_000;

/// When a running task without a health check counts as healthy.
pub fn healthy_due(task: &Task, monitor: Millis) -> Millis {
    task.started_at.unwrap_or(task.updated_at) + monitor + REPORT_LAG
}

fn failure_reason(task: &Task) -> String {
    task.error
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| task.exit_code.map(|c| format!("exited with code {c}")))
        .unwrap_or_else(|| "failed".into())
}
