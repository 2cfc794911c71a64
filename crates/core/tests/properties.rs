//! Property tests for the control plane: random sequences of service changes, worker
//! verdicts and agent reports are driven through the core's `step` (the function the
//! manager runs for every change), then its periodic pass until it settles, and the
//! invariants the control plane promises are checked after every step.

mod support;

use support::step_at;

use std::collections::{BTreeMap, BTreeSet};

use mycluster_core::reconcile::HISTORY_PER_SLOT;
use mycluster_core::service::ServicePatch;
use mycluster_core::state::compact;
use mycluster_core::step::{
    DeclareDown, DeleteService, NothingHeard, PatchService, PutService, Reconcile, Report,
    WorkerBack,
};
use mycluster_core::wire::TaskReport;
use mycluster_core::{
    Change, ClusterState, Command, DesiredState, Millis, SequentialIds, ServiceSpec, Task,
    TaskState, Txn, Worker, WorkerStatus,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// A small name space, so operations often hit the same service again.
const SERVICES: [&str; 3] = ["a", "b", "c"];
const IMAGES: [&str; 3] = ["img:1", "img:2", "img:3"];
const MAX_REPLICAS: u32 = 8;
/// The periodic pass (with the agents' reports) must reach a fixpoint well within this
/// many rounds: a rollout of `MAX_REPLICAS` slots one at a time takes about three rounds
/// a slot, so hitting the bound means passes keep undoing each other.
const MAX_ROUNDS: usize = 100;

#[derive(Clone, Debug)]
enum Op {
    /// Create or update a service (an image change bumps its version).
    Put {
        service: usize,
        image: usize,
        replicas: u32,
    },
    /// Change only the replica count of an existing service.
    Scale {
        service: usize,
        replicas: u32,
    },
    /// Move an existing service to the next image: every task is replaced.
    ChangeImage {
        service: usize,
    },
    Delete {
        service: usize,
    },
    SetWorker {
        worker: usize,
        status: WorkerStatus,
    },
    /// Every agent reports once; `fail` picks one running task (modulo their number) to
    /// crash, so replacements happen too.
    Agent {
        fail: Option<usize>,
    },
}

fn worker_name(i: usize) -> String {
    format!("w{}", i + 1)
}

fn worker(i: usize, status: WorkerStatus, now: Millis) -> Worker {
    Worker {
        name: worker_name(i),
        address: format!("{}:7001", worker_name(i)),
        labels: BTreeMap::new(),
        capacity: None,
        driver: None,
        status,
        registered_at: 0,
        updated_at: now,
        instance: String::new(),
        resources: Default::default(),
        host: String::new(),
        drain: false,
        label_overrides: Default::default(),
        epoch: 0,
        renewed_at: 0,
        lease: Default::default(),
        credential: None,
        agent_ca_sha256: None,
    }
}

fn status_strategy() -> impl Strategy<Value = WorkerStatus> {
    prop_oneof![
        3 => Just(WorkerStatus::Ready),
        1 => Just(WorkerStatus::Down),
        1 => Just(WorkerStatus::Draining),
    ]
}

/// Operations on services only; used alone by the spread test, where workers never change.
fn service_op(agent_failures: bool) -> impl Strategy<Value = Op> {
    let service = 0..SERVICES.len();
    let fail = if agent_failures {
        proptest::option::weighted(0.3, 0..64usize).boxed()
    } else {
        Just(None).boxed()
    };
    prop_oneof![
        3 => (service.clone(), 0..IMAGES.len(), 0..=MAX_REPLICAS)
            .prop_map(|(service, image, replicas)| Op::Put { service, image, replicas }),
        3 => (service.clone(), 0..=MAX_REPLICAS)
            .prop_map(|(service, replicas)| Op::Scale { service, replicas }),
        1 => service.clone().prop_map(|service| Op::ChangeImage { service }),
        1 => service.prop_map(|service| Op::Delete { service }),
        3 => fail.prop_map(|fail| Op::Agent { fail }),
    ]
}

fn any_op(workers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => service_op(true),
        2 => (0..workers, status_strategy())
            .prop_map(|(worker, status)| Op::SetWorker { worker, status }),
    ]
}

/// The cluster plus the things a manager would supply: ids and a clock. Every change is
/// a command of the core's `step`, as in the manager.
struct Sim {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
}

