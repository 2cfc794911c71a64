//! Example tests for the control plane: small, named situations (placement ties, a worker
//! dying, a worker draining, nowhere to run) with the exact outcome spelled out, to read
//! alongside the property tests in `properties.rs`. Every change goes through the core's
//! `step`, as in the manager.

mod support;

use support::step_at;

use std::collections::BTreeMap;
use std::time::Duration;

use mycluster_core::step::{
    DeclareDown, NothingHeard, PutService, Reconcile, Register, Report, SetDrain, WorkerBack,
};
use mycluster_core::wire::{Driver, Registration, SaidDriver, TaskReport};
use mycluster_core::worker::LastHeard;
use mycluster_core::{
    Change, ClusterState, Command, DesiredState, Millis, SequentialIds, ServiceSpec, Task,
    TaskState, Txn, WorkerStatus,
};

/// A cluster driven the way the manager drives it: each change is a command of the core's
/// `step`, and `settle` is the orchestrator's periodic pass.
struct Cluster {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
}

impl Cluster {
    fn with_workers(n: usize) -> Cluster {
        let mut cluster = Cluster {
            state: ClusterState::default(),
            ids: SequentialIds::default(),
            now: 1_000,
        };
        for i in 1..=n {
            cluster.register(&format!("w{i}"), None);
        }
        cluster
    }

    /// Runs one command at the current time, as the manager would.
    fn run<C: Command>(&mut self, command: C) -> C::Outcome {
        let stepped = step_at(&self.state, command, self.now, &NothingHeard, &mut self.ids)
            .expect("accepted");
        self.state = stepped.state;
        stepped.outcome
    }

    fn register(&mut self, name: &str, driver: Option<Driver>) {
        self.run(Register::open(Registration {
            name: name.into(),
            address: format!("{name}:7001"),
            labels: BTreeMap::new(),
            capacity: None,
            driver: driver.map_or(SaidDriver::NotSaid, SaidDriver::Known),
            instance: String::new(),
            resources: Default::default(),
            host: String::new(),
            agent_ca_sha256: None,
        }));
    }

    /// The orchestrator's pass, at the current time.
    fn settle(&mut self) {
        self.run(Reconcile);
    }

    /// Changes with no command of their own yet (draining is set by operators in a
    /// later version), then the periodic pass picks them up.
    fn raw(&mut self, changes: impl IntoIterator<Item = Change>) {
        self.now += 1_000;
        let mut txn = Txn::new(self.state.clone());
        txn.extend(changes);
        self.state = txn.state;
        self.settle();
    }

    fn put_service(&mut self, name: &str, image: &str, replicas: u32) {
        self.now += 1_000;
        self.run(PutService(ServiceSpec {
            healthcheck: None,
            update: Default::default(),
            name: name.into(),
            image: Some(image.into()),
            command: None,
            env: BTreeMap::new(),
            replicas,
            ports: Vec::new(),
            stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
            proxy_protocol: false,
            constraints: Vec::new(),
            spread: None,
            resources: Default::default(),
            volumes: Vec::new(),
            restart: Default::default(),
            on_disconnect: Default::default(),
        }));
    }

    /// The monitor's verdict (down), a down worker beating again (ready), or an
    /// operator's drain.
    fn set_status(&mut self, worker: &str, status: WorkerStatus) {
        self.now += 1_000;
        match status {
            WorkerStatus::Down => {
                self.run(DeclareDown {
                    workers: vec![worker.into()],
                    silent_for: None,
                });
            }
            WorkerStatus::Ready => {
                self.run(WorkerBack {
                    worker: worker.into(),
                    instance: String::new(),
                });
            }
            WorkerStatus::Draining => {
                self.run(SetDrain {
                    worker: worker.into(),
                    drain: true,
                });
            }
        }
    }

    /// Every agent that is up reports: assigned tasks run, stopped ones end.
    fn agents_report(&mut self) {
        self.now += 1_000;
        self.report(|t| match t.desired {
            DesiredState::Shutdown => Some((TaskState::Shutdown, None)),
            DesiredState::Running => Some((TaskState::Running, None)),
        });
    }

