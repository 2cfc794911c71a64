//! Drains and rebalances, as properties: whatever operators do to workers (drain,
//! activate, a rebalance, a new worker joining or a drained one coming back, with or
//! without the manager's `--rebalance`), a service never has fewer than `replicas`
//! healthy tasks running nor more than `replicas + 1` active ones, at any step; a drain
//! that can finish empties its worker; and a rebalance ends with the spread even. The
//! agents and the clock are simulated: each round, assigned tasks start and stopped ones
//! end, and a second passes (a task without a health check is healthy after the update
//! policy's `monitor`).

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;

use mycluster_core::step::{Rebalance, Reconcile, Register, Report, SetDrain};
use mycluster_core::wire::{Registration, TaskReport};
use mycluster_core::{
    ClusterState, Command, DesiredState, Limits, Millis, SequentialIds, ServiceSpec, TaskState,
    WorkerStatus,
};
use support::step_with;

const SERVICES: [(&str, u32); 3] = [("web", 4), ("api", 3), ("one", 1)];

#[derive(Clone, Debug)]
enum Op {
    Drain(usize),
    Activate(usize),
    /// A worker registers (a new one, or one that existed).
    Join(usize),
    Rebalance(Option<usize>),
}

struct Sim {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
    limits: Limits,
}

impl Sim {
    fn run<C: Command>(&mut self, command: C) -> Option<C::Outcome> {
        let stepped = step_with(&self.state, command, self.now, &self.limits, &mut self.ids);
        let stepped = stepped.ok()?;
        self.state = stepped.state;
        Some(stepped.outcome)
    }

    fn join(&mut self, i: usize) {
        self.run(Register(Registration {
            name: format!("w{i}"),
            address: format!("w{i}:7001"),
            labels: BTreeMap::new(),
            capacity: None,
            driver: Default::default(),
            instance: String::new(),
            resources: Default::default(),
            host: String::new(),
        }));
    }

    /// One second: the pass, then every agent that is up reports.
    fn round(&mut self) {
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

    /// The promise of every step: at least `replicas` healthy and running (a task told
    /// to stop still serves until its agent stops it), at most `replicas + 1` active.
    fn check(&self) -> Result<(), TestCaseError> {
        for (name, replicas) in SERVICES {
            let tasks: Vec<_> = self.state.tasks_of_service(name).collect();
            let healthy = tasks.iter().filter(|t| t.is_healthy()).count() as u32;
            let active = tasks.iter().filter(|t| t.is_active()).count() as u32;
            prop_assert!(
                healthy >= replicas,
                "{name}: {healthy} healthy of {replicas} at {}",
                self.now
            );
            prop_assert!(
                active <= replicas + 1,
                "{name}: {active} active of {replicas} at {}",
                self.now
            );
        }
        Ok(())
    }

    fn spread(&self, service: &str) -> BTreeMap<String, u32> {
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

fn spec(name: &str, replicas: u32) -> ServiceSpec {
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
    }
}

/// A cluster of `workers` workers running the services, every replica healthy.
fn settled(workers: usize, rebalance: bool) -> Sim {
    let mut sim = Sim {
        state: ClusterState::default(),
        ids: SequentialIds::default(),
        now: 1_000,
        limits: Limits {
            rebalance,
            ..Limits::default()
        },
    };
    for i in 0..workers {
        sim.join(i);
    }
    for (name, replicas) in SERVICES {
        sim.run(mycluster_core::step::PutService(spec(name, replicas)));
    }
    for _ in 0..10 {
        sim.round();
    }
    sim
}

fn op(workers: usize) -> impl Strategy<Value = Op> {
    let w = 0..workers + 2;
    prop_oneof![
        3 => w.clone().prop_map(Op::Drain),
        2 => w.clone().prop_map(Op::Activate),
        2 => w.prop_map(Op::Join),
        2 => proptest::option::of(0..SERVICES.len()).prop_map(Op::Rebalance),
    ]
}

fn apply(sim: &mut Sim, op: &Op) {
    match op {
        Op::Drain(i) | Op::Activate(i) => {
            sim.run(SetDrain {
                worker: format!("w{i}"),
                drain: matches!(op, Op::Drain(_)),
            });
        }
        Op::Join(i) => sim.join(*i),
        Op::Rebalance(service) => {
            sim.run(Rebalance {
                service: service.map(|s| SERVICES[s].0.to_string()),
                dry_run: false,
            });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn drains_and_rebalances_keep_every_service_served(
        workers in 1usize..5,
        rebalance in any::<bool>(),
        ops in proptest::collection::vec((op(4), 0u32..12), 1..8),
    ) {
        let mut sim = settled(workers, rebalance);
        sim.check()?;
        for (op, rounds) in &ops {
            apply(&mut sim, op);
            sim.check()?;
            for _ in 0..*rounds {
                sim.round();
                sim.check()?;
            }
        }
        // Given time, a drain that can finish empties its worker, and a rebalance leaves
        // the spread even.
        for _ in 0..120 {
            sim.round();
            sim.check()?;
        }
        let ready = sim.state.workers.values().filter(|w| w.status == WorkerStatus::Ready).count();
        if ready > 0 {
            for worker in sim.state.workers.values().filter(|w| w.status == WorkerStatus::Draining) {
                let left: Vec<_> = sim.state.tasks_on_worker(&worker.name).filter(|t| t.is_live()).collect();
                prop_assert!(left.is_empty(), "drained {} still holds {:?}", worker.name, left);
            }
        }
        // Only a rebalance asked after the last change of workers is sure to have seen
        // it; the manager's option sees every change.
        let last_worker_change = ops.iter().rposition(|(op, _)| !matches!(op, Op::Rebalance(_)));
        for (name, _) in SERVICES {
            let last_asked = ops.iter().rposition(|(op, _)| match op {
                Op::Rebalance(None) => true,
                Op::Rebalance(Some(s)) => SERVICES[*s].0 == name,
                _ => false,
            });
            if rebalance || (last_asked.is_some() && last_asked > last_worker_change) {
                let counts = sim.spread(name);
                let (min, max) = (counts.values().min(), counts.values().max());
                if let (Some(min), Some(max)) = (min, max) {
                    prop_assert!(max - min <= 1, "{name} spread {counts:?}");
                }
            }
        }
    }
}

/// The case: an 8-replica service on 4 workers, one worker stopped and back;
/// with `--rebalance` the spread returns to 2/2/2/2, one move at a time.
#[test]
fn a_returning_worker_gets_its_share_back() {
    let mut sim = settled(4, true);
    sim.run(mycluster_core::step::PutService(spec("web", 8)));
    for _ in 0..10 {
        sim.round();
    }
    sim.run(mycluster_core::step::DeclareDown {
        workers: vec!["w3".into()],
        silent_for: None,
    });
    for _ in 0..10 {
        sim.round();
    }
    assert_eq!(sim.spread("web").get("w3"), None, "w3 is down");
    sim.run(mycluster_core::step::WorkerBack {
        worker: "w3".into(),
        instance: String::new(),
    });
    let mut most_active = 0;
    for _ in 0..200 {
        sim.round();
        let active = sim
            .state
            .tasks_of_service("web")
            .filter(|t| t.is_active())
            .count();
        most_active = most_active.max(active);
    }
    let counts: Vec<u32> = sim.spread("web").into_values().collect();
    assert_eq!(counts, [2, 2, 2, 2]);
    assert_eq!(most_active, 9, "one move at a time");
}