impl Sim {
    fn new(statuses: &[WorkerStatus]) -> Result<Sim, TestCaseError> {
        let workers = statuses.iter().enumerate().map(|(i, &s)| worker(i, s, 0));
        let mut sim = Sim {
            state: ClusterState::from_parts([], [], workers, [], Default::default()),
            ids: SequentialIds::default(),
            now: 1_000,
        };
        sim.settle()?;
        check_settled(&sim.state)?;
        Ok(sim)
    }

    /// Each step is a minute apart: longer than any crash-loop backoff, so a failed slot
    /// is always replaced by the next settle (the backoff has tests of its own in
    /// `scenarios.rs`).
    fn tick(&mut self) -> Millis {
        self.now += 61_000;
        self.now
    }

    /// Runs one command the way the manager does (one step, one transaction), checking
    /// that nothing moves a task backwards, that placements go only to ready workers,
    /// and that the compacted list reaches the same state. A refused command must change
    /// nothing (the state stays as it was). Returns the changes it made.
    fn run<C: Command>(&mut self, command: C) -> Result<Vec<Change>, TestCaseError> {
        let Ok(stepped) = step_at(&self.state, command, self.now, &NothingHeard, &mut self.ids)
        else {
            return Ok(Vec::new());
        };
        check_forward(&self.state, &stepped.state)?;
        check_placements(&self.state, &stepped.state, &stepped.changes)?;
        let mut replayed = self.state.clone();
        for change in compact(&stepped.changes) {
            replayed.apply(&change);
        }
        prop_assert!(
            same_records(&replayed, &stepped.state),
            "compacted changes diverge"
        );
        self.state = stepped.state;
        Ok(stepped.changes)
    }

    /// Changes no command makes yet (an operator draining or undraining a worker), on
    /// their own: the next pass picks them up.
    fn raw(&mut self, changes: Vec<Change>) {
        let mut txn = Txn::new(self.state.clone());
        txn.extend(changes);
        self.state = txn.state;
    }

    /// Runs the orchestrator's pass to its fixpoint, with the agents doing their part
    /// between passes (starting what is assigned, stopping what is unwanted) and time
    /// moving past a rollout's `monitor`, so rollouts complete; returns every change
    /// made.
    fn settle(&mut self) -> Result<Vec<Change>, TestCaseError> {
        self.tick();
        let mut all = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let mut changes = self.run(Reconcile)?;
            for (worker, tasks) in agent_reports(&self.state, None) {
                changes.extend(self.run(Report {
                    worker,
                    instance: String::new(),
                    tasks,
                    removed_volumes: Vec::new(),
                })?);
            }
            if changes.is_empty() {
                return Ok(all);
            }
            all.extend(changes);
            self.now += 6_000;
        }
        Err(TestCaseError::fail(format!(
            "the periodic pass did not settle in {MAX_ROUNDS} rounds"
        )))
    }

    /// Applies one operation as its command and settles; returns every change made.
    fn step(&mut self, op: &Op) -> Result<Vec<Change>, TestCaseError> {
        let now = self.tick();
        let mut changes = match *op {
            Op::Put {
                service,
                image,
                replicas,
            } => self.run(PutService(spec(SERVICES[service], IMAGES[image], replicas)))?,
            Op::Scale { service, replicas } => self.run(PatchService {
                name: SERVICES[service].into(),
                patch: ServicePatch {
                    replicas: Some(replicas),
                    ..ServicePatch::default()
                },
            })?,
            Op::ChangeImage { service } => {
                let next = self.state.services.get(SERVICES[service]).map(|s| {
                    let i = IMAGES
                        .iter()
                        .position(|i| Some(*i) == s.spec.image.as_deref())
                        .unwrap_or(0);
                    IMAGES[(i + 1) % IMAGES.len()]
                });
                self.run(PatchService {
                    name: SERVICES[service].into(),
                    patch: ServicePatch {
                        image: next.map(str::to_owned),
                        ..ServicePatch::default()
                    },
                })?
            }
            Op::Delete { service } => self.run(DeleteService {
                name: SERVICES[service].into(),
                volumes: false,
            })?,
            Op::SetWorker { worker: i, status } => {
                let name = worker_name(i);
                let was = self.state.workers.get(&name).map(|w| w.status);
                match (was, status) {
                    (_, WorkerStatus::Down) => self.run(DeclareDown {
                        workers: vec![name],
                        silent_for: None,
                    })?,
                    (Some(WorkerStatus::Down), WorkerStatus::Ready) => self.run(WorkerBack {
                        worker: name,
                        instance: String::new(),
                    })?,
                    _ => {
                        self.raw(vec![Change::PutWorker(worker(i, status, now))]);
                        Vec::new()
                    }
                }
            }
            Op::Agent { fail } => {
                let mut changes = Vec::new();
                for (worker, tasks) in agent_reports(&self.state, fail) {
                    changes.extend(self.run(Report {
                        worker,
                        instance: String::new(),
                        tasks,
                        removed_volumes: Vec::new(),
                    })?);
                }
                changes
            }
        };
        changes.extend(self.settle()?);
        Ok(changes)
    }
}