    /// Each worker that is up reports, for each of its unfinished tasks, the state `what`
    /// gives (with an exit code), if any.
    fn report(&mut self, what: impl Fn(&Task) -> Option<(TaskState, Option<i64>)>) {
        let mut by_worker: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
        for task in self.state.tasks.values().filter(|t| !t.state.is_terminal()) {
            let Some(worker) = task.worker.as_ref().and_then(|w| self.state.workers.get(w)) else {
                continue;
            };
            if worker.status == WorkerStatus::Down {
                continue;
            }
            let Some((state, exit_code)) = what(task) else {
                continue;
            };
            if state == task.state {
                continue;
            }
            by_worker
                .entry(worker.name.clone())
                .or_default()
                .push(TaskReport {
                    health: None,
                    health_message: None,
                    id: task.id.clone(),
                    state,
                    container_id: None,
                    exit_code,
                    error: None,
                    message: None,
                    address: None,
                    ports: Vec::new(),
                });
        }
        for (worker, tasks) in by_worker {
            let ignored = self.run(Report {
                worker,
                instance: String::new(),
                tasks,
                removed_volumes: Vec::new(),
            });
            assert!(ignored.is_empty(), "{ignored:?}");
        }
    }

    fn active(&self, service: &str) -> Vec<&Task> {
        self.state
            .tasks_of_service(service)
            .filter(|t| t.is_active())
            .collect()
    }

    /// The worker of each active task of a service, by slot.
    fn placement(&self, service: &str) -> BTreeMap<u32, String> {
        self.active(service)
            .into_iter()
            .map(|t| (t.slot, t.worker.clone().unwrap_or_default()))
            .collect()
    }
}

fn by_slot(pairs: &[(u32, &str)]) -> BTreeMap<u32, String> {
    pairs.iter().map(|&(s, w)| (s, w.to_string())).collect()
}

#[test]
fn three_replicas_on_four_workers_take_the_first_three_by_name() {
    let mut cluster = Cluster::with_workers(4);
    cluster.put_service("web", "nginx:1", 3);
    assert_eq!(
        cluster.placement("web"),
        by_slot(&[(0, "w1"), (1, "w2"), (2, "w3")])
    );
    assert_eq!(cluster.state.tasks_on_worker("w4").count(), 0);
    assert!(cluster
        .active("web")
        .iter()
        .all(|t| t.state == TaskState::Assigned));
}

#[test]
fn tasks_on_a_down_worker_are_lost_and_replaced_elsewhere() {
    let mut cluster = Cluster::with_workers(3);
    cluster.put_service("web", "nginx:1", 6);
    cluster.agents_report();
    let on_w2: Vec<Task> = cluster.state.tasks_on_worker("w2").cloned().collect();
    assert_eq!(on_w2.len(), 2, "six replicas on three workers: two each");
    let relocated = cluster.state.counters.containers_relocated;

    cluster.set_status("w2", WorkerStatus::Down);

    for old in &on_w2 {
        let now = &cluster.state.tasks[&old.id];
        assert_eq!(now.state, TaskState::Lost);
        assert!(now.message.contains("w2 is down"), "{:?}", now.message);
    }
    // Each lost slot has a new task, on a worker that is up, and the spread stays even.
    let placement = cluster.placement("web");
    assert_eq!(placement.len(), 6);
    assert!(placement.values().all(|w| w != "w2"));
    for w in ["w1", "w3"] {
        assert_eq!(placement.values().filter(|p| *p == w).count(), 3);
    }
    for old in &on_w2 {
        let replacement = cluster
            .active("web")
            .into_iter()
            .find(|t| t.slot == old.slot)
            .expect("the slot is filled again");
        assert_ne!(replacement.id, old.id);
    }
    assert_eq!(
        cluster.state.counters.containers_relocated,
        relocated + on_w2.len() as u64
    );
}

#[test]
fn a_draining_workers_tasks_move_start_first() {
    let mut cluster = Cluster::with_workers(3);
    cluster.put_service("web", "nginx:1", 3);
    cluster.agents_report();
    let old = cluster.state.tasks_on_worker("w1").next().unwrap().clone();

    cluster.set_status("w1", WorkerStatus::Draining);

    // The old task keeps running until its replacement is healthy; the replacement of its
    // slot is placed on another worker at once.
    let leaving = &cluster.state.tasks[&old.id];
    assert_eq!(
        (leaving.desired, leaving.state),
        (DesiredState::Running, TaskState::Running)
    );
    let replacement = cluster
        .active("web")
        .into_iter()
        .find(|t| t.slot == old.slot && t.id != old.id)
        .expect("a replacement beside the old task")
        .clone();
    assert_eq!(replacement.state, TaskState::Assigned);
    assert_ne!(replacement.worker.as_deref(), Some("w1"));
    // One slot at a time: nothing else of the service moves yet.
    assert_eq!(cluster.active("web").len(), 4);

    // It runs; once it has run for the update policy's monitor it is healthy, and only
    // then is the old task asked to stop.
    cluster.agents_report();
    assert_eq!(
        cluster.state.tasks[&old.id].desired,
        DesiredState::Running,
        "stopped before its replacement was healthy"
    );
    cluster.now += 10_000;
    cluster.settle();
    let stopping = &cluster.state.tasks[&old.id];
    assert_eq!(stopping.desired, DesiredState::Shutdown);
    assert_eq!(
        stopping.message,
        format!(
            "moved to {} (worker w1 is draining)",
            replacement.worker.as_deref().unwrap_or_default()
        )
    );
    // Draining is not a failure: nothing counts as relocated.
    assert_eq!(cluster.state.counters.containers_relocated, 0);

    cluster.agents_report();
    assert_eq!(cluster.state.tasks[&old.id].state, TaskState::Shutdown);
    assert_eq!(
        cluster
            .state
            .tasks_on_worker("w1")
            .filter(|t| t.is_live())
            .count(),
        0
    );
    assert_eq!(cluster.active("web").len(), 3);
}

