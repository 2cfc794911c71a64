//! The lease rule through `step`: when a worker is declared down, its `on_disconnect:
//! "replace"` tasks are replaced at once, and its `"stop"` tasks hold their slot until
//! `lease + stop_grace_period + LEASE_MARGIN` after the last renewal the manager heard —
//! by then their agent has stopped them — so no slot ever has two copies; a worker that
//! comes back before then keeps them. Each verdict moves the worker's epoch on.

mod support;

use mycluster_core::lease::{next_due, replace_stop_task_at, DEFAULT_LEASE};
use mycluster_core::service::OnDisconnect;
use mycluster_core::span::Span;
use mycluster_core::step::{DeclareDown, PutService, WorkerBack};
use mycluster_core::{ServiceSpec, TaskState, WorkerStatus};

use support::sim::{spec, Sim};

/// Two workers, a `stop` singleton (grace 10 s) and a `replace` service of 2, running.
fn cluster() -> Sim {
    let mut sim = Sim::new(false);
    sim.join("w1", &[]);
    sim.join("w2", &[]);
    sim.run(PutService(ServiceSpec {
        on_disconnect: OnDisconnect::Stop,
        stop_grace_period: Span::secs(10),
        ..spec("db", 1)
    }));
    sim.run(PutService(spec("web", 2)));
    for _ in 0..3 {
        sim.round();
    }
    sim
}

/// The worker that runs the singleton.
fn db_worker(sim: &Sim) -> String {
    let task = sim
        .state
        .tasks_of_service("db")
        .find(|t| t.is_active())
        .expect("db has a task");
    task.worker.clone().expect("db's task is placed")
}

fn active(sim: &Sim, service: &str) -> Vec<(u32, String, TaskState)> {
    sim.state
        .tasks_of_service(service)
        .filter(|t| t.is_active())
        .map(|t| (t.slot, t.worker.clone().unwrap_or_default(), t.state))
        .collect()
}

#[test]
fn a_stop_task_holds_its_slot_until_the_lease_the_grace_and_the_margin_have_passed() {
    let mut sim = cluster();
    let cut = db_worker(&sim);
    let epoch = sim.state.workers[&cut].epoch;
    // Nothing heard since the manager started: the renewal counts from the verdict.
    let renewed = sim.now;
    sim.run(DeclareDown {
        workers: vec![cut.clone()],
        silent_for: None,
    })
    .expect("declared");
    let worker = &sim.state.workers[&cut];
    assert_eq!(worker.status, WorkerStatus::Down);
    assert_eq!(worker.epoch, epoch + 1, "a verdict moves the epoch on");
    let due = replace_stop_task_at(renewed, DEFAULT_LEASE, Span::secs(10));
    assert_eq!(due, renewed + 16_000);
    assert_eq!(next_due(&sim.state, sim.now), Some(due));

    // The replace service's task on that worker went elsewhere at once.
    let web = active(&sim, "web");
    assert_eq!(web.len(), 2);
    assert!(web.iter().all(|(_, w, _)| *w != cut), "{web:?}");

    // Until the deadline, the singleton's one task is the one on the cut-off worker.
    while sim.now + 1_000 < due {
        sim.round();
        let db = active(&sim, "db");
        assert_eq!(db.len(), 1, "at {}: {db:?}", sim.now);
        assert_eq!(db[0].1, cut, "replaced before its lease ran out: {db:?}");
    }
    let waiting = sim
        .state
        .tasks_of_service("db")
        .find(|t| t.is_active())
        .expect("still there");
    assert!(waiting.message.contains("lease"), "{}", waiting.message);

    // Past it: lost, and replaced on the other worker.
    sim.round();
    sim.round();
    let db = active(&sim, "db");
    assert_eq!(db.len(), 1, "{db:?}");
    assert_ne!(db[0].1, cut, "{db:?}");
    assert_eq!(db[0].2, TaskState::Running);
    assert!(sim
        .state
        .tasks_of_service("db")
        .any(|t| t.worker.as_deref() == Some(cut.as_str()) && t.state == TaskState::Lost));
    assert_eq!(next_due(&sim.state, sim.now), None);
}

#[test]
fn a_worker_back_before_the_deadline_keeps_its_stop_tasks() {
    let mut sim = cluster();
    let cut = db_worker(&sim);
    let before: Vec<String> = sim
        .state
        .tasks_of_service("db")
        .filter(|t| t.is_active())
        .map(|t| t.id.clone())
        .collect();
    sim.run(DeclareDown {
        workers: vec![cut.clone()],
        silent_for: None,
    })
    .expect("declared");
    for _ in 0..3 {
        sim.round();
    }
    sim.run(WorkerBack {
        worker: cut.clone(),
        instance: String::new(),
    })
    .expect("back");
    for _ in 0..30 {
        sim.round();
    }
    let after: Vec<String> = sim
        .state
        .tasks_of_service("db")
        .filter(|t| t.is_active())
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(
        before, after,
        "the singleton was replaced though its worker came back"
    );
    assert_eq!(sim.state.workers[&cut].status, WorkerStatus::Ready);
}
