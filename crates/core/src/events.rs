//! Events: what a commit changed, said the way an operator follows a cluster (a service
//! created, a task's new state and why, a worker down, a slot relocated, a rollout's
//! progress). Derived here, purely, from the state before a commit and the changes it
//! made; the manager numbers them (`event_index`), keeps a bounded history and streams
//! it (`GET /api/v1/events`, `mycluster events`, the dashboard).
//!
//! Derived from committed changes, not emitted by the code that makes them: every change
//! from any command is seen, in the order it was committed, and nothing is said that did
//! not become durable.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::{RolloutKind, RolloutState};
use crate::state::{Change, ClusterState};
use crate::{DesiredState, Service, Task, TaskState, Worker, WorkerStatus};

/// What an event is about: the topics a client may follow (`?topic=`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    /// Services created, updated (scaled included), deleted.
    Service,
    /// Tasks' states, and the relocation of a slot whose worker was lost.
    Task,
    /// Workers registered, up, down, draining, removed.
    Worker,
    /// Rollouts started, completed, paused, rolled back.
    Rollout,
}

impl Topic {
    pub const ALL: [Topic; 4] = [Topic::Service, Topic::Task, Topic::Worker, Topic::Rollout];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Service => "service",
            Topic::Task => "task",
            Topic::Worker => "worker",
            Topic::Rollout => "rollout",
        }
    }

    /// The topic named `name`, as `?topic=` and `--topic` spell it.
    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One thing that happened, with what a reader needs to understand it without
/// re-reading the state. `type` says which.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A new service.
    ServiceCreated {
        service: String,
        version: u64,
        replicas: u32,
    },
    /// A service's spec changed (a new version), or it was scaled.
    ServiceUpdated {
        service: String,
        version: u64,
        replicas: u32,
        /// The replicas before, when a scale changed them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_replicas: Option<u32>,
    },
    ServiceDeleted {
        service: String,
    },
    /// A task was made (`previous` null) or moved to another state.
    TaskState {
        task: String,
        service: String,
        slot: u32,
        worker: Option<String>,
        state: TaskState,
        previous: Option<TaskState>,
        desired: DesiredState,
        /// Why it is where it is (the task's message).
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
    },
    /// A slot whose worker was lost is run again elsewhere: `task` was lost on `from`,
    /// `replacement` takes its slot (null while none was made yet in the same commit).
    /// One for each count of `containers.relocated` in `/api/v1/stats`.
    TaskRelocated {
        service: String,
        slot: u32,
        task: String,
        from: Option<String>,
        replacement: Option<String>,
        /// Why it was lost.
        message: String,
    },
    /// A worker registered (`previous` null), or its status changed (up, down,
    /// draining).
    WorkerStatus {
        worker: String,
        status: WorkerStatus,
        previous: Option<WorkerStatus>,
    },
    WorkerRemoved {
        worker: String,
    },
    /// A rollout started (`previous` null) or reached another state.
    RolloutState {
        service: String,
        kind: RolloutKind,
        version: u64,
        state: RolloutState,
        previous: Option<RolloutState>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Event {
    pub fn topic(&self) -> Topic {
        match self {
            Event::ServiceCreated { .. }
            | Event::ServiceUpdated { .. }
            | Event::ServiceDeleted { .. } => Topic::Service,
            Event::TaskState { .. } | Event::TaskRelocated { .. } => Topic::Task,
            Event::WorkerStatus { .. } | Event::WorkerRemoved { .. } => Topic::Worker,
            Event::RolloutState { .. } => Topic::Rollout,
        }
    }
}

/// The most events one commit is numbered for: an event's index is `commit ×
/// EVENTS_PER_COMMIT + its position` (from 1), so indexes grow across commits and across
/// manager restarts (a commit index is durable) and read as `<commit>` followed by six
/// digits. A commit's events past this many are not numbered (see `event_index`).
pub const EVENTS_PER_COMMIT: u64 = 1_000_000;

/// The index of the `position`-th event (from 0) of commit `commit`, or `None` past
/// `EVENTS_PER_COMMIT - 1` events.
pub fn event_index(commit: u64, position: usize) -> Option<u64> {
    let position = u64::try_from(position).ok()?.checked_add(1)?;
    if position >= EVENTS_PER_COMMIT {
        return None;
    }
    commit.checked_mul(EVENTS_PER_COMMIT)?.checked_add(position)
}

/// The commit an event index belongs to.
pub fn commit_of(index: u64) -> u64 {
    index / EVENTS_PER_COMMIT
}

/// The events of a commit that made `changes` on `before`, in the order of the changes.
/// A change that alters nothing an event says (a heartbeat's renewal, a health probe's
/// message) gives none.
pub fn derive<'a>(before: &'a ClusterState, changes: &'a [Change]) -> Vec<Event> {
    let mut seen = Seen::new(before);
    let mut events = Vec::new();
    // Relocated slots whose replacement has not been seen yet in this commit: the index
    // of their event, by (service, slot).
    let mut relocating: HashMap<(String, u32), usize> = HashMap::new();
    for change in changes {
        match change {
            Change::PutService(service) => {
                let old = seen.service(&service.spec.name);
                service_events(old, service, &mut events);
                seen.deleted_services.retain(|n| **n != service.spec.name);
                seen.services.insert(&service.spec.name, service);
            }
            Change::DeleteService(name) => {
                if seen.service(name).is_some() {
                    events.push(Event::ServiceDeleted {
                        service: name.clone(),
                    });
                }
                seen.services.remove(name.as_str());
                seen.deleted_services.push(name);
            }
            Change::PutTask(task) => {
                let old = seen.task(&task.id);
                let state_changed = old.map(|o| o.state) != Some(task.state);
                let new = old.is_none();
                if new {
                    if let Some(at) = relocating.remove(&(task.service.clone(), task.slot)) {
                        if let Some(Event::TaskRelocated { replacement, .. }) = events.get_mut(at) {
                            *replacement = Some(task.id.clone());
                        }
                    }
                }
                if state_changed {
                    events.push(Event::TaskState {
                        task: task.id.clone(),
                        service: task.service.clone(),
                        slot: task.slot,
                        worker: task.worker.clone(),
                        state: task.state,
                        previous: old.map(|o| o.state),
                        desired: task.desired,
                        message: task.message.clone(),
                        exit_code: task.exit_code,
                    });
                }
                if let Some(old) = old {
                    if relocated(old, task, seen.service(&task.service)) {
                        relocating.insert((task.service.clone(), task.slot), events.len());
                        events.push(Event::TaskRelocated {
                            service: task.service.clone(),
                            slot: task.slot,
                            task: task.id.clone(),
                            from: task.worker.clone(),
                            replacement: None,
                            message: task.message.clone(),
                        });
                    }
                }
                seen.tasks.insert(&task.id, task);
            }
            Change::DeleteTask(_) => {}
            Change::PutWorker(worker) => {
                let old = seen.worker(&worker.name).map(|w| w.status);
                if old != Some(worker.status) {
                    events.push(Event::WorkerStatus {
                        worker: worker.name.clone(),
                        status: worker.status,
                        previous: old,
                    });
                }
                seen.deleted_workers.retain(|n| **n != worker.name);
                seen.workers.insert(&worker.name, worker);
            }
            Change::DeleteWorker(name) => {
                if seen.worker(name).is_some() {
                    events.push(Event::WorkerRemoved {
                        worker: name.clone(),
                    });
                }
                seen.workers.remove(name.as_str());
                seen.deleted_workers.push(name);
            }
            Change::PutCounters(_) | Change::PutVolume(_) | Change::DeleteVolume(_) => {}
        }
    }
    events
}