fn spec(name: &str, image: &str, replicas: u32) -> ServiceSpec {
    ServiceSpec {
        healthcheck: None,
        update: Default::default(),
        name: name.into(),
        image: Some(image.into()),
        replicas,
        command: None,
        env: BTreeMap::new(),
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

/// What the agents would report, per worker: assigned tasks start, stopped tasks end, one
/// may crash. Only workers that are up (ready or draining) report; a down worker is
/// silent.
fn agent_reports(state: &ClusterState, fail: Option<usize>) -> BTreeMap<String, Vec<TaskReport>> {
    let reporting = |task: &Task| {
        task.worker
            .as_ref()
            .and_then(|w| state.workers.get(w))
            .is_some_and(|w| w.status != WorkerStatus::Down)
    };
    let running: Vec<&String> = state
        .tasks
        .values()
        .filter(|t| t.is_active() && t.state == TaskState::Running && reporting(t))
        .map(|t| &t.id)
        .collect();
    let crashed = fail
        .filter(|_| !running.is_empty())
        .map(|k| running[k % running.len()]);

    let mut reports: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
    for task in state
        .tasks
        .values()
        .filter(|t| !t.state.is_terminal() && reporting(t))
    {
        let report = |state, exit_code, container_id: Option<String>| TaskReport {
            health: None,
            health_message: None,
            id: task.id.clone(),
            state,
            container_id,
            exit_code,
            error: None,
            message: None,
            address: None,
            ports: Vec::new(),
        };
        let report = if task.desired == DesiredState::Shutdown {
            report(TaskState::Shutdown, None, None)
        } else if Some(&task.id) == crashed {
            report(TaskState::Failed, Some(1), None)
        } else if task.state == TaskState::Assigned {
            report(TaskState::Running, None, Some(format!("c-{}", task.id)))
        } else {
            continue;
        };
        let worker = task.worker.clone().unwrap_or_default();
        reports.entry(worker).or_default().push(report);
    }
    reports
}

/// Property 6 (and a task is never moved): between two states, every task kept its
/// identity and worker, its state only moved forward, and it was never wanted again after
/// being stopped.
fn check_forward(old: &ClusterState, new: &ClusterState) -> Result<(), TestCaseError> {
    for (id, before) in &old.tasks {
        let Some(after) = new.tasks.get(id) else {
            continue;
        };
        prop_assert!(
            before.state.can_become(after.state),
            "task {id} went from {:?} to {:?}",
            before.state,
            after.state
        );
        prop_assert!(
            !(before.desired == DesiredState::Shutdown && after.desired == DesiredState::Running),
            "task {id} was wanted again after being stopped"
        );
        prop_assert_eq!(
            (&before.service, before.slot, before.spec_version),
            (&after.service, after.slot, after.spec_version),
            "task {} changed identity",
            id
        );
        if before.worker.is_some() {
            prop_assert_eq!(&before.worker, &after.worker, "task {} moved", id);
        }
    }
    Ok(())
}

/// Property 2, second half: a step places only tasks that were pending, only on ready
/// workers, and a placed task is assigned.
fn check_placements(
    before: &ClusterState,
    after: &ClusterState,
    changes: &[Change],
) -> Result<(), TestCaseError> {
    for change in changes {
        let Change::PutTask(task) = change else {
            continue;
        };
        let Some(name) = &task.worker else {
            continue;
        };
        let placed_now = before
            .tasks
            .get(&task.id)
            .is_none_or(|t| t.worker.is_none());
        if !placed_now {
            continue;
        }
        prop_assert!(
            before.tasks.get(&task.id).is_none_or(|t| t.is_pending()),
            "task {} was placed without being pending",
            task.id
        );
        let status = after.workers.get(name).map(|w| w.status);
        prop_assert_eq!(
            status,
            Some(WorkerStatus::Ready),
            "task {} placed on {}",
            &task.id,
            name
        );
        prop_assert_eq!(task.state, TaskState::Assigned);
    }
    Ok(())
}

fn same_records(a: &ClusterState, b: &ClusterState) -> bool {
    a.services == b.services
        && a.tasks == b.tasks
        && a.workers == b.workers
        && a.counters == b.counters
}

/// Whether `task` sits on a draining worker while its service's move waits for a worker
/// to take a replacement (its own slot's, or the slot moving before it: one at a time).
/// It keeps running until a replacement can be placed.
fn waits_to_leave(state: &ClusterState, task: &Task) -> bool {
    let draining = task
        .worker
        .as_ref()
        .and_then(|w| state.workers.get(w))
        .is_some_and(|w| w.status == WorkerStatus::Draining);
    draining
        && state
            .tasks_of_service(&task.service)
            .any(|t| t.id != task.id && t.is_pending())
}

fn active_tasks<'a>(state: &'a ClusterState, service: &str) -> Vec<&'a Task> {
    state
        .tasks_of_service(service)
        .filter(|t| t.is_active())
        .collect()
}

