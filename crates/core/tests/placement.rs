//! Placement: constraints, reservations, volumes, spread and moves. Property tests drive
//! random workers (labels, drivers, capacities, statuses, hosts) and random services
//! (constraints, reservations, spread, volumes) through the core's `step`, and check what
//! the scheduler promises after every settle; named tests spell out each filter's words.

mod support;

use support::step_at;

use std::collections::BTreeMap;

use mycluster_core::schedule::{self, fits, is_unplaceable, Cause};
use mycluster_core::service::{
    Amount, Attribute, Bytes, Constraint, Cpus, Mount, Resources, Spread, Volume, VolumeSpec,
};
use mycluster_core::step::{DeclareDown, NothingHeard, PutService, Reconcile, Report, WorkerBack};
use mycluster_core::wire::TaskReport;
use mycluster_core::{
    Change, ClusterState, Command, DesiredState, Driver, Millis, SequentialIds, ServiceSpec, Task,
    TaskState, Worker, WorkerStatus,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const MIB: u64 = 1 << 20;

fn worker(name: &str) -> Worker {
    Worker {
        name: name.into(),
        address: format!("{name}:7001"),
        labels: BTreeMap::new(),
        capacity: None,
        driver: None,
        status: WorkerStatus::Ready,
        registered_at: 0,
        updated_at: 0,
        instance: String::new(),
        resources: Amount::default(),
        host: String::new(),
        drain: false,
        label_overrides: BTreeMap::new(),
        epoch: 0,
        renewed_at: 0,
        lease: Default::default(),
        credential: None,
        agent_ca_sha256: None,
    }
}

fn spec(name: &str, replicas: u32) -> ServiceSpec {
    ServiceSpec {
        healthcheck: None,
        update: Default::default(),
        name: name.into(),
        image: Some("img:1".into()),
        replicas,
        command: None,
        env: BTreeMap::new(),
        ports: Vec::new(),
        stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
        proxy_protocol: false,
        constraints: Vec::new(),
        spread: None,
        resources: Resources::default(),
        volumes: Vec::new(),
        restart: Default::default(),
        on_disconnect: Default::default(),
    }
}

fn reserve(cpus: Option<u64>, memory: Option<u64>) -> Resources {
    Resources {
        reservations: Amount {
            cpus: cpus.map(Cpus),
            memory: memory.map(Bytes),
        },
        limits: Amount::default(),
    }
}

fn data_volume() -> Vec<VolumeSpec> {
    vec![VolumeSpec {
        source: "data".into(),
        target: "/data".into(),
        read_only: false,
    }]
}

/// A cluster driven through `step`, with agents that start what is assigned and stop
/// what is unwanted.
struct Sim {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
}

impl Sim {
    fn new(workers: Vec<Worker>) -> Sim {
        Sim {
            state: ClusterState::from_parts([], [], workers, [], Default::default()),
            ids: SequentialIds::default(),
            now: 1_000,
        }
    }

    fn run<C: Command>(&mut self, command: C) -> Vec<Change> {
        match step_at(&self.state, command, self.now, &NothingHeard, &mut self.ids) {
            Ok(stepped) => {
                self.state = stepped.state;
                stepped.changes
            }
            Err(_) => Vec::new(),
        }
    }

    /// The periodic pass and the agents' reports until nothing changes.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..100 {
            self.now += 61_000;
            let mut changed = !self.run(Reconcile).is_empty();
            let mut reports: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
            for task in self.state.tasks.values().filter(|t| !t.state.is_terminal()) {
                let Some(w) = task.worker.as_ref().and_then(|w| self.state.workers.get(w)) else {
                    continue;
                };
                if w.status == WorkerStatus::Down {
                    continue;
                }
                let state = match (task.desired, task.state) {
                    (DesiredState::Shutdown, _) => TaskState::Shutdown,
                    (DesiredState::Running, TaskState::Assigned) => TaskState::Running,
                    _ => continue,
                };
                let mut report = TaskReport::new(&task.id, state);
                report.container_id = Some(format!("c-{}", task.id));
                reports.entry(w.name.clone()).or_default().push(report);
            }
            for (worker, tasks) in reports {
                changed |= !self
                    .run(Report {
                        worker,
                        instance: String::new(),
                        tasks,
                        removed_volumes: Vec::new(),
                    })
                    .is_empty();
            }
            if !changed {
                return Ok(());
            }
        }
        Err(TestCaseError::fail("did not settle"))
    }

    fn set_status(&mut self, name: &str, status: WorkerStatus) {
        let Some(was) = self.state.workers.get(name).map(|w| w.status) else {
            return;
        };
        match (was, status) {
            (_, WorkerStatus::Down) => {
                self.run(DeclareDown {
                    workers: vec![name.into()],
                    silent_for: None,
                });
            }
            (WorkerStatus::Down, WorkerStatus::Ready) => {
                self.run(WorkerBack {
                    worker: name.into(),
                    instance: String::new(),
                });
            }
            _ => {
                let mut w = self.state.workers[name].clone();
                w.status = status;
                w.drain = status == WorkerStatus::Draining;
                self.state.apply(&Change::PutWorker(w));
            }
        }
    }

    fn active(&self, service: &str) -> Vec<Task> {
        self.state
            .tasks_of_service(service)
            .filter(|t| t.is_active())
            .cloned()
            .collect()
    }
}

