//! Property tests of rollouts (`rollout::plan`, run by reconcile inside `step`): random
//! updates (good ones, ones whose replicas fail, ones that supersede a rollout under
//! way), scaling and crashes are driven through the core's `step` with agents that start,
//! probe and stop tasks, and after every step the promises of the update policy are
//! checked:
//! - start-first: active tasks never exceed `replicas + parallelism`, and a healthy
//!   replica is stopped only once another healthy task serves its slot (the new version's,
//!   or, where a rollback met a slot mid-way, another old one);
//! - stop-first: never more than `replicas` active, and the rollout never takes more
//!   than `parallelism` slots out of service;
//! - once the agents are left alone, every rollout ends: completed (every slot runs the
//!   current version, healthy), rolled back (a failed update's previous version runs
//!   again, and the service says why), or paused (as the policy asked).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use mycluster_core::commands::CommandError;
use mycluster_core::rollout::{RolloutKind, RolloutState};
use mycluster_core::service::{
    FailureAction, Health, HealthCheck, Probe, ServicePatch, UpdateOrder, UpdatePolicy,
};
use mycluster_core::span::Span;
use mycluster_core::step::{
    NothingHeard, PatchService, PutService, Reconcile, Report, RestartService, RollbackService,
};
use mycluster_core::wire::TaskReport;
use mycluster_core::{
    ClusterState, Command, DesiredState, Millis, SequentialIds, ServiceSpec, Task, TaskState,
    Worker, WorkerStatus,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use support::step_at;

const SERVICE: &str = "web";
/// Images whose replicas never become healthy: they fail soon after they start.
const BAD: &str = "bad";

#[derive(Clone, Debug)]
enum Op {
    /// A new image: good ones become healthy, bad ones fail.
    Update {
        good: bool,
    },
    Scale(u32),
    /// One running replica (modulo their number) crashes.
    Crash(usize),
    /// The agents do one round of work and a second passes.
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<bool>().prop_map(|good| Op::Update { good }),
        // Not to zero: a rollout with nothing to replace completes at once, whatever the
        // image, so a bad one would then count as the version to go back to.
        1 => (1u32..=6).prop_map(Op::Scale),
        1 => (0usize..16).prop_map(Op::Crash),
        8 => Just(Op::Tick),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Case {
    order: UpdateOrder,
    parallelism: u32,
    action: FailureAction,
    checked: bool,
    replicas: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(UpdateOrder::StartFirst), Just(UpdateOrder::StopFirst)],
        0u32..=3,
        prop_oneof![
            3 => Just(FailureAction::Rollback),
            1 => Just(FailureAction::Pause),
            1 => Just(FailureAction::Continue),
        ],
        any::<bool>(),
        1u32..=6,
    )
        .prop_map(|(order, parallelism, action, checked, replicas)| Case {
            order,
            parallelism,
            action,
            checked,
            replicas,
        })
}

struct Sim {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
    images: u32,
}

impl Sim {
    fn new(case: &Case) -> Result<Sim, TestCaseError> {
        let workers = (1..=3).map(|i| Worker {
            name: format!("w{i}"),
            address: format!("w{i}:7001"),
            labels: BTreeMap::new(),
            capacity: None,
            driver: None,
            status: WorkerStatus::Ready,
            registered_at: 0,
            updated_at: 0,
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
        });
        let mut sim = Sim {
            state: ClusterState::from_parts([], [], workers, [], Default::default()),
            ids: SequentialIds::default(),
            now: 1_000,
            images: 0,
        };
        let spec = ServiceSpec {
            name: SERVICE.into(),
            image: Some("good:0".into()),
            replicas: case.replicas,
            command: None,
            env: BTreeMap::new(),
            healthcheck: case.checked.then(|| HealthCheck {
                start_period: Span(0),
                ..HealthCheck::new(Probe::Tcp { port: 80 })
            }),
            update: UpdatePolicy {
                parallelism: case.parallelism,
                order: case.order,
                failure_action: case.action,
                monitor: Span(2_000),
                ..UpdatePolicy::default()
            },
            ports: Vec::new(),
            stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
            proxy_protocol: false,
            constraints: Vec::new(),
            spread: None,
            resources: Default::default(),
            volumes: Vec::new(),
            restart: Default::default(),
            on_disconnect: Default::default(),
        };
        sim.run(PutService(spec))?;
        for _ in 0..20 {
            sim.tick()?;
        }
        Ok(sim)
    }