/// The invariants that hold in every settled state.
fn check_settled(state: &ClusterState) -> Result<(), TestCaseError> {
    let any_ready = state
        .workers
        .values()
        .any(|w| w.status == WorkerStatus::Ready);
    let mut names: BTreeSet<&String> = state.services.keys().collect();
    names.extend(state.services_with_tasks());
    for name in names {
        let active = active_tasks(state, name);
        match state.services.get(name) {
            // Property 1: exactly one active task per slot 0..replicas, of the current
            // version.
            // A replica leaving a draining worker whose replacement cannot be placed keeps
            // running beside it (a drain never takes a service below its replicas).
            Some(service) => {
                let slots: Vec<u32> = {
                    let mut s: Vec<u32> = active.iter().map(|t| t.slot).collect();
                    s.sort_unstable();
                    // Two tasks of a slot only while one leaves a draining worker.
                    for pair in s.windows(2).filter(|p| p[0] == p[1]) {
                        let leaving = active
                            .iter()
                            .filter(|t| t.slot == pair[0] && waits_to_leave(state, t))
                            .count();
                        prop_assert_eq!(leaving, 1, "slot {} of {} has two tasks", pair[0], name);
                    }
                    s.dedup();
                    s
                };
                let wanted: Vec<u32> = (0..service.spec.replicas).collect();
                prop_assert_eq!(slots, wanted, "active slots of service {}", name);
                for task in &active {
                    prop_assert!(
                        task.runs(service),
                        "task {:?} runs an old template of {:?}",
                        task,
                        service
                    );
                    prop_assert_eq!(&task.image, &service.spec.image);
                }
            }
            // Property 7: a deleted service keeps nothing running.
            None => prop_assert!(active.is_empty(), "deleted service {name} has active tasks"),
        }
        // Finished tasks are kept only as recent history of slots still wanted.
        let mut finished: BTreeMap<u32, usize> = BTreeMap::new();
        for task in state
            .tasks_of_service(name)
            .filter(|t| t.state.is_terminal())
        {
            *finished.entry(task.slot).or_default() += 1;
        }
        let replicas = state.services.get(name).map_or(0, |s| s.spec.replicas);
        for (slot, n) in finished {
            let keep = if slot < replicas { HISTORY_PER_SLOT } else { 0 };
            prop_assert!(n <= keep, "{n} finished tasks kept for {name} slot {slot}");
        }
    }

    for task in state.tasks.values().filter(|t| t.is_active()) {
        match &task.worker {
            // Property 2: nothing active sits on a worker that cannot run it, but for a
            // replica leaving a draining worker while its replacement waits for one.
            Some(name) => {
                let status = state.workers.get(name).map(|w| w.status);
                prop_assert!(
                    status == Some(WorkerStatus::Ready) || waits_to_leave(state, task),
                    "active task {} on {} ({:?})",
                    &task.id,
                    name,
                    status
                );
            }
            None => {
                prop_assert_eq!(task.state, TaskState::Pending);
                // Property 5: a task waits only when no worker can take it (workers here
                // have no capacity limit), and then it says why.
                prop_assert!(!any_ready, "task {} pending beside a ready worker", task.id);
                prop_assert!(
                    task.message.contains("no worker"),
                    "pending task {} says {:?}",
                    task.id,
                    task.message
                );
            }
        }
    }

    // A task asked to stop must be somewhere an agent can stop it; one that was never
    // placed has nothing to stop and would otherwise stay pending forever.
    for task in state
        .tasks
        .values()
        .filter(|t| !t.state.is_terminal() && t.desired == DesiredState::Shutdown)
    {
        let status = task
            .worker
            .as_ref()
            .and_then(|w| state.workers.get(w))
            .map(|w| w.status);
        prop_assert!(
            matches!(status, Some(WorkerStatus::Ready | WorkerStatus::Draining)),
            "task {} is stopping in state {:?} on {:?}",
            task.id,
            task.state,
            task.worker
        );
    }

    // The indexes `apply` keeps agree with the records, since reconcile and schedule read
    // only through them.
    let pending: BTreeSet<&String> = state.pending_tasks().map(|t| &t.id).collect();
    let expected: BTreeSet<&String> = state
        .tasks
        .values()
        .filter(|t| t.is_pending())
        .map(|t| &t.id)
        .collect();
    prop_assert_eq!(pending, expected, "pending index");
    for task in state.tasks.values() {
        prop_assert!(state
            .tasks_of_service(&task.service)
            .any(|t| t.id == task.id));
        if let Some(w) = &task.worker {
            prop_assert!(state.tasks_on_worker(w).any(|t| t.id == task.id));
        }
    }
    // The per-worker counts equal a recount, for every worker that ever held a task.
    let mut holders: BTreeSet<&String> = state.workers.keys().collect();
    holders.extend(state.tasks.values().filter_map(|t| t.worker.as_ref()));
    for worker in holders {
        let on = || state.tasks_on_worker(worker);
        let load = state.load_of(worker);
        prop_assert_eq!(load.active as usize, on().filter(|t| t.is_active()).count());
        prop_assert_eq!(load.live as usize, on().filter(|t| t.is_live()).count());
        prop_assert_eq!(
            load.running as usize,
            on().filter(|t| t.state == TaskState::Running).count()
        );
    }
    Ok(())
}