#[test]
fn with_no_ready_worker_tasks_wait_and_say_why() {
    let mut cluster = Cluster::with_workers(2);
    cluster.set_status("w1", WorkerStatus::Down);
    cluster.set_status("w2", WorkerStatus::Draining);
    cluster.put_service("web", "nginx:1", 2);

    let active = cluster.active("web");
    assert_eq!(active.len(), 2);
    for task in active {
        assert_eq!(
            (task.state, task.worker.as_ref()),
            (TaskState::Pending, None)
        );
        assert_eq!(
            task.message,
            "no worker can take it: 1 is down, 1 is draining"
        );
    }

    cluster.set_status("w1", WorkerStatus::Ready);
    assert_eq!(cluster.placement("web"), by_slot(&[(0, "w1"), (1, "w1")]));
    assert!(cluster.active("web").iter().all(|t| t.message.is_empty()));
}

#[test]
fn scaling_down_stops_the_highest_slots_and_keeps_the_rest() {
    let mut cluster = Cluster::with_workers(2);
    cluster.put_service("web", "nginx:1", 5);
    cluster.agents_report();
    let before: BTreeMap<u32, String> = cluster
        .active("web")
        .into_iter()
        .map(|t| (t.slot, t.id.clone()))
        .collect();

    cluster.put_service("web", "nginx:1", 2);

    let after: BTreeMap<u32, String> = cluster
        .active("web")
        .into_iter()
        .map(|t| (t.slot, t.id.clone()))
        .collect();
    assert_eq!(
        after,
        before.range(..2).map(|(s, id)| (*s, id.clone())).collect()
    );
    for id in before.range(2..).map(|(_, id)| id) {
        let task = &cluster.state.tasks[id];
        assert_eq!(task.desired, DesiredState::Shutdown);
        assert_eq!(task.message, "scaled down to 2");
    }
}

#[test]
fn an_image_change_replaces_every_task() {
    let mut cluster = Cluster::with_workers(2);
    cluster.put_service("web", "nginx:1", 2);
    cluster.agents_report();
    let old: Vec<String> = cluster.active("web").iter().map(|t| t.id.clone()).collect();

    cluster.put_service("web", "nginx:2", 2);

    let new = cluster.active("web");
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|t| t.image.as_deref() == Some("nginx:2")
        && t.spec_version == 2
        && !old.contains(&t.id)));
    for id in &old {
        assert_eq!(cluster.state.tasks[id].desired, DesiredState::Shutdown);
    }
}

/// Every active task of `service` reports a crash at the current time, as its agent
/// would.
fn crash(cluster: &mut Cluster, service: &str) {
    cluster.report(|t| {
        (t.service == service && t.is_active()).then_some((TaskState::Failed, Some(1)))
    });
}

#[test]
fn a_crash_looping_slot_backs_off_and_says_so() {
    let mut cluster = Cluster::with_workers(1);
    cluster.put_service("web", "nginx", 1);
    cluster.agents_report();
    // The first failure is replaced at once, in the commit of its report: one crash is
    // not a loop.
    crash(&mut cluster, "web");
    let active = cluster.active("web");
    assert_eq!(active.len(), 1, "the first failure is replaced at once");
    assert_eq!(active[0].failures, 1);
    cluster.agents_report();
    // From the second failure in a row on, each waits twice as long: 1 s, 2 s, 4 s.
    for (failures, delay) in [(2u32, 1_000u64), (3, 2_000), (4, 4_000)] {
        crash(&mut cluster, "web");
        assert!(
            cluster.active("web").is_empty(),
            "replaced before its delay"
        );
        let failed = cluster
            .state
            .tasks_of_service("web")
            .filter(|t| t.state == TaskState::Failed)
            .max_by_key(|t| t.updated_at)
            .unwrap();
        assert!(
            failed.message.contains("restarts")
                && failed
                    .message
                    .contains(&format!("failure {failures} in a row")),
            "{}",
            failed.message
        );
        cluster.now += delay - 1;
        cluster.settle();
        assert!(
            cluster.active("web").is_empty(),
            "replaced {delay} ms too early"
        );
        cluster.now += 1;
        cluster.settle();
        let active = cluster.active("web");
        assert_eq!(active.len(), 1, "replaced once the delay is over");
        assert_eq!(active[0].failures, failures);
        cluster.agents_report();
    }
    // A task that ran long enough before failing starts the count again.
    cluster.now += 60_000;
    crash(&mut cluster, "web");
    cluster.now += 1_000;
    cluster.settle();
    assert_eq!(cluster.active("web")[0].failures, 1);
}

