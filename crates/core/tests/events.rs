//! Events derived from real commands: each command is stepped as the manager steps it,
//! its changes compacted as the manager commits them, and `events::derive` must say
//! exactly what happened — a service created, scaled, deleted; a task's new state with
//! its reason; a worker down with each of its slots relocated to a named replacement
//! (as many as `containers.relocated` grew); a drain and an activation; a rollout started
//! and completed — and nothing for changes that alter none of that.

mod support;

use std::collections::BTreeMap;

use mycluster_core::events::{derive, Event};
use mycluster_core::service::ServicePatch;
use mycluster_core::state::compact;
use mycluster_core::step::{
    DeclareDown, DeleteService, NothingHeard, PatchService, PutService, Reconcile, Register,
    Report, RestartService, SetDrain,
};
use mycluster_core::wire::{Registration, TaskReport};
use mycluster_core::{ClusterState, Command, Millis, SequentialIds, TaskState, WorkerStatus};
use support::sim::spec;
use support::step_at;

struct Cluster {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            state: ClusterState::default(),
            ids: SequentialIds::default(),
            now: 1_000,
        }
    }

    /// Steps `command` and returns the events of its commit.
    fn run<C: Command>(&mut self, command: C) -> Vec<Event> {
        self.now += 1_000;
        let stepped = step_at(&self.state, command, self.now, &NothingHeard, &mut self.ids)
            .unwrap_or_else(|e| panic!("refused: {e}"));
        let events = derive(&self.state, &compact(&stepped.changes));
        self.state = stepped.state;
        events
    }

    fn join(&mut self, name: &str) -> Vec<Event> {
        self.run(Register::open(Registration {
            name: name.into(),
            address: format!("{name}:7001"),
            labels: BTreeMap::new(),
            capacity: None,
            driver: Default::default(),
            instance: String::new(),
            resources: Default::default(),
            host: "h".into(),
            agent_ca_sha256: None,
        }))
    }

    /// `worker` reports each of its live tasks in the state `what` gives.
    fn report(&mut self, worker: &str, what: impl Fn(&str) -> Option<TaskState>) -> Vec<Event> {
        let tasks: Vec<TaskReport> = self
            .state
            .tasks_on_worker(worker)
            .filter(|t| !t.state.is_terminal())
            .filter_map(|t| {
                let state = what(&t.id)?;
                let mut report = TaskReport::new(t.id.clone(), state);
                if state == TaskState::Running {
                    report.container_id = Some(format!("c-{}", t.id));
                }
                if state == TaskState::Failed {
                    report.exit_code = Some(137);
                }
                Some(report)
            })
            .collect();
        self.run(Report {
            worker: worker.into(),
            instance: String::new(),
            tasks,
            removed_volumes: Vec::new(),
        })
    }

    /// Every worker's tasks run (and stopped ones end).
    fn all_run(&mut self) -> Vec<Event> {
        let workers: Vec<String> = self.state.workers.keys().cloned().collect();
        let mut events = Vec::new();
        for worker in workers {
            let desired: BTreeMap<String, bool> = self
                .state
                .tasks_on_worker(&worker)
                .map(|t| {
                    (
                        t.id.clone(),
                        t.desired == mycluster_core::DesiredState::Running,
                    )
                })
                .collect();
            events.extend(self.report(&worker, |id| {
                Some(if desired.get(id).copied().unwrap_or(false) {
                    TaskState::Running
                } else {
                    TaskState::Shutdown
                })
            }));
        }
        events
    }

    fn task_of(&self, service: &str, slot: u32) -> String {
        self.state
            .tasks_of_service(service)
            .find(|t| t.slot == slot && !t.state.is_terminal())
            .map(|t| t.id.clone())
            .expect("a live task in the slot")
    }
}

/// One line per event: what a reader of the stream learns.
fn said(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::ServiceCreated {
                service,
                version,
                replicas,
            } => format!("created {service} v{version} x{replicas}"),
            Event::ServiceUpdated {
                service,
                version,
                replicas,
                previous_replicas,
            } => format!("updated {service} v{version} x{replicas} from {previous_replicas:?}"),
            Event::ServiceDeleted { service } => format!("deleted {service}"),
            Event::TaskState {
                task,
                service,
                slot,
                worker,
                state,
                previous,
                message,
                exit_code,
                ..
            } => format!(
                "task {task} {service}.{slot} on {} {} -> {} '{message}'{}",
                worker.as_deref().unwrap_or("-"),
                previous.map_or("new", |p| p.as_str()),
                state.as_str(),
                exit_code.map(|c| format!(" {c}")).unwrap_or_default()
            ),
            Event::TaskRelocated {
                service,
                slot,
                task,
                from,
                replacement,
                ..
            } => format!(
                "relocated {service}.{slot} {task} from {} to {}",
                from.as_deref().unwrap_or("-"),
                replacement.as_deref().unwrap_or("-")
            ),
            Event::WorkerStatus {
                worker,
                status,
                previous,
            } => format!(
                "worker {worker} {} -> {}",
                previous.map_or("new", WorkerStatus::as_str),
                status.as_str()
            ),
            Event::WorkerRemoved { worker } => format!("removed {worker}"),
            Event::RolloutState {
                service,
                version,
                state,
                previous,
                ..
            } => format!(
                "rollout {service} v{version} {} -> {}",
                previous.map_or("new", |p| p.as_str()),
                state.as_str()
            ),
        })
        .collect()
}

