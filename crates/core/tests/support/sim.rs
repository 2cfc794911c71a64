//! A cluster driven through `step` with simulated agents and a clock: each `round` is a
//! second in which the orchestrator's pass runs and every agent that is up reports
//! (assigned tasks start, stopped ones end). Shared by the tests of moves and restarts.

use std::collections::BTreeMap;

use mycluster_core::step::{Reconcile, Register, Report};
use mycluster_core::wire::{Registration, TaskReport};
use mycluster_core::{
    ClusterState, Command, DesiredState, Limits, Millis, SequentialIds, ServiceSpec, TaskState,
    WorkerStatus,
};

use super::step_with;

pub struct Sim {
    pub state: ClusterState,
    pub ids: SequentialIds,
    pub now: Millis,
    pub limits: Limits,
}

impl Sim {
    /// An empty cluster; `rebalance`: the manager's `--rebalance`.
    pub fn new(rebalance: bool) -> Sim {
        Sim {
            state: ClusterState::default(),
            ids: SequentialIds::default(),
            now: 1_000,
            limits: Limits {
                rebalance,
                ..Limits::default()
            },
        }
    }

    /// Runs a command as the manager does; `None` if it was refused.
    pub fn run<C: Command>(&mut self, command: C) -> Option<C::Outcome> {
        let stepped = step_with(&self.state, command, self.now, &self.limits, &mut self.ids);
        let stepped = stepped.ok()?;
        self.state = stepped.state;
        Some(stepped.outcome)
    }

    /// A worker registers (on host `h`) with `labels`.
    pub fn join(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.run(Register::open(Registration {
            name: name.into(),
            address: format!("{name}:7001"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capacity: None,
            driver: Default::default(),
            instance: String::new(),
            resources: Default::default(),
            host: "h".into(),
            agent_ca_sha256: None,
        }));
    }

    /// One second: the pass, then every agent that is up reports.
    pub fn round(&mut self) {
        self.now += 1_000;
        self.run(Reconcile);
        let mut reports: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
        for task in self.state.tasks.values() {
            let Some(worker) = &task.worker else { continue };
            let up = self
                .state
                .workers
                .get(worker)
                .is_some_and(|w| w.status != WorkerStatus::Down);
            if !up || task.state.is_terminal() {
                continue;
            }
            let state = match (task.desired, task.state) {
                (DesiredState::Shutdown, _) => TaskState::Shutdown,
                (DesiredState::Running, TaskState::Assigned) => TaskState::Running,
                _ => continue,
            };
            let mut report = TaskReport::new(task.id.clone(), state);
            if state == TaskState::Running {
                report.container_id = Some(format!("c-{}", task.id));
            }
            reports.entry(worker.clone()).or_default().push(report);
        }
        for (worker, tasks) in reports {
            self.run(Report {
                worker,
                instance: String::new(),
                tasks,
                removed_volumes: Vec::new(),
            });
        }
    }

    /// The service's active tasks per ready worker (0 for none).
    pub fn spread(&self, service: &str) -> BTreeMap<String, u32> {
        let mut counts: BTreeMap<String, u32> = self
            .state
            .workers
            .values()
            .filter(|w| w.status == WorkerStatus::Ready)
            .map(|w| (w.name.clone(), 0))
            .collect();
        for task in self
            .state
            .tasks_of_service(service)
            .filter(|t| t.is_active())
        {
            if let Some(n) = task.worker.as_ref().and_then(|w| counts.get_mut(w)) {
                *n += 1;
            }
        }
        counts
    }
}

/// A service of `replicas` of an image, with every optional field at its default.
pub fn spec(name: &str, replicas: u32) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        image: Some("nginx:1".into()),
        replicas,
        command: None,
        env: BTreeMap::new(),
        healthcheck: None,
        update: Default::default(),
        ports: Vec::new(),
        stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
        proxy_protocol: false,
        constraints: Vec::new(),
        spread: None,
        resources: Default::default(),
        volumes: Vec::new(),
        restart: Default::default(),
        on_disconnect: Default::default(),
    }
}
