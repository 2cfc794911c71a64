//! The whole cluster state as one value, and the changes that move it forward.
//!
//! The maps are persistent (imbl): cloning a state is O(1) and shares structure, so the
//! manager can hand readers a snapshot and build the next state beside it without locks.
//! A `Change` is the unit of both memory and storage: the store persists exactly the
//! changes the manager applies, so the two cannot drift apart.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::service::Volume;
use crate::{Service, Task, Worker};

/// The stats counters of the original's `/api/v1/stats`; stored, so they survive restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Accepted service create and update requests.
    pub total_requests: u64,
    /// Containers that agents reported started.
    pub total_containers: u64,
    /// Workers declared down.
    pub worker_failures: u64,
    /// Tasks replaced because their worker died.
    pub containers_relocated: u64,
}

/// One change to the cluster state; a list of them is committed atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    PutService(Service),
    DeleteService(String),
    PutTask(Task),
    DeleteTask(String),
    PutWorker(Worker),
    DeleteWorker(String),
    PutCounters(Counters),
    PutVolume(Volume),
    DeleteVolume(String),
}

#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub services: OrdMap<String, Service>,
    /// Shared with the indexes below: one copy of each task, however it is reached.
    pub tasks: OrdMap<String, Arc<Task>>,
    pub workers: OrdMap<String, Worker>,
    pub counters: Counters,
    /// The volumes made for slots, by name.
    pub volumes: OrdMap<String, Volume>,
    /// Tasks by service name and by worker name, kept by `apply`. They hold the tasks
    /// themselves (shared), so walking a service's or a worker's tasks costs no lookups.
    by_service: OrdMap<String, OrdMap<String, Arc<Task>>>,
    by_worker: OrdMap<String, OrdMap<String, Arc<Task>>>,
    /// Tasks waiting for a worker, so scheduling does not scan every task.
    pending: OrdMap<String, Arc<Task>>,
    /// What each worker holds, kept by `apply`: scheduling and the worker list read it
    /// for every worker, and counting a million tasks each time was their whole cost.
    loads: OrdMap<String, WorkerLoad>,
}

/// The tasks placed on one worker, counted by what they mean for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Wanted and not finished: what the spread balances.
    pub active: u32,
    /// Not finished (including those stopping): what holds the worker's capacity.
    pub live: u32,
    /// Reported running by its agent.
    pub running: u32,
    /// What the live tasks reserve: thousandths of CPUs, and bytes of memory.
    pub reserved_cpus: u64,
    pub reserved_memory: u64,
}

impl WorkerLoad {
    fn add(&mut self, task: &Task, sign: i64) {
        let step = |n: &mut u32, counts: bool| {
            if counts {
                *n = (i64::from(*n) + sign).clamp(0, i64::from(u32::MAX)) as u32;
            }
        };
        step(&mut self.active, task.is_active());
        step(&mut self.live, task.is_live());
        step(&mut self.running, task.state == crate::TaskState::Running);
        if task.is_live() {
            let sum = |n: &mut u64, by: u64| {
                *n = if sign > 0 {
                    n.saturating_add(by)
                } else {
                    n.saturating_sub(by)
                }
            };
            let r = task.resources.reservations;
            sum(&mut self.reserved_cpus, r.cpus.map_or(0, |c| c.0));
            sum(&mut self.reserved_memory, r.memory.map_or(0, |m| m.0));
        }
    }

    /// What the live tasks reserve.
    pub fn reserved(&self) -> crate::service::Amount {
        use crate::service::{Bytes, Cpus};
        crate::service::Amount {
            cpus: (self.reserved_cpus > 0).then_some(Cpus(self.reserved_cpus)),
            memory: (self.reserved_memory > 0).then_some(Bytes(self.reserved_memory)),
        }
    }
}