    fn run<C: Command>(&mut self, command: C) -> Result<(), TestCaseError> {
        let before = self.state.clone();
        if let Ok(stepped) = step_at(&self.state, command, self.now, &NothingHeard, &mut self.ids) {
            self.state = stepped.state;
        }
        check_step(&before, &self.state)
    }

    fn service(&self) -> Result<&mycluster_core::Service, TestCaseError> {
        self.state
            .services
            .get(SERVICE)
            .ok_or_else(|| TestCaseError::fail("the service is gone"))
    }

    /// The agents' round: assigned tasks start; running ones of a good image pass their
    /// probe, of a bad one fail; stopped ones end. Then a second passes and the
    /// orchestrator's periodic pass runs.
    fn tick(&mut self) -> Result<(), TestCaseError> {
        let mut by_worker: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
        for task in self.state.tasks.values().filter(|t| !t.state.is_terminal()) {
            let Some(worker) = task.worker.clone() else {
                continue;
            };
            let bad = task.image.as_deref().is_some_and(|i| i.starts_with(BAD));
            let report = |state, health| TaskReport {
                id: task.id.clone(),
                state,
                container_id: None,
                exit_code: (state == TaskState::Failed).then_some(1),
                error: None,
                message: None,
                health,
                health_message: None,
                address: None,
                ports: Vec::new(),
            };
            let report = match (task.desired, task.state) {
                (DesiredState::Shutdown, _) => report(TaskState::Shutdown, None),
                (_, TaskState::Assigned | TaskState::Starting) => {
                    report(TaskState::Running, Some(Health::Starting))
                }
                (_, TaskState::Running) if bad => {
                    report(TaskState::Failed, Some(Health::Unhealthy))
                }
                (_, TaskState::Running)
                    if task.healthcheck.is_some() && task.health != Some(Health::Healthy) =>
                {
                    report(TaskState::Running, Some(Health::Healthy))
                }
                _ => continue,
            };
            by_worker.entry(worker).or_default().push(report);
        }
        for (worker, tasks) in by_worker {
            self.run(Report {
                worker,
                instance: String::new(),
                tasks,
                removed_volumes: Vec::new(),
            })?;
        }
        self.now += 1_000;
        self.run(Reconcile)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Update { good } => {
                self.images += 1;
                let image = format!("{}:{}", if good { "good" } else { BAD }, self.images);
                self.run(PatchService {
                    name: SERVICE.into(),
                    patch: ServicePatch {
                        image: Some(image),
                        ..ServicePatch::default()
                    },
                })
            }
            Op::Scale(replicas) => self.run(PatchService {
                name: SERVICE.into(),
                patch: ServicePatch {
                    replicas: Some(replicas),
                    ..ServicePatch::default()
                },
            }),
            Op::Crash(k) => {
                let running: Vec<&Task> = self
                    .state
                    .tasks
                    .values()
                    .map(|t| t.as_ref())
                    .filter(|t| t.is_active() && t.state == TaskState::Running)
                    .collect();
                let Some(task) = (!running.is_empty()).then(|| running[k % running.len()]) else {
                    return Ok(());
                };
                let report = TaskReport {
                    id: task.id.clone(),
                    state: TaskState::Failed,
                    container_id: None,
                    exit_code: Some(137),
                    error: None,
                    message: None,
                    health: None,
                    health_message: None,
                    address: None,
                    ports: Vec::new(),
                };
                let worker = task.worker.clone().unwrap_or_default();
                self.run(Report {
                    worker,
                    instance: String::new(),
                    tasks: vec![report],
                    removed_volumes: Vec::new(),
                })
            }
            Op::Tick => self.tick(),
        }
    }
}

