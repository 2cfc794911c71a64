//! The figures `GET /metrics` reads off a snapshot at scrape time: workers by status,
//! tasks by state, each service's desired, running and healthy replicas, and the stats
//! counters. Computed, not kept: they are the state's own, so they cannot drift from
//! what `/api/v1/tasks` or `/api/v1/stats` say, and they survive a restart with it.
//!
//! One walk over the tasks (through the per-service index, so each task is met once
//! and its service's figures need no lookup), one over the workers.

use mycluster_core::{ClusterState, Counters, DesiredState, TaskState, WorkerStatus};

/// Every worker status, in the order the metrics list them.
pub const WORKER_STATUSES: [WorkerStatus; 3] = [
    WorkerStatus::Ready,
    WorkerStatus::Down,
    WorkerStatus::Draining,
];

/// What one scrape reports of the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figures {
    /// Workers by status, in `WORKER_STATUSES`' order (zeros included).
    pub workers: [u64; 3],
    /// Workers heard from within their liveness window.
    pub agents_connected: u64,
    /// Tasks by state, in `TaskState::ALL`'s order (zeros included).
    pub tasks: [u64; 8],
    /// One per existing service, by name.
    pub services: Vec<ServiceFigures>,
    pub counters: Counters,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFigures {
    pub name: String,
    pub desired: u64,
    /// Wanted running and reported running by their agent.
    pub running: u64,
    /// Of those, the healthy ones (a passed health check; without one, running for the
    /// update policy's `monitor`): the replicas the route table would send traffic to.
    pub healthy: u64,
}

impl Figures {
    /// The figures of `state`; `live` says whether a worker was heard from within its
    /// liveness window (the manager's `Cluster::is_live`).
    pub fn of(state: &ClusterState, live: impl Fn(&str) -> bool) -> Figures {
        let mut workers = [0u64; 3];
        let mut agents_connected = 0;
        for worker in state.workers.values() {
            workers[worker_slot(worker.status)] += 1;
            if live(&worker.name) {
                agents_connected += 1;
            }
        }
        let mut tasks = [0u64; 8];
        let mut services = Vec::with_capacity(state.services.len());
        for name in state.services_with_tasks() {
            let (mut running, mut healthy) = (0, 0);
            for task in state.tasks_of_service(name) {
                tasks[task_slot(task.state)] += 1;
                if task.desired == DesiredState::Running && task.state == TaskState::Running {
                    running += 1;
                    if task.is_healthy() {
                        healthy += 1;
                    }
                }
            }
            // Tasks of a deleted service still count by state, until they are gone.
            if let Some(service) = state.services.get(name) {
                services.push(ServiceFigures {
                    name: name.clone(),
                    desired: u64::from(service.spec.replicas),
                    running,
                    healthy,
                });
            }
        }
        // Services without a single task yet (or any more) are listed too, at zero.
        for (name, service) in &state.services {
            if state.tasks_of_service(name).next().is_none() {
                services.push(ServiceFigures {
                    name: name.clone(),
                    desired: u64::from(service.spec.replicas),
                    running: 0,
                    healthy: 0,
                });
            }
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Figures {
            workers,
            agents_connected,
            tasks,
            services,
            counters: state.counters,
        }
    }
}

fn worker_slot(status: WorkerStatus) -> usize {
    match status {
        WorkerStatus::Ready => 0,
        WorkerStatus::Down => 1,
        WorkerStatus::Draining => 2,
    }
}

fn task_slot(state: TaskState) -> usize {
    TaskState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycluster_core::service::Health;
    use mycluster_core::{Change, Service, ServiceSpec, Task, Worker};

    fn service(name: &str, replicas: u32) -> Service {
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": name, "image": "redis", "replicas": replicas
        }))
        .unwrap();
        Service::updated(None, spec, 0)
    }

    fn task(id: &str, service: &Service, slot: u32, state: TaskState) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id, "service": service.name(), "slot": slot, "spec_version": 1,
            "image": "redis", "command": null, "env": {}, "worker": "w1",
            "desired": "running", "state": state.as_str(), "message": "",
            "container_id": null, "exit_code": null, "error": null,
            "created_at": 0, "updated_at": 0
        }))
        .unwrap()
    }

    fn worker(name: &str, status: WorkerStatus) -> Worker {
        serde_json::from_value(serde_json::json!({
            "name": name, "address": "127.0.0.1:7000", "labels": {}, "capacity": null,
            "status": status.as_str(), "registered_at": 0, "updated_at": 0
        }))
        .unwrap()
    }

    #[test]
    fn figures_count_every_state_and_service() {
        let web = service("web", 3);
        let db = service("db", 1);
        let gone = service("gone", 1);
        let mut state = ClusterState::default();
        state.apply(&Change::PutService(web.clone()));
        state.apply(&Change::PutService(db.clone()));
        state.apply(&Change::PutWorker(worker("w1", WorkerStatus::Ready)));
        state.apply(&Change::PutWorker(worker("w2", WorkerStatus::Down)));

        let mut healthy = task("t1", &web, 1, TaskState::Running);
        healthy.health = Some(Health::Healthy);
        state.apply(&Change::PutTask(healthy));
        state.apply(&Change::PutTask(task("t2", &web, 2, TaskState::Running)));
        state.apply(&Change::PutTask(task("t3", &web, 3, TaskState::Pending)));
        state.apply(&Change::PutTask(task("t4", &web, 3, TaskState::Lost)));
        let mut stopping = task("t5", &web, 2, TaskState::Running);
        stopping.desired = DesiredState::Shutdown;
        state.apply(&Change::PutTask(stopping));
        // A deleted service's task still counts by state.
        state.apply(&Change::PutTask(task("t6", &gone, 1, TaskState::Running)));

        let figures = Figures::of(&state, |w| w == "w1");
        assert_eq!(figures.workers, [1, 1, 0]);
        assert_eq!(figures.agents_connected, 1);
        let by_state = |s: TaskState| figures.tasks[task_slot(s)];
        assert_eq!(by_state(TaskState::Running), 4);
        assert_eq!(by_state(TaskState::Pending), 1);
        assert_eq!(by_state(TaskState::Lost), 1);
        assert_eq!(figures.tasks.iter().sum::<u64>(), state.tasks.len() as u64);
        assert_eq!(
            figures.services,
            vec![
                ServiceFigures {
                    name: "db".into(),
                    desired: 1,
                    running: 0,
                    healthy: 0
                },
                ServiceFigures {
                    name: "web".into(),
                    desired: 3,
                    running: 2,
                    healthy: 1
                },
            ]
        );
    }
}