/// (a), (b), (c) and the volume records, on a settled state.
fn check_placement(state: &ClusterState) -> Result<(), TestCaseError> {
    let mut reserved: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for task in state.tasks.values() {
        let Some(name) = &task.worker else { continue };
        let worker = &state.workers[name];
        if task.is_active() {
            // (a) No active task on a worker that violates one of its constraints.
            for c in &task.constraints {
                prop_assert!(c.allows(worker), "{} on {name} against {c}", task.id);
            }
            for m in &task.mounts {
                let record = state.volumes.get(&m.source);
                prop_assert!(record.is_some(), "no record of {}", m.source);
            }
        }
        if task.is_live() {
            let r = task.resources.reservations;
            let entry = reserved.entry(name).or_default();
            entry.0 += r.cpus.map_or(0, |c| c.0);
            entry.1 += r.memory.map_or(0, |m| m.0);
        }
    }
    // (b) Reservations of live tasks never exceed what a worker has.
    for (name, (cpus, memory)) in reserved {
        let has = state.workers[name].resources;
        prop_assert!(has.cpus.is_none_or(|c| cpus <= c.0), "{name} cpus {cpus}");
        prop_assert!(has.memory.is_none_or(|m| memory <= m.0), "{name} memory");
    }
    // (c) Every unplaceable task names each cause, and the counts cover every worker.
    for task in state.tasks.values().filter(|t| t.is_pending()) {
        if !is_unplaceable(&task.message) {
            continue;
        }
        let parts = parse_reason(&task.message);
        let total: usize = parts.iter().map(|(n, _)| n).sum();
        prop_assert_eq!(total, state.workers.len(), "{}", &task.message);
        for (n, words) in expected_parts(state, task) {
            prop_assert!(
                parts.iter().any(|(m, w)| *m == n && *w == words),
                "{} lacks '{n} {words}'",
                task.message
            );
        }
    }
    Ok(())
}

/// "no worker can take it: 2 lack label disk=ssd, 1 is down; its volume ..." as counts
/// and words.
fn parse_reason(reason: &str) -> Vec<(usize, String)> {
    let body = reason
        .strip_prefix("no worker can take it: ")
        .unwrap_or(reason);
    let counts = body.split("; ").next().unwrap_or("");
    counts
        .split(", ")
        .filter_map(|part| {
            let (n, words) = part.split_once(' ')?;
            Some((n.parse().ok()?, words.to_string()))
        })
        .collect()
}

/// What `fits` says of each worker, counted as the reason should count it.
fn expected_parts(state: &ClusterState, task: &Task) -> Vec<(usize, String)> {
    let mut groups: Vec<(Cause, usize, u64, u64)> = Vec::new();
    for worker in state.workers.values() {
        let Err(cause) = fits(state, task, worker) else {
            continue;
        };
        let amount = match &cause {
            Cause::LacksCpus(c) => Some(c.0),
            Cause::LacksMemory(b) => Some(b.0),
            _ => None,
        };
        let same = |c: &Cause| {
            std::mem::discriminant(c) == std::mem::discriminant(&cause)
                && (amount.is_some() || *c == cause)
        };
        match groups.iter_mut().find(|g| same(&g.0)) {
            Some(g) => {
                g.1 += 1;
                let a = amount.unwrap_or(0);
                if a < g.2 {
                    g.0 = cause.clone();
                }
                g.2 = g.2.min(a);
                g.3 = g.3.max(a);
            }
            None => groups.push((cause, 1, amount.unwrap_or(0), amount.unwrap_or(0))),
        }
    }
    groups
        .into_iter()
        .map(|(cause, n, least, most)| (n, cause.phrase(n, least != most)))
        .collect()
}

const CONSTRAINTS: [&str; 5] = [
    "node.labels.disk == ssd",
    "node.labels.zone != c",
    "node.driver != process",
    "node.host == h1",
    "node.name != w1",
];