/// Serving: running, healthy, and wanted.
fn up(task: &Task) -> bool {
    task.is_active() && task.is_healthy()
}

/// The promises of one step, from the state before it to the state after it.
fn check_step(before: &ClusterState, after: &ClusterState) -> Result<(), TestCaseError> {
    let Some(service) = after.services.get(SERVICE) else {
        return Ok(());
    };
    let policy = service.spec.update;
    let replicas = service.spec.replicas;
    let batch = policy.batch(replicas);
    let tasks: Vec<&Task> = after.tasks_of_service(SERVICE).collect();
    let active = tasks.iter().filter(|t| t.is_active()).count() as u32;
    let bound = match policy.order {
        UpdateOrder::StartFirst => replicas + batch,
        UpdateOrder::StopFirst => replicas,
    };
    prop_assert!(
        active <= bound,
        "{active} active tasks for {replicas} replicas ({:?}, batch {batch})",
        policy.order
    );

    // Healthy replicas the step stopped, not because the service shrank.
    let stopped: Vec<&Task> = before
        .tasks_of_service(SERVICE)
        .filter(|t| up(t) && t.slot < replicas)
        .filter(|t| {
            after
                .tasks
                .get(&t.id)
                .is_some_and(|a| a.desired == DesiredState::Shutdown)
        })
        .collect();
    let serving_slots: BTreeSet<u32> = tasks.iter().filter(|t| up(t)).map(|t| t.slot).collect();
    match policy.order {
        UpdateOrder::StartFirst => {
            for task in &stopped {
                prop_assert!(
                    tasks.iter().any(|t| t.slot == task.slot && up(t)),
                    "start-first stopped healthy task {} of slot {} before another served the slot",
                    task.id,
                    task.slot
                );
            }
        }
        UpdateOrder::StopFirst => {
            if !stopped.is_empty() {
                let out = (0..replicas).filter(|s| !serving_slots.contains(s)).count() as u32;
                prop_assert!(
                    out <= batch,
                    "stop-first took slots out of service: {out} of {replicas} down, batch {batch}"
                );
            }
        }
    }
    Ok(())
}

