//! Rollouts: how a change of what a service's tasks run (its template) replaces them
//! without an outage. The record (`Rollout`) lives on the service; the decision of which
//! slots to replace next is `plan`, a pure function over the service and its tasks that
//! `reconcile` calls on every pass — level-triggered, so a missed event or a restarted
//! manager picks the rollout up where the tasks are.

mod plan;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Millis, Service, ServiceSpec};

pub use plan::{plan, Plan, SlotMove, Verdict};

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

/// The latest rollout of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub kind: RolloutKind,
    pub state: RolloutState,
    /// The version being rolled out.
    pub version: u64,
    /// The version it replaces (none for a create).
    pub from: Option<u64>,
    /// Tasks of this rollout counted as failures (each once).
    #[serde(default)]
    pub failed: Vec<String>,
    /// Why it is paused or was rolled back: the failure that decided it.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_at: Millis,
    pub updated_at: Millis,
}

impl Rollout {
    pub fn new(kind: RolloutKind, version: u64, from: Option<u64>, now: Millis) -> Rollout {
        Rollout {
            kind,
            state: RolloutState::InProgress,
            version,
            from,
            failed: Vec::new(),
            reason: None,
            started_at: now,
            updated_at: now,
        }
    }
}

/// The service after `plan`'s verdict and failures are recorded in its rollout; `None`
/// when nothing changes. A rollback restores the replaced version's template and policy
/// (the replicas stay as they are now: a scale during the rollout is kept), as a new
/// version, and says why.
pub fn settle(service: &Service, plan: &Plan, now: Millis) -> Option<Service> {
    let rollout = service.rollout.as_ref()?;
    if plan.failed.is_empty() && plan.verdict == Verdict::Unchanged {
        return None;
    }
    let mut next = service.clone();
    let mut record = rollout.clone();
    record.failed.extend(plan.failed.iter().cloned());
    // Bounded: past the replicas, more ids say nothing new.
    let keep = (service.spec.replicas as usize).max(1) + 1;
    let excess = record.failed.len().saturating_sub(keep);
    record.failed.drain(..excess);
    record.updated_at = now;
    match &plan.verdict {
        Verdict::Unchanged => {}
        Verdict::Completed => record.state = RolloutState::Completed,
        Verdict::Pause(reason) => {
            record.state = RolloutState::Paused;
            record.reason = Some(reason.clone());
        }
        Verdict::Rollback(reason) => {
            let Some(to) = record.from.and_then(|v| service.version_of(v)) else {
                record.state = RolloutState::Paused;
                record.reason = Some(format!(
                    "{reason}; cannot roll back: version {} is no longer kept",
                    record.from.unwrap_or(0)
                ));
                next.rollout = Some(record);
                return Some(next);
            };
            let spec = ServiceSpec {
                replicas: service.spec.replicas,
                ..to.spec.clone()
            };
            let mut back = service.rolled_back(to, spec, RolloutKind::Rollback, now);
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