/// The active task of each slot of a service.
/// The active tasks of each slot (two while one leaves a draining worker).
fn active_by_slot(state: &ClusterState, service: &str) -> BTreeMap<u32, BTreeSet<String>> {
    let mut slots: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for task in active_tasks(state, service) {
        slots.entry(task.slot).or_default().insert(task.id.clone());
    }
    slots
}

/// Property 4: a scale-down from `n` to `m` stops exactly the tasks of slots `m..n` and
/// keeps the tasks of slots `0..m`.
fn check_scale_down(
    before: &ClusterState,
    after: &ClusterState,
    changes: &[Change],
    service: &str,
) -> Result<(), TestCaseError> {
    let (Some(old), Some(new)) = (before.services.get(service), after.services.get(service)) else {
        return Ok(());
    };
    let (n, m) = (old.spec.replicas, new.spec.replicas);
    // Only a plain scale: not a new template, nor one a failed rollout rolled back
    // during the settle (a version more).
    if m >= n || !old.spec.same_template(&new.spec) || new.version != old.version + 1 {
        return Ok(());
    }
    let was = active_by_slot(before, service);
    let stopped: BTreeSet<&String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::PutTask(t) if t.service == service && t.desired == DesiredState::Shutdown => {
                Some(t)
            }
            _ => None,
        })
        .filter(|t| {
            before
                .tasks
                .get(&t.id)
                .is_some_and(|b| b.desired == DesiredState::Running)
        })
        .map(|t| &t.id)
        .collect();
    let expected: BTreeSet<&String> = was.range(m..).flat_map(|(_, ids)| ids).collect();
    prop_assert_eq!(
        stopped,
        expected,
        "stopped by scaling {} from {} to {}",
        service,
        n,
        m
    );
    let kept: BTreeMap<u32, BTreeSet<String>> =
        was.range(..m).map(|(s, ids)| (*s, ids.clone())).collect();
    prop_assert_eq!(active_by_slot(after, service), kept);
    Ok(())
}