fn any_worker(i: usize) -> impl Strategy<Value = Worker> {
    (
        prop::option::of(prop::sample::select(vec!["ssd", "hdd"])),
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::sample::select(vec![None, Some(Driver::Docker), Some(Driver::Process), Some(Driver::Sim)]),
        prop::option::of(1u32..5),
        prop::option::of(1u64..5),
        prop::option::of(1u64..5),
        prop::sample::select(vec!["", "h1", "h2"]),
        prop_oneof![4 => Just(WorkerStatus::Ready), 1 => Just(WorkerStatus::Down), 1 => Just(WorkerStatus::Draining)],
    )
        .prop_map(move |(disk, zone, driver, capacity, cpus, memory, host, status)| {
            let mut w = worker(&format!("w{}", i + 1));
            if let Some(d) = disk {
                w.labels.insert("disk".into(), d.into());
            }
            if let Some(z) = zone {
                w.labels.insert("zone".into(), z.into());
            }
            w.driver = driver;
            w.capacity = capacity;
            w.resources = Amount {
                cpus: cpus.map(|c| Cpus(c * 1000)),
                memory: memory.map(|m| Bytes(m * 512 * MIB)),
            };
            w.host = host.into();
            w.status = status;
            w.drain = status == WorkerStatus::Draining;
            w
        })
}

fn any_workers() -> impl Strategy<Value = Vec<Worker>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(any_worker).collect::<Vec<_>>())
}

fn any_service(name: &'static str) -> impl Strategy<Value = ServiceSpec> {
    (
        0u32..6,
        prop::sample::subsequence(CONSTRAINTS.to_vec(), 0..3),
        prop::option::of(prop::sample::select(vec![500u64, 1000, 1500])),
        prop::option::of(prop::sample::select(vec![128 * MIB, 512 * MIB, 1024 * MIB])),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(replicas, constraints, cpus, memory, spread, volumes, command)| {
                let mut s = spec(name, replicas);
                s.constraints = constraints
                    .iter()
                    .filter_map(|c| Constraint::parse(c).ok())
                    .collect();
                s.resources = reserve(cpus, memory);
                s.spread = spread.then(|| Spread(Attribute::Label("zone".into())));
                if volumes {
                    s.volumes = data_volume();
                }
                if command {
                    s.command = Some(vec!["serve".into()]);
                }
                s
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Put(Box<ServiceSpec>),
    Status(usize, WorkerStatus),
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop_oneof![any_service("a"), any_service("b"), any_service("c")].prop_map(|s| Op::Put(Box::new(s))),
        1 => (0usize..6, prop_oneof![Just(WorkerStatus::Ready), Just(WorkerStatus::Down), Just(WorkerStatus::Draining)])
            .prop_map(|(i, s)| Op::Status(i, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// (a) constraints are never violated, (b) reservations never exceed capacity,
    /// (c) every unplaceable task names each cause, counted over every worker.
    #[test]
    fn placements_respect_every_filter_and_waiting_tasks_say_why(
        workers in any_workers(),
        ops in prop::collection::vec(any_op(), 1..10),
    ) {
        let mut sim = Sim::new(workers);
        for op in ops {
            match op {
                Op::Put(spec) => {
                    sim.run(PutService(*spec));
                }
                Op::Status(i, status) => sim.set_status(&format!("w{}", i + 1), status),
            }
            sim.settle()?;
            check_placement(&sim.state)?;
        }
    }

    /// (d) With a spread over zones, the slots per zone (workers without one are a zone
    /// of their own) differ by at most one, after a create, a scale-up and a rollout.
    #[test]
    fn a_spread_keeps_zones_even(
        zones in prop::collection::vec(prop::option::of(prop::sample::select(vec!["a", "b", "c"])), 1..7),
        replicas in 0u32..12,
        more in 0u32..6,
    ) {
        let workers = zones.iter().enumerate().map(|(i, z)| {
            let mut w = worker(&format!("w{}", i + 1));
            if let Some(z) = z {
                w.labels.insert("zone".into(), (*z).into());
            }
            w
        }).collect();
        let mut sim = Sim::new(workers);
        let mut s = spec("web", replicas);
        s.spread = Some(Spread(Attribute::Label("zone".into())));
        let check = |sim: &Sim| -> Result<(), TestCaseError> {
            let mut per_zone: BTreeMap<Option<String>, u32> = zones.iter().map(|z| (z.map(String::from), 0)).collect();
            for task in sim.active("web") {
                let w = &sim.state.workers[task.worker.as_deref().unwrap_or_default()];
                *per_zone.entry(w.labels.get("zone").cloned()).or_default() += 1;
            }
            let (lo, hi) = (per_zone.values().min(), per_zone.values().max());
            prop_assert!(hi.zip(lo).is_none_or(|(h, l)| h - l <= 1), "{per_zone:?}");
            Ok(())
        };
        sim.run(PutService(s.clone()));
        sim.settle()?;
        check(&sim)?;
        s.replicas += more;
        sim.run(PutService(s.clone()));
        sim.settle()?;
        check(&sim)?;
        s.image = Some("img:2".into());
        sim.run(PutService(s));
        sim.settle()?;
        check(&sim)?;
    }
}

#[path = "placement/named.rs"]
mod named;
