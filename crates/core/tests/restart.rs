//! The restart policy, scenario by scenario: what happens to a slot when its task exits
//! 0 or non-zero under `any`, `on-failure` and `none`, and after `max_attempts`.

mod support;

use std::collections::BTreeMap;

use mycluster_core::service::{RestartCondition, RestartPolicy};
use mycluster_core::span::Span;
use mycluster_core::step::{PutService, Reconcile, Register, Report};
use mycluster_core::wire::{Registration, TaskReport};
use mycluster_core::{
    ClusterState, Command, DesiredState, Limits, Millis, SequentialIds, ServiceSpec, Task,
    TaskState,
};
use support::step_with;

struct Sim {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
}

impl Sim {
    fn new(restart: RestartPolicy, replicas: u32) -> Sim {
        let mut sim = Sim {
            state: ClusterState::default(),
            ids: SequentialIds::default(),
            now: 1_000,
        };
        sim.run(Register::open(Registration {
            name: "w1".into(),
            address: "w1:7001".into(),
            labels: BTreeMap::new(),
            capacity: None,
            driver: Default::default(),
            instance: String::new(),
            resources: Default::default(),
            host: String::new(),
            agent_ca_sha256: None,
        }));
        sim.run(PutService(ServiceSpec {
            name: "job".into(),
            image: None,
            replicas,
            command: Some(vec!["true".into()]),
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
            restart,
            on_disconnect: Default::default(),
        }));
        sim
    }

    fn run<C: Command>(&mut self, command: C) -> Option<C::Outcome> {
        let stepped = step_with(
            &self.state,
            command,
            self.now,
            &Limits::default(),
            &mut self.ids,
        );
        let stepped = stepped.ok()?;
        self.state = stepped.state;
        Some(stepped.outcome)
    }

    /// `seconds` pass; every task the agent holds runs, and exits with `code`.
    fn exit_all(&mut self, code: i64, seconds: u64) {
        self.now += seconds * 1000;
        self.run(Reconcile);
        let live: Vec<Task> = self
            .state
            .tasks
            .values()
            .filter(|t| t.worker.is_some() && !t.state.is_terminal())
            .map(|t| t.as_ref().clone())
            .collect();
        let mut reports = Vec::new();
        for task in live {
            let state = match (task.desired, code) {
                (DesiredState::Shutdown, _) => TaskState::Shutdown,
                (_, 0) => TaskState::Complete,
                _ => TaskState::Failed,
            };
            let mut report = TaskReport::new(task.id.clone(), state);
            report.exit_code = Some(code);
            reports.push(report);
        }
        self.run(Report {
            worker: "w1".into(),
            instance: String::new(),
            tasks: reports,
            removed_volumes: Vec::new(),
        });
        self.run(Reconcile);
    }

    fn count(&self, state: TaskState) -> usize {
        self.state
            .tasks
            .values()
            .filter(|t| t.state == state)
            .count()
    }

    fn active(&self) -> usize {
        self.state.tasks.values().filter(|t| t.is_active()).count()
    }
}

fn policy(condition: RestartCondition, max_attempts: u32) -> RestartPolicy {
    RestartPolicy {
        condition,
        max_attempts,
        delay: Span::secs(1),
    }
}

/// The case: a `restart: none` service of 3 replicas whose command exits 0 ends
/// with 3 `complete` tasks and none running, and stays so.
#[test]
fn a_batch_of_three_runs_once_and_is_complete() {
    let mut sim = Sim::new(policy(RestartCondition::None, 0), 3);
    assert_eq!(sim.active(), 3);
    sim.exit_all(0, 1);
    for _ in 0..5 {
        sim.exit_all(0, 60);
    }
    assert_eq!(sim.count(TaskState::Complete), 3);
    assert_eq!(sim.active(), 0, "nothing runs again");
    let done = sim
        .state
        .tasks
        .values()
        .next()
        .map(|t| t.message.clone())
        .unwrap_or_default();
    assert_eq!(done, "completed; not restarted (restart condition none)");
}

#[test]
fn on_failure_replaces_failures_only() {
    let mut sim = Sim::new(policy(RestartCondition::OnFailure, 0), 2);
    sim.exit_all(1, 1);
    assert_eq!(sim.active(), 2, "a first failure is replaced at once");
    // The second failure in a row: replaced after the delay.
    sim.exit_all(1, 0);
    assert_eq!(sim.active(), 0, "waits for the restart delay");
    sim.now += 2_000;
    sim.run(Reconcile);
    assert_eq!(sim.active(), 2, "failures are replaced");
    sim.exit_all(0, 1);
    sim.exit_all(0, 60);
    assert_eq!(sim.active(), 0, "a completed slot is done");
    assert_eq!(sim.count(TaskState::Complete), 2);
}