fn ready_workers(state: &ClusterState) -> Vec<&String> {
    state
        .workers
        .values()
        .filter(|w| w.status == WorkerStatus::Ready)
        .map(|w| &w.name)
        .collect()
}

/// Runs the operations on a cluster whose workers start with `statuses`, checking every
/// property after each step.
fn run_model(statuses: &[WorkerStatus], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(statuses)?;
    for op in ops {
        let before = sim.state.clone();
        let changes = sim.step(op)?;
        check_forward(&before, &sim.state)?;
        check_settled(&sim.state)?;

        match *op {
            Op::Scale { service, .. } | Op::Put { service, .. } => {
                check_scale_down(&before, &sim.state, &changes, SERVICES[service])?;
            }
            // Property 5, second half: when the first worker comes back, everything
            // waiting lands on it.
            Op::SetWorker {
                worker: i,
                status: WorkerStatus::Ready,
            } if ready_workers(&before).is_empty() => {
                let name = worker_name(i);
                for task in sim.state.tasks.values().filter(|t| t.is_active()) {
                    prop_assert_eq!(task.worker.as_ref(), Some(&name));
                    // Placed, and started by its agent while the pass settled.
                    prop_assert_eq!(task.state, TaskState::Running);
                }
            }
            _ => {}
        }

        // Only a worker going down relocates tasks, and then each task it was running.
        let lost_with_worker = match *op {
            Op::SetWorker {
                worker: i,
                status: WorkerStatus::Down,
            } => before
                .tasks_on_worker(&worker_name(i))
                .filter(|t| t.is_active())
                .count(),
            _ => 0,
        };
        prop_assert_eq!(
            sim.state.counters.containers_relocated - before.counters.containers_relocated,
            lost_with_worker as u64,
            "containers_relocated after {:?}",
            op
        );
    }
    Ok(())
}

/// Property 3: every service's active tasks are spread within one across workers.
fn check_spread(state: &ClusterState) -> Result<(), TestCaseError> {
    for name in state.services.keys() {
        let mut per_worker: BTreeMap<&String, usize> =
            state.workers.keys().map(|w| (w, 0)).collect();
        for task in active_tasks(state, name) {
            let w = task
                .worker
                .as_ref()
                .expect("every task is placed when all workers are ready");
            *per_worker.get_mut(w).expect("placed on a known worker") += 1;
        }
        let most = per_worker.values().max().copied().unwrap_or(0);
        let least = per_worker.values().min().copied().unwrap_or(0);
        prop_assert!(most - least <= 1, "service {name} spread {per_worker:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Properties 1, 2, 4, 5, 6 and 7 under everything: service changes, workers going
    /// down, draining and coming back, and tasks crashing.
    #[test]
    fn control_loop_keeps_its_promises(
        (statuses, ops) in prop::collection::vec(status_strategy(), 1..=4)
            .prop_flat_map(|statuses| {
                let n = statuses.len();
                (Just(statuses), prop::collection::vec(any_op(n), 1..40))
            })
    ) {
        run_model(&statuses, &ops)?;
    }

    /// Property 3: with every worker ready throughout, each service stays spread within
    /// one task per worker through creates, scales, image changes and deletes.
    /// Agents report but nothing crashes: a crashed task's replacement may go to another
    /// worker tied on the ranking, and a later scale-down, which stops the highest slots
    /// wherever they run (property 4), can then leave a spread of two. That is the
    /// price of stable slot ids, not a scheduling bug, so it is kept out of this test.
    #[test]
    fn spread_stays_within_one(
        workers in 2usize..=6,
        ops in prop::collection::vec(service_op(false), 1..40),
    ) {
        let mut sim = Sim::new(&vec![WorkerStatus::Ready; workers])?;
        for op in &ops {
            sim.step(op)?;
            check_settled(&sim.state)?;
            check_spread(&sim.state)?;
        }
    }
}
