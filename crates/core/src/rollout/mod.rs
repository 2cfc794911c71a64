//! Rollouts: how a change of what a service's tasks run (its template) replaces them
//! without an outage. The record (`Rollout`) lives on the service; the decision of which
//! slots to replace next is `plan`, a pure function over the service and its tasks that
//! `reconcile` calls on every pass — level-triggered, so a missed event or a restarted
//! manager picks the rollout up where the tasks are.

mod plan;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reconcile::HISTORY_PER_SLOT;
use crate::{Millis, Service, ServiceSpec};

pub use plan::{healthy_due, plan, Plan, SlotMove, Verdict, REPORT_LAG};

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Slots are being replaced.
    InProgress,
    /// Every slot runs the version, healthy.
    Completed,
    /// Failures passed the policy's ratio with `failure_action: pause`: nothing more is
    /// replaced until the next update.
    Paused,
    /// Failures passed the ratio with `failure_action: rollback`: the previous version is
    /// being (or has been) rolled out again.
    RolledBack,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "in_progress",
            RolloutState::Completed => "completed",
            RolloutState::Paused => "paused",
            RolloutState::RolledBack => "rolled_back",
        }
    }

    /// Whether the rollout still replaces slots (a rolled-back one rolls the previous
    /// version out).
    pub fn is_moving(self) -> bool {
        matches!(self, RolloutState::InProgress | RolloutState::RolledBack)
    }
}

/// What started a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    /// The service was created: its first tasks start (no old ones to keep).
    Create,
    /// A new image, command, env or health check.
    Update,
    /// `mycluster service rollback`, or a failed rollout's automatic one.
    Rollback,
    /// `mycluster service restart`: the same spec, every task replaced.
    Restart,
}

/// What a rollout replaces: kept in the rollout itself, so a failed one can go back
/// even after the version left the history (every scale is a version too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub version: u64,
    pub spec: ServiceSpec,
    #[serde(default)]
    pub generation: u64,
}

/// The latest rollout of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub kind: RolloutKind,
    pub state: RolloutState,
    /// The version being rolled out.
    pub version: u64,
    /// The version it replaces (none for a create).
    pub from: Option<u64>,
    /// What it goes back to when it fails (none for a create or a rollback).
    /// (Boxed: a spec is large, and every stored service carries this.)
    #[serde(default)]
    pub base: Option<Box<Base>>,
    /// Tasks of this rollout counted as failures (each once).
    #[serde(default)]
    pub failed: Vec<String>,
    /// The slots those tasks held: the failure ratio is of slots, not of attempts.
    #[serde(default)]
    pub failed_slots: Vec<u32>,
    /// Why it is paused or was rolled back: the failure that decided it.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_at: Millis,
    pub updated_at: Millis,
    /// When every slot ran the version, healthy (for a rollback: when it was done).
    /// Failures after it are a task's own, not the rollout's.
    #[serde(default)]
    pub completed_at: Option<Millis>,
}

impl Rollout {
    pub fn new(kind: RolloutKind, version: u64, base: Option<Base>, now: Millis) -> Rollout {
        Rollout {
            kind,
            state: RolloutState::InProgress,
            version,
            from: base.as_ref().map(|b| b.version),
            base: base.map(Box::new),
            failed: Vec::new(),
            failed_slots: Vec::new(),
            reason: None,
            started_at: now,
            updated_at: now,
            completed_at: None,
        }
    }

    /// Whether failures of its tasks still count against it.
    pub fn is_watching(&self) -> bool {
        self.kind != RolloutKind::Create && self.completed_at.is_none() && self.state.is_moving()
    }
}

/// The service after `plan`'s verdict and failures are recorded in its rollout; `None`
/// when nothing changes. A rollback restores the replaced version's template, policy and
/// generation (the replicas stay as they are now: a scale during the rollout is kept), as
/// a new version, and says why.
pub fn settle(service: &Service, plan: &Plan, now: Millis) -> Option<Service> {
    let rollout = service.rollout.as_ref()?;
    if plan.failed.is_empty() && plan.verdict == Verdict::Unchanged {
        return None;
    }
    let mut next = service.clone();
    let mut record = rollout.clone();
    for (id, slot) in &plan.failed {
        record.failed.push(id.clone());
        if !record.failed_slots.contains(slot) {
            record.failed_slots.push(*slot);
        }
    }
    // Bounded, yet longer than the failed tasks a slot keeps in its history, so an id
    // dropped here is gone from the state too and is not counted again.
    let keep = (service.spec.replicas as usize).max(1) * (HISTORY_PER_SLOT + 1) + 1;
    let excess = record.failed.len().saturating_sub(keep);
    record.failed.drain(..excess);
    record.updated_at = now;
    match &plan.verdict {
        Verdict::Unchanged => {}
        Verdict::Completed => {
            // A rolled-back rollout stays `rolled_back`: that is what the user must read.
            if record.state == RolloutState::InProgress {
                record.state = RolloutState::Completed;
            }
            record.completed_at = Some(now);
        }
        Verdict::Pause(reason) => {
            record.state = RolloutState::Paused;
            record.reason = Some(reason.clone());
        }
        Verdict::Rollback(reason) => {
            let base = record.base.clone().map(|b| *b).or_else(|| {
                let from = record.from?;
                service.version_of(from).map(|v| Base {
                    version: v.version,
                    spec: v.spec.clone(),
                    generation: v.generation,
                })
            });
            let Some(base) = base else {
                record.state = RolloutState::Paused;
                record.reason = Some(format!(
                    "{reason}; cannot roll back: version {} is no longer kept",
                    record.from.unwrap_or(0)
                ));
                next.rollout = Some(record);
                return Some(next);
            };
            let mut back =
                service.rolled_back(&base, service.spec.replicas, RolloutKind::Rollback, now);
            if let Some(r) = back.rollout.as_mut() {
                r.state = RolloutState::RolledBack;
                r.reason = Some(reason.clone());
            }
            return Some(back);
        }
    }
    next.rollout = Some(record);
    Some(next)
}

/// The earliest moment after `now` at which a pass would move a rollout on by time alone:
/// a task without a health check reaching its `monitor` (it is then healthy), or a
/// `delay` running out. The orchestrator runs its pass then rather than on its next tick,
/// so a rollout does not wait up to a period per batch.
pub fn next_due(state: &crate::ClusterState, now: Millis) -> Option<Millis> {
    let mut due: Option<Millis> = None;
    for service in state.services.values() {
        let Some(rollout) = &service.rollout else {
            continue;
        };
        if !rollout.state.is_moving() || rollout.completed_at.is_some() {
            continue;
        }
        let policy = service.spec.update;
        for task in state.tasks_of_service(service.name()) {
            let at = if task.is_active()
                && task.state == crate::TaskState::Running
                && task.healthcheck.is_none()
                && task.health != Some(crate::service::Health::Healthy)
            {
                Some(plan::healthy_due(task, policy.monitor.millis()))
            } else if policy.delay.millis() > 0 && task.runs(service) {
                task.healthy_at.map(|h| h + policy.delay.millis())
            } else {
                None
            };
            if let Some(at) = at.filter(|at| *at > now) {
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
    }
    due
}
