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

use std::collections::BTreeMap;

use super::{RolloutKind, RolloutState};
use crate::service::{FailureAction, UpdateOrder};
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
    /// Tasks newly counted as failures of the rollout.
    pub failed: Vec<String>,
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

    // The manager's own judgement of tasks without a health check.
    for task in tasks {
        if task.state == TaskState::Running
            && task.healthcheck.is_none()
            && task.health != Some(crate::service::Health::Healthy)
        {
            let since = task.started_at.unwrap_or(task.updated_at) + monitor;
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

    // Failures: tasks of this rollout's template, made since it started, that failed or
    // did not become healthy in time.
    if rollout.state == RolloutState::InProgress && rollout.kind != RolloutKind::Create {
        let start_period = |t: &Task| {
            t.healthcheck
                .as_ref()
                .map_or(0, |c| c.start_period.millis())
        };
        for task in tasks {
            if !task.runs(service)
                || task.created_at < rollout.started_at
                || rollout.failed.contains(&task.id)
            {
                continue;
            }
            let why = match task.state {
                TaskState::Failed => Some(failure_reason(task)),
                TaskState::Complete if task.healthy_at.is_none() => {
                    Some("exited before it was healthy".to_string())
                }
                TaskState::Running if !up(task) => {
                    let started = task.started_at.unwrap_or(task.updated_at);
                    (now >= started + start_period(task) + monitor).then(|| {
                        format!(
                            "not healthy {} after it started{}",
                            crate::span::Span(start_period(task) + monitor),
                            task.health_message
                                .as_deref()
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        )
                    })
                }
                _ => None,
            };
            if let Some(why) = why {
                plan.failed.push(task.id.clone());
                let total = rollout.failed.len() + plan.failed.len();
                let allowed = policy.max_failure_ratio.0 * f64::from(spec.replicas.max(1));
                if total as f64 > allowed && plan.verdict == Verdict::Unchanged {
                    let reason = format!(
                        "replica {} of version {} failed: {why}",
                        task.slot, service.version
                    );
                    plan.verdict = match (policy.failure_action, rollout.kind, rollout.from) {
                        (
                            FailureAction::Rollback,
                            RolloutKind::Update | RolloutKind::Restart,
                            Some(_),
                        ) => Verdict::Rollback(reason),
                        (FailureAction::Continue, _, _) => Verdict::Unchanged,
                        _ => Verdict::Pause(reason),
                    };
                }
            }
        }
    }

    let settled = matches!(plan.verdict, Verdict::Pause(_) | Verdict::Rollback(_));
    if !rollout.state.is_moving() || settled {
        return plan;
    }
    if outdated.is_empty() && in_flight == 0 {
        if rollout.state == RolloutState::InProgress {
            plan.verdict = Verdict::Completed;
        }
        return plan;
    }

    // The next slots, within the batch, the live-task bound and the delay.
    let batch = policy.batch(spec.replicas);
    let mut room = batch.saturating_sub(in_flight);
    if policy.order == UpdateOrder::StartFirst {
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
        match policy.order {
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

fn failure_reason(task: &Task) -> String {
    task.error
        .clone()
        .filter(|e| !e.is_empty())
        .or_else(|| task.exit_code.map(|c| format!("exited with code {c}")))
        .unwrap_or_else(|| "failed".into())
}