#[test]
fn workers_only_get_what_their_driver_can_run() {
    let mut cluster = Cluster::with_workers(0);
    cluster.register("d1", Some(Driver::Docker));
    cluster.register("p1", Some(Driver::Process));
    let service = |name: &str, image: Option<&str>, command: Option<&str>| {
        PutService(ServiceSpec {
            healthcheck: None,
            update: Default::default(),
            name: name.into(),
            image: image.map(str::to_owned),
            replicas: 2,
            command: command.map(|c| vec![c.to_string()]),
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
        })
    };
    cluster.run(service("images", Some("nginx"), None));
    cluster.run(service("commands", None, Some("sleep")));
    cluster.run(service("both", Some("nginx"), Some("sleep")));
    let on = |cluster: &Cluster, service: &str| -> Vec<String> {
        cluster.placement(service).into_values().collect()
    };
    assert_eq!(on(&cluster, "images"), ["d1", "d1"]);
    assert_eq!(on(&cluster, "commands"), ["p1", "p1"]);
    assert_eq!(on(&cluster, "both"), ["d1", "p1"]);

    // Nowhere to run it: the reason names the driver.
    // (Workers are not removed through the API yet.)
    cluster.raw([Change::DeleteWorker("d1".into())]);
    cluster.run(service("images2", Some("nginx"), None));
    let pending = cluster
        .state
        .tasks_of_service("images2")
        .next()
        .unwrap()
        .message
        .clone();
    assert_eq!(
        pending,
        "no worker can take it: 1 cannot run it (the process driver needs a command)"
    );
}

#[test]
fn a_down_verdict_says_where_each_task_went_and_spares_a_worker_heard_since() {
    let mut cluster = Cluster::with_workers(3);
    cluster.put_service("web", "nginx:1", 3);
    cluster.agents_report();
    let on_w1 = cluster.state.tasks_on_worker("w1").next().unwrap().clone();
    // w2 beat 500 ms ago, w1 has been silent for 5 s.
    let heard: BTreeMap<String, LastHeard> = [("w1", 5_000), ("w2", 500)]
        .into_iter()
        .map(|(w, ms)| {
            let heard = LastHeard {
                age: Duration::from_millis(ms),
                interval: Duration::from_secs(1),
            };
            (w.to_string(), heard)
        })
        .collect();
    let verdict = DeclareDown {
        workers: vec!["w2".into(), "w1".into(), "w1".into()],
        silent_for: Some(Duration::from_secs(2)),
    };
    let now = cluster.now + 1_000;
    let stepped = step_at(&cluster.state, verdict, now, &heard, &mut cluster.ids).unwrap();
    let verdict = stepped.outcome;
    assert_eq!(verdict.skipped.len(), 1);
    assert_eq!(
        (&*verdict.skipped[0].worker, &*verdict.skipped[0].message),
        ("w2", "Worker w2 was heard from 0.5s ago: not declared down")
    );
    assert_eq!(verdict.down.len(), 1, "w1 once, though named twice");
    let downed = &verdict.down[0];
    assert_eq!((downed.worker.as_str(), downed.was_down), ("w1", false));
    assert_eq!(downed.relocated.len(), 1);
    let moved = &downed.relocated[0];
    assert_eq!(
        (&moved.task, moved.slot, moved.image.as_deref()),
        (&on_w1.id, on_w1.slot, Some("nginx:1"))
    );
    let replacement = &stepped.state.tasks[moved.replacement.as_ref().unwrap()];
    assert_eq!(replacement.slot, on_w1.slot);
    assert_eq!(moved.worker, replacement.worker);
    assert_ne!(moved.worker.as_deref(), Some("w1"));
    assert_eq!(stepped.state.workers["w2"].status, WorkerStatus::Ready);
}