/// Once left alone, the rollout has ended the way its policy says.
fn check_settled(sim: &Sim, last_good: Option<bool>) -> Result<(), TestCaseError> {
    let service = sim.service()?;
    let Some(rollout) = &service.rollout else {
        return Err(TestCaseError::fail("no rollout record"));
    };
    let active: Vec<&Task> = sim
        .state
        .tasks_of_service(SERVICE)
        .filter(|t| t.is_active())
        .collect();
    match rollout.state {
        RolloutState::Paused => {
            prop_assert!(rollout.reason.is_some(), "paused without a reason");
            return Ok(());
        }
        RolloutState::InProgress => {
            // Only a rollout whose replicas keep failing under `continue` stays under
            // way: its current version must be a bad one.
            prop_assert!(
                service.spec.update.failure_action == FailureAction::Continue
                    && service
                        .spec
                        .image
                        .as_deref()
                        .is_some_and(|i| i.starts_with(BAD)),
                "rollout still in progress with {:?}: {:?}",
                service.spec.image,
                active
            );
            return Ok(());
        }
        RolloutState::RolledBack => {
            prop_assert!(rollout.reason.is_some(), "rolled back without a reason");
        }
        RolloutState::Completed => {}
    }
    if service
        .spec
        .image
        .as_deref()
        .is_some_and(|i| i.starts_with(BAD))
    {
        // A bad version can only stay under `continue`, or when its rollout completed
        // with nothing to replace (zero replicas then; a later scale-up is no rollout).
        prop_assert!(
            service.spec.update.failure_action == FailureAction::Continue
                || rollout.state == RolloutState::Completed,
            "settled on a bad image: {:?}",
            rollout
        );
        return Ok(());
    }
    if last_good == Some(false) && service.spec.update.failure_action == FailureAction::Rollback {
        prop_assert_eq!(rollout.state, RolloutState::RolledBack);
    }
    let slots: Vec<u32> = {
        let mut s: Vec<u32> = active.iter().map(|t| t.slot).collect();
        s.sort_unstable();
        s
    };
    prop_assert_eq!(slots, (0..service.spec.replicas).collect::<Vec<_>>());
    for task in active {
        prop_assert!(task.runs(service), "task {} runs an old version", task.id);
        prop_assert!(up(task), "task {} is not healthy: {:?}", task.id, task);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn rollouts_keep_the_policys_promises(
        case in case(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut sim = Sim::new(&case)?;
        let mut last_good = None;
        for op in &ops {
            if let Op::Update { good } = op {
                last_good = Some(*good);
            }
            sim.apply(op)?;
        }
        for _ in 0..150 {
            sim.tick()?;
        }
        check_settled(&sim, last_good)?;
    }
}

/// The defaults, step by step: one slot at a time, the new task beside the old one, the
/// old one stopped only once the new one is healthy, then the next slot.
#[test]
fn a_start_first_update_replaces_one_slot_at_a_time() {
    let case = Case {
        order: UpdateOrder::StartFirst,
        parallelism: 1,
        action: FailureAction::Rollback,
        checked: true,
        replicas: 3,
    };
    let mut sim = Sim::new(&case).expect("created");
    sim.apply(&Op::Update { good: true }).expect("updated");
    let mut most_active = 0;
    for _ in 0..40 {
        sim.tick().expect("tick");
        let active = sim
            .state
            .tasks_of_service(SERVICE)
            .filter(|t| t.is_active())
            .count();
        most_active = most_active.max(active);
    }
    let service = sim.service().expect("service");
    let rollout = service.rollout.clone().expect("rollout");
    assert_eq!(rollout.state, RolloutState::Completed);
    assert_eq!(most_active, 4, "one extra task at a time");
    assert!(sim
        .state
        .tasks_of_service(SERVICE)
        .filter(|t| t.is_active())
        .all(|t| t.image.as_deref() == Some("good:1")));
}

/// A version whose replicas fail is rolled back after the first failure: the old
/// version's replicas keep serving, and the service says why.
#[test]
fn a_failing_update_is_rolled_back_and_says_why() {
    let case = Case {
        order: UpdateOrder::StartFirst,
        parallelism: 1,
        action: FailureAction::Rollback,
        checked: true,
        replicas: 4,
    };
    let mut sim = Sim::new(&case).expect("created");
    sim.apply(&Op::Update { good: false }).expect("updated");
    for _ in 0..30 {
        sim.tick().expect("tick");
        let serving = sim
            .state
            .tasks_of_service(SERVICE)
            .filter(|t| up(t))
            .count();
        assert!(
            serving >= 4,
            "only {serving} replicas served during the failed update"
        );
    }
    let service = sim.service().expect("service");
    assert_eq!(service.spec.image.as_deref(), Some("good:0"));
    let rollout = service.rollout.clone().expect("rollout");
    assert_eq!(rollout.state, RolloutState::RolledBack);
    let reason = rollout.reason.unwrap_or_default();
    assert!(
        reason.contains("version 2") && reason.contains("exited with code 1"),
        "{reason}"
    );
    assert_eq!(service.version, 3, "the rollback is a version of its own");
}

/// stop-first with parallelism 2: never more than `replicas` tasks, never fewer than
/// `replicas - 2` serving, and done in the end.
#[test]
fn a_stop_first_update_takes_out_at_most_parallelism_slots() {
    let case = Case {
        order: UpdateOrder::StopFirst,
        parallelism: 2,
        action: FailureAction::Rollback,
        checked: false,
        replicas: 4,
    };
    let mut sim = Sim::new(&case).expect("created");
    sim.apply(&Op::Update { good: true }).expect("updated");
    let mut fewest = u32::MAX;
    for _ in 0..40 {
        sim.tick().expect("tick");
        let serving = sim
            .state
            .tasks_of_service(SERVICE)
            .filter(|t| up(t))
            .count() as u32;
        fewest = fewest.min(serving);
    }
    assert_eq!(fewest, 2);
    let service = sim.service().expect("service");
    assert_eq!(
        service.rollout.as_ref().map(|r| r.state),
        Some(RolloutState::Completed)
    );
}

/// `restart` replaces every task with the same spec; `rollback` goes to the version
/// before the current one, replicas included; with no version before, it is refused.
#[test]
fn restart_and_rollback_are_rollouts_of_their_own() {
    let case = Case {
        order: UpdateOrder::StartFirst,
        parallelism: 1,
        action: FailureAction::Rollback,
        checked: true,
        replicas: 2,
    };
    let mut sim = Sim::new(&case).expect("created");
    let refused = step_at(
        &sim.state,
        RollbackService(SERVICE.into()),
        sim.now,
        &NothingHeard,
        &mut sim.ids,
    );
    assert!(matches!(refused, Err(CommandError::Conflict(m)) if m.contains("no previous version")));

    let before: BTreeSet<String> = sim
        .state
        .tasks_of_service(SERVICE)
        .filter(|t| t.is_active())
        .map(|t| t.id.clone())
        .collect();
    sim.run(RestartService(SERVICE.into())).expect("restart");
    for _ in 0..30 {
        sim.tick().expect("tick");
    }
    let after: BTreeSet<String> = sim
        .state
        .tasks_of_service(SERVICE)
        .filter(|t| t.is_active())
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(after.len(), 2);
    assert!(before.is_disjoint(&after), "every task was replaced");
    let service = sim.service().expect("service").clone();
    assert_eq!(
        service.rollout.as_ref().map(|r| (r.kind, r.state)),
        Some((RolloutKind::Restart, RolloutState::Completed))
    );

    sim.apply(&Op::Update { good: true }).expect("updated");
    sim.apply(&Op::Scale(3)).expect("scaled");
    for _ in 0..30 {
        sim.tick().expect("tick");
    }
    sim.run(RollbackService(SERVICE.into())).expect("rollback");
    for _ in 0..30 {
        sim.tick().expect("tick");
    }
    let service = sim.service().expect("service");
    // Back to the version before the scale: the new image, 2 replicas.
    assert_eq!(
        (service.spec.image.as_deref(), service.spec.replicas),
        (Some("good:1"), 2)
    );
    let rollout = service.rollout.clone().expect("rollout");
    assert_eq!(
        (rollout.kind, rollout.state),
        (RolloutKind::Rollback, RolloutState::Completed)
    );
    assert_eq!(
        service.history.last().map(|v| v.cause.as_str()),
        Some("rollback to version 3")
    );
}

/// A rollback whose version fails too is paused, saying so, instead of replacing
/// replicas forever.
#[test]
fn a_rollback_that_fails_too_is_paused() {
    let case = Case {
        order: UpdateOrder::StartFirst,
        parallelism: 1,
        action: FailureAction::Rollback,
        checked: false,
        replicas: 2,
    };
    let mut sim = Sim::new(&case).expect("created");
    // The running version turns bad under its replicas (its image was rebuilt, say):
    // modelled as an update to a bad image that completes with nothing to replace...
    sim.apply(&Op::Scale(1)).expect("scaled");
    for _ in 0..10 {
        sim.tick().expect("tick");
    }
    sim.run(PatchService {
        name: SERVICE.into(),
        patch: ServicePatch {
            replicas: Some(0),
            ..ServicePatch::default()
        },
    })
    .expect("to zero");
    sim.apply(&Op::Update { good: false })
        .expect("bad:1 with nothing to replace");
    sim.tick().expect("tick");
    sim.apply(&Op::Scale(2))
        .expect("scaled up: bad:1 crash-loops");
    // ...then an update that fails: its rollback goes back to bad:1, which fails too.
    sim.apply(&Op::Update { good: false }).expect("bad:2");
    for _ in 0..40 {
        sim.tick().expect("tick");
    }
    let service = sim.service().expect("service");
    let rollout = service.rollout.clone().expect("rollout");
    assert_eq!(
        (rollout.kind, rollout.state),
        (RolloutKind::Rollback, RolloutState::Paused)
    );
    let reason = rollout.reason.unwrap_or_default();
    assert!(reason.contains("the rollback failed too"), "{reason}");
}

/// The failure ratio is of slots: one slot failing again and again is one failure.
#[test]
fn the_failure_ratio_counts_slots_not_attempts() {
    let case = Case {
        order: UpdateOrder::StartFirst,
        parallelism: 4,
        action: FailureAction::Rollback,
        checked: false,
        replicas: 4,
    };
    let mut sim = Sim::new(&case).expect("created");
    sim.run(PatchService {
        name: SERVICE.into(),
        patch: ServicePatch {
            update: Some(UpdatePolicy {
                max_failure_ratio: mycluster_core::service::Ratio(0.5),
                ..sim.service().expect("service").spec.update
            }),
            ..ServicePatch::default()
        },
    })
    .expect("policy");
    sim.apply(&Op::Update { good: true }).expect("updated");
    // Slot 0's new task crashes every time it runs; the others come up.
    for _ in 0..120 {
        sim.tick().expect("tick");
        let crashing: Vec<Task> = sim
            .state
            .tasks_of_service(SERVICE)
            .filter(|t| {
                t.slot == 0
                    && t.is_active()
                    && t.state == TaskState::Running
                    && t.image.as_deref() == Some("good:1")
            })
            .cloned()
            .collect();
        for task in crashing {
            let worker = task.worker.clone().unwrap_or_default();
            sim.run(Report {
                worker,
                instance: String::new(),
                tasks: vec![TaskReport {
                    id: task.id.clone(),
                    state: TaskState::Failed,
                    container_id: None,
                    exit_code: Some(1),
                    error: None,
                    message: None,
                    health: None,
                    health_message: None,
                    address: None,
                    ports: Vec::new(),
                }],
                removed_volumes: Vec::new(),
            })
            .expect("crash");
        }
    }
    let service = sim.service().expect("service");
    let rollout = service.rollout.clone().expect("rollout");
    assert_eq!(
        service.spec.image.as_deref(),
        Some("good:1"),
        "not rolled back"
    );
    assert_eq!(rollout.failed_slots, vec![0]);
    assert!(rollout.failed.len() >= 2, "{rollout:?}");
    assert_eq!(rollout.state, RolloutState::InProgress);
}

/// A new task without a health check is due healthy when its monitor runs out: the
/// orchestrator runs its pass then (`rollout::next_due`).
#[test]
fn the_next_pass_is_due_when_a_new_task_s_monitor_runs_out() {
    let case = Case {
        order: UpdateOrder::StartFirst,
        parallelism: 1,
        action: FailureAction::Rollback,
        checked: false,
        replicas: 2,
    };
    let mut sim = Sim::new(&case).expect("created");
    assert_eq!(
        mycluster_core::rollout::next_due(&sim.state, sim.now),
        None,
        "settled"
    );
    sim.apply(&Op::Update { good: true }).expect("updated");
    sim.tick().expect("the new task runs");
    let started = sim
        .state
        .tasks_of_service(SERVICE)
        .find(|t| t.image.as_deref() == Some("good:1") && t.state == TaskState::Running)
        .and_then(|t| t.started_at)
        .expect("a new task running");
    assert_eq!(
        mycluster_core::rollout::next_due(&sim.state, sim.now),
        Some(started + 2_000 + mycluster_core::rollout::REPORT_LAG)
    );
}