#[test]
fn a_service_lives_and_every_step_is_said() {
    let mut c = Cluster::new();
    assert_eq!(said(&c.join("w1")), ["worker w1 new -> ready"]);
    c.join("w2");

    assert_eq!(
        said(&c.run(PutService(spec("web", 2)))),
        [
            "created web v1 x2",
            "rollout web v1 new -> in_progress",
            "task t000001 web.0 on w1 new -> assigned ''",
            "task t000002 web.1 on w2 new -> assigned ''",
        ]
    );
    assert_eq!(
        said(&c.all_run()),
        [
            "task t000001 web.0 on w1 assigned -> running 'running'",
            "task t000002 web.1 on w2 assigned -> running 'running'",
        ]
    );

    let scaled = said(&c.run(PatchService {
        name: "web".into(),
        patch: ServicePatch {
            replicas: Some(3),
            ..ServicePatch::default()
        },
    }));
    assert_eq!(
        scaled,
        [
            "updated web v2 x3 from Some(2)",
            "task t000003 web.2 on w1 new -> assigned ''",
        ]
    );

    let failing = c.task_of("web", 0);
    let failed = said(&c.report("w1", |id| (id == failing).then_some(TaskState::Failed)));
    assert_eq!(
        failed,
        [
            "task t000001 web.0 on w1 running -> failed 'exited with code 137' 137",
            "task t000004 web.0 on w1 new -> assigned ''",
        ]
    );
    // A report that changes nothing an event says (the same state again) says nothing.
    let running = c.task_of("web", 1);
    assert!(said(&c.report("w2", |id| (id == running).then_some(TaskState::Running))).is_empty());

    let deleted = said(&c.run(DeleteService {
        name: "web".into(),
        volumes: false,
    }));
    assert_eq!(deleted, ["deleted web"]);
}

#[test]
fn a_worker_down_relocates_each_of_its_slots_to_a_named_replacement() {
    let mut c = Cluster::new();
    for w in ["w1", "w2", "w3"] {
        c.join(w);
    }
    c.run(PutService(spec("web", 3)));
    c.all_run();
    let relocated_before = c.state.counters.containers_relocated;
    let down = c.run(DeclareDown {
        workers: vec!["w1".into()],
        silent_for: None,
    });
    assert_eq!(
        said(&down),
        [
            "worker w1 ready -> down",
            "task t000001 web.0 on w1 running -> lost 'worker w1 is down'",
            "relocated web.0 t000001 from w1 to t000004",
            "task t000004 web.0 on w2 new -> assigned ''",
        ]
    );
    let relocations = down
        .iter()
        .filter(|e| matches!(e, Event::TaskRelocated { .. }))
        .count() as u64;
    assert_eq!(
        relocations,
        c.state.counters.containers_relocated - relocated_before
    );
}

#[test]
fn drain_activate_and_a_rollout_are_said() {
    let mut c = Cluster::new();
    for w in ["w1", "w2"] {
        c.join(w);
    }
    c.run(PutService(spec("web", 2)));
    c.all_run();
    let drained = c.run(SetDrain {
        worker: "w1".into(),
        drain: true,
    });
    // A drain moves start-first: the replacement is placed, the old task runs on.
    assert_eq!(
        said(&drained),
        [
            "worker w1 ready -> draining",
            "task t000003 web.0 on w2 new -> assigned ''",
        ]
    );
    let active = c.run(SetDrain {
        worker: "w1".into(),
        drain: false,
    });
    assert_eq!(said(&active), ["worker w1 draining -> ready"]);
    let restarted = c.run(RestartService("web".into()));
    assert_eq!(
        said(&restarted),
        [
            "updated web v2 x2 from None",
            "rollout web v2 new -> in_progress",
            "task t000004 web.0 on w1 new -> assigned ''",
            "task t000005 web.1 on w2 new -> assigned ''",
        ]
    );
    let mut rest = Vec::new();
    for _ in 0..20 {
        rest.extend(c.all_run());
        c.now += 6_000;
        rest.extend(c.run(Reconcile));
    }
    assert_eq!(
        said(&rest),
        [
            "task t000001 web.0 on w1 running -> shutdown 'stopped: superseded by version 2 of the service'",
            "task t000004 web.0 on w1 assigned -> running 'running'",
            "task t000002 web.1 on w2 running -> shutdown 'stopped: superseded by version 2 of the service'",
            "task t000003 web.0 on w2 assigned -> shutdown 'stopped: duplicate of another task for slot 0'",
            "task t000005 web.1 on w2 assigned -> running 'running'",
            "rollout web v2 in_progress -> completed",
        ]
    );
}