/// Whether `task`, `old` before, is a lost slot that is run again elsewhere: the count
/// `reconcile` adds to `containers.relocated` (lost while still wanted running).
fn relocated(old: &Task, task: &Task, service: Option<&Service>) -> bool {
    !old.state.is_terminal()
        && task.state == TaskState::Lost
        && task.desired == DesiredState::Running
        && crate::reconcile::wants(service, task)
}

fn service_events(old: Option<&Service>, service: &Service, events: &mut Vec<Event>) {
    let name = service.spec.name.clone();
    let replicas = service.spec.replicas;
    match old {
        None => events.push(Event::ServiceCreated {
            service: name.clone(),
            version: service.version,
            replicas,
        }),
        Some(old) => {
            if old.version != service.version || old.spec.replicas != replicas {
                events.push(Event::ServiceUpdated {
                    service: name.clone(),
                    version: service.version,
                    replicas,
                    previous_replicas: (old.spec.replicas != replicas).then_some(old.spec.replicas),
                });
            }
        }
    }
    let old_rollout = old.and_then(|o| o.rollout.as_ref());
    if let Some(rollout) = &service.rollout {
        let same_rollout = old_rollout
            .filter(|o| o.version == rollout.version && o.started_at == rollout.started_at);
        let previous = same_rollout.map(|o| o.state);
        if previous != Some(rollout.state) {
            events.push(Event::RolloutState {
                service: name,
                kind: rollout.kind,
                version: rollout.version,
                state: rollout.state,
                previous,
                reason: rollout.reason.clone(),
            });
        }
    }
}

/// The state as the commit's changes so far left it: `before`, overlaid with what the
/// changes put and deleted. It borrows both (a commit of 100,000 tasks is not copied).
struct Seen<'a> {
    before: &'a ClusterState,
    services: HashMap<&'a str, &'a Service>,
    deleted_services: Vec<&'a String>,
    tasks: HashMap<&'a str, &'a Task>,
    workers: HashMap<&'a str, &'a Worker>,
    deleted_workers: Vec<&'a String>,
}

impl<'a> Seen<'a> {
    fn new(before: &'a ClusterState) -> Seen<'a> {
        Seen {
            before,
            services: HashMap::new(),
            deleted_services: Vec::new(),
            tasks: HashMap::new(),
            workers: HashMap::new(),
            deleted_workers: Vec::new(),
        }
    }

    fn service(&self, name: &str) -> Option<&'a Service> {
        if let Some(service) = self.services.get(name) {
            return Some(service);
        }
        if self.deleted_services.iter().any(|n| *n == name) {
            return None;
        }
        self.before.services.get(name)
    }

    fn task(&self, id: &str) -> Option<&'a Task> {
        self.tasks
            .get(id)
            .copied()
            .or_else(|| self.before.tasks.get(id).map(|t| &**t))
    }

    fn worker(&self, name: &str) -> Option<&'a Worker> {
        if let Some(worker) = self.workers.get(name) {
            return Some(worker);
        }
        if self.deleted_workers.iter().any(|n| *n == name) {
            return None;
        }
        self.before.workers.get(name)
    }
}