#[test]
fn any_replaces_even_a_task_that_completed() {
    let mut sim = Sim::new(RestartPolicy::default(), 1);
    sim.exit_all(0, 1);
    assert_eq!(sim.active(), 1, "replaced at once");
}

#[test]
fn none_leaves_a_failed_slot_failed() {
    let mut sim = Sim::new(policy(RestartCondition::None, 0), 1);
    sim.exit_all(3, 1);
    sim.exit_all(3, 60);
    assert_eq!((sim.active(), sim.count(TaskState::Failed)), (0, 1));
}

#[test]
fn max_attempts_bounds_the_restarts_of_a_slot() {
    let mut sim = Sim::new(policy(RestartCondition::OnFailure, 2), 1);
    // The first run and two restarts fail a second after they start (a run of 30 s
    // would be a healthy one, which starts the count again); no third restart, however
    // long the backoff is waited for.
    for _ in 0..120 {
        sim.exit_all(1, 1);
    }
    assert_eq!(sim.active(), 0);
    assert_eq!(sim.count(TaskState::Failed), 3);
    let last = sim
        .state
        .tasks
        .values()
        .max_by_key(|t| t.created_at)
        .map(|t| t.message.clone())
        .unwrap_or_default();
    assert!(last.contains("restart max_attempts 2"), "{last}");
}

/// Updating a batch job runs the new version once per slot: its replicas completing is
/// the rollout's success, not a failure to roll back from.
#[test]
fn an_updated_batch_runs_the_new_version_once() {
    let mut sim = Sim::new(policy(RestartCondition::None, 0), 2);
    sim.exit_all(0, 1);
    sim.exit_all(0, 60);
    let mut spec = sim.state.services["job"].spec.clone();
    spec.command = Some(vec!["echo".into(), "again".into()]);
    sim.run(PutService(spec.clone()));
    assert_eq!(sim.active(), 2, "the new version runs");
    for _ in 0..5 {
        sim.exit_all(0, 1);
    }
    let service = &sim.state.services["job"];
    let rollout = service.rollout.clone().expect("a rollout");
    assert_eq!(
        (rollout.state, rollout.reason),
        (mycluster_core::rollout::RolloutState::Completed, None)
    );
    assert_eq!(service.spec.command, spec.command, "not rolled back");
    let ran_new = sim
        .state
        .tasks
        .values()
        .filter(|t| t.command == spec.command && t.state == TaskState::Complete)
        .count();
    assert_eq!((ran_new, sim.active()), (2, 0));
}

/// The backoff: the first failure of a slot is replaced at once, the second in a row
/// after `delay`, then twice as long each time, up to a minute (or `delay`, if longer).
#[test]
fn the_first_failure_is_replaced_at_once_then_the_backoff_doubles() {
    use mycluster_core::reconcile::{restart_delay, MAX_RESTART_DELAY};
    let waits: Vec<Millis> = (0..=9).map(|n| restart_delay(n, 1_000)).collect();
    assert_eq!(
        waits,
        [0, 0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    );
    assert_eq!(restart_delay(u32::MAX, 1_000), MAX_RESTART_DELAY);
    assert_eq!(restart_delay(2, 90_000), 90_000, "a longer delay is kept");
    assert_eq!(restart_delay(5, 90_000), 90_000);
}

/// A crash reported by an agent is replaced in the very commit of the report: the
/// replacement is placed on a worker (assigned) by the `Report` step itself, not by a
/// later pass.
#[test]
fn a_first_crash_is_replaced_by_its_own_report() {
    let mut sim = Sim::new(RestartPolicy::default(), 1);
    let first = sim
        .state
        .tasks
        .values()
        .find(|t| t.is_active())
        .map(|t| t.id.clone())
        .expect("a task");
    sim.now += 5_000;
    let mut crash = TaskReport::new(first.clone(), TaskState::Failed);
    crash.exit_code = Some(137);
    sim.run(Report {
        worker: "w1".into(),
        instance: String::new(),
        tasks: vec![crash],
        removed_volumes: Vec::new(),
    });
    let replacement: Vec<&Task> = sim
        .state
        .tasks
        .values()
        .map(AsRef::as_ref)
        .filter(|t| t.is_active() && t.id != first)
        .collect();
    assert_eq!(replacement.len(), 1, "replaced in the report's commit");
    assert_eq!(
        (replacement[0].state, replacement[0].worker.as_deref()),
        (TaskState::Assigned, Some("w1")),
        "and placed"
    );
    assert_eq!(replacement[0].failures, 1);
}