impl ClusterState {
    /// Builds a state from stored records.
    pub fn from_parts(
        services: impl IntoIterator<Item = Service>,
        tasks: impl IntoIterator<Item = Task>,
        workers: impl IntoIterator<Item = Worker>,
        volumes: impl IntoIterator<Item = Volume>,
        counters: Counters,
    ) -> ClusterState {
        let mut state = ClusterState {
            counters,
            ..ClusterState::default()
        };
        for service in services {
            state.apply(&Change::PutService(service));
        }
        for task in tasks {
            state.apply(&Change::PutTask(task));
        }
        for worker in workers {
            state.apply(&Change::PutWorker(worker));
        }
        for volume in volumes {
            state.apply(&Change::PutVolume(volume));
        }
        state
    }

    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::PutService(service) => {
                self.services
                    .insert(service.spec.name.clone(), service.clone());
            }
            Change::DeleteService(name) => {
                self.services.remove(name);
            }
            Change::PutTask(task) => {
                self.unindex(&task.id);
                let task = Arc::new(task.clone());
                index(&mut self.by_service, &task.service, &task);
                if let Some(worker) = &task.worker {
                    index(&mut self.by_worker, worker, &task);
                    self.loads.entry(worker.clone()).or_default().add(&task, 1);
                }
                if task.is_pending() {
                    self.pending.insert(task.id.clone(), task.clone());
                }
                self.tasks.insert(task.id.clone(), task);
            }
            Change::DeleteTask(id) => {
                self.unindex(id);
                self.tasks.remove(id);
            }
            Change::PutWorker(worker) => {
                self.workers.insert(worker.name.clone(), worker.clone());
            }
            Change::DeleteWorker(name) => {
                self.workers.remove(name);
            }
            Change::PutCounters(counters) => self.counters = *counters,
            Change::PutVolume(volume) => {
                self.volumes.insert(volume.name.clone(), volume.clone());
            }
            Change::DeleteVolume(name) => {
                self.volumes.remove(name);
            }
        }
    }

    fn unindex(&mut self, id: &str) {
        if let Some(old) = self.tasks.get(id) {
            unindex(&mut self.by_service, &old.service, id);
            if let Some(worker) = &old.worker {
                unindex(&mut self.by_worker, worker, id);
                let emptied = self.loads.get_mut(worker).is_some_and(|load| {
                    load.add(old, -1);
                    *load == WorkerLoad::default()
                });
                if emptied {
                    self.loads.remove(worker);
                }
            }
            self.pending.remove(id);
        }
    }

    /// Tasks waiting for a worker, by id.
    pub fn pending_tasks(&self) -> impl Iterator<Item = &Task> + '_ {
        self.pending.values().map(|t| t.as_ref())
    }

    /// Every task of a service (in any state), by id.
    pub fn tasks_of_service<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.indexed(&self.by_service, service)
    }

    /// Every task placed on a worker (in any state), by id.
    pub fn tasks_on_worker<'a>(&'a self, worker: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.indexed(&self.by_worker, worker)
    }

    /// What a worker holds (all zero for one without tasks).
    pub fn load_of(&self, worker: &str) -> WorkerLoad {
        self.loads.get(worker).copied().unwrap_or_default()
    }

    /// Names of services that have tasks, whether or not the service still exists.
    pub fn services_with_tasks(&self) -> impl Iterator<Item = &String> + '_ {
        self.by_service.keys()
    }

    fn indexed<'a>(
        &'a self,
        by: &'a OrdMap<String, OrdMap<String, Arc<Task>>>,
        key: &str,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        by.get(key)
            .into_iter()
            .flat_map(|tasks| tasks.values())
            .map(|t| t.as_ref())
    }
}

fn index(by: &mut OrdMap<String, OrdMap<String, Arc<Task>>>, key: &str, task: &Arc<Task>) {
    by.entry(key.to_string())
        .or_default()
        .insert(task.id.clone(), task.clone());
}

fn unindex(by: &mut OrdMap<String, OrdMap<String, Arc<Task>>>, key: &str, id: &str) {
    if let Some(ids) = by.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            by.remove(key);
        }
    }
}

/// A state being changed: each change is applied at once and remembered, so later
/// decisions in the same transaction see earlier ones, and the list can be committed.
#[derive(Clone, Debug)]
pub struct Txn {
    pub state: ClusterState,
    pub changes: Vec<Change>,
}

impl Txn {
    pub fn new(state: ClusterState) -> Txn {
        Txn {
            state,
            changes: Vec::new(),
        }
    }

    pub fn push(&mut self, change: Change) {
        self.state.apply(&change);
        self.changes.push(change);
    }

    pub fn extend(&mut self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            self.push(change);
        }
    }

    /// The changes with repeated writes to one record folded into the last one.
    pub fn compacted(&self) -> Vec<Change> {
        compact(&self.changes)
    }
}

/// `changes` with repeated writes to one record folded into the last one, in first-write
/// order: what the store needs to reach the same state.
pub fn compact(changes: &[Change]) -> Vec<Change> {
    let key = |change: &Change| -> (u8, String) {
        match change {
            Change::PutService(s) => (0, s.spec.name.clone()),
            Change::DeleteService(name) => (0, name.clone()),
            Change::PutTask(t) => (1, t.id.clone()),
            Change::DeleteTask(id) => (1, id.clone()),
            Change::PutWorker(w) => (2, w.name.clone()),
            Change::DeleteWorker(name) => (2, name.clone()),
            Change::PutCounters(_) => (3, String::new()),
            Change::PutVolume(v) => (4, v.name.clone()),
            Change::DeleteVolume(name) => (4, name.clone()),
        }
    };
    let mut position = std::collections::HashMap::new();
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    for change in changes {
        match position.get(&key(change)) {
            Some(&i) => out[i] = change.clone(),
            None => {
                position.insert(key(change), out.len());
                out.push(change.clone());
            }
        }
    }
    out
}
