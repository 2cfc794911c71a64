//! One agent per worker name, through the commands the manager runs: a registration that
//! would take a live worker's name from its agent changes nothing; a down or silent
//! worker is taken over with its tasks; a superseded agent's reports change nothing; and
//! a worker stored before instances existed still loads.

use std::time::Duration;

use mycluster_core::commands::{register_worker, report_tasks, set_worker_status, CommandError};
use mycluster_core::wire::{Registration, TaskReport};
use mycluster_core::worker::LastHeard;
use mycluster_core::{
    schedule, ClusterState, Driver, Service, ServiceSpec, TaskState, Txn, Worker, WorkerStatus,
};

fn registration(instance: &str, address: &str) -> Registration {
    Registration {
        name: "w1".into(),
        address: address.into(),
        labels: Default::default(),
        capacity: None,
        driver: Driver::Process.into(),
        instance: instance.into(),
    }
}

fn heard(age_ms: u64) -> Option<LastHeard> {
    Some(LastHeard {
        age: Duration::from_millis(age_ms),
        interval: Duration::from_secs(1),
    })
}

/// A cluster with w1 registered by agent instance `aaaa` and two tasks placed on it.
fn held_by_a() -> ClusterState {
    let mut txn = Txn::new(ClusterState::default());
    register_worker(&mut txn, registration("aaaa", "10.0.0.1:7000"), None, 1_000).unwrap();
    let spec = ServiceSpec {
        name: "web".into(),
        image: None,
        command: Some(vec!["sleep".into(), "60".into()]),
        env: Default::default(),
        replicas: 2,
    };
    txn.push(mycluster_core::Change::PutService(Service::updated(
        None, spec, 1_000,
    )));
    let mut ids = mycluster_core::SequentialIds::default();
    let created = mycluster_core::reconcile(&txn.state, 1_000, &mut ids);
    txn.extend(created);
    let placed = schedule(&txn.state, 1_000);
    txn.extend(placed);
    assert_eq!(txn.state.tasks_on_worker("w1").count(), 2);
    txn.state
}

fn conflict<T: std::fmt::Debug>(result: Result<T, CommandError>) -> String {
    match result {
        Err(CommandError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn a_live_workers_name_is_not_taken_and_nothing_changes() {
    let state = held_by_a();
    let mut txn = Txn::new(state.clone());
    let refused = conflict(register_worker(
        &mut txn,
        registration("bbbb", "10.0.0.2:7000"),
        heard(400),
        2_000,
    ));
    assert!(
        refused.contains("worker w1 is live at 10.0.0.1:7000"),
        "{refused}"
    );
    assert!(txn.changes.is_empty());
    assert_eq!(txn.state.workers["w1"], state.workers["w1"]);
    // Its own agent may register again at any time.
    let again = register_worker(
        &mut txn,
        registration("aaaa", "10.0.0.1:7000"),
        heard(400),
        2_000,
    )
    .unwrap();
    assert_eq!(again.instance, "aaaa");
}

#[test]
fn a_silent_or_down_worker_is_taken_over_with_its_tasks() {
    for down in [false, true] {
        let mut txn = Txn::new(held_by_a());
        if down {
            set_worker_status(&mut txn, "w1", WorkerStatus::Down, 1_500).unwrap();
        }
        let heard = if down { heard(100) } else { heard(3_500) };
        let worker = register_worker(
            &mut txn,
            registration("bbbb", "10.0.0.2:7000"),
            heard,
            2_000,
        )
        .unwrap();
        assert_eq!(worker.instance, "bbbb");
        assert_eq!(worker.address, "10.0.0.2:7000");
        assert_eq!(worker.status, WorkerStatus::Ready);
        assert_eq!(
            worker.registered_at, 1_000,
            "the same worker, not a new one"
        );
        assert_eq!(txn.state.workers["w1"], worker);
        assert_eq!(txn.state.tasks_on_worker("w1").count(), 2);
    }
}

#[test]
fn a_superseded_agents_reports_change_nothing() {
    let mut txn = Txn::new(held_by_a());
    register_worker(
        &mut txn,
        registration("bbbb", "10.0.0.2:7000"),
        heard(5_000),
        2_000,
    )
    .unwrap();
    let state = txn.state.clone();
    let reports: Vec<TaskReport> = state
        .tasks_on_worker("w1")
        .map(|t| TaskReport {
            id: t.id.clone(),
            state: TaskState::Running,
            container_id: Some("c".into()),
            exit_code: None,
            error: None,
            message: None,
        })
        .collect();
    let mut late = Txn::new(state.clone());
    let refused = conflict(report_tasks(
        &mut late,
        "w1",
        "aaaa",
        reports.clone(),
        3_000,
    ));
    assert!(refused.starts_with("superseded: worker w1"), "{refused}");
    assert!(late.changes.is_empty());
    let mut anonymous = Txn::new(state.clone());
    conflict(report_tasks(
        &mut anonymous,
        "w1",
        "",
        reports.clone(),
        3_000,
    ));
    assert!(anonymous.changes.is_empty());
    // The holder's reports count.
    let mut holder = Txn::new(state);
    let (_, ignored) = report_tasks(&mut holder, "w1", "bbbb", reports, 3_000).unwrap();
    assert!(ignored.is_empty());
    assert!(holder
        .state
        .tasks_on_worker("w1")
        .all(|t| t.state == TaskState::Running));
}

#[test]
fn a_bad_instance_id_is_refused() {
    let mut txn = Txn::new(ClusterState::default());
    let result = register_worker(&mut txn, registration("a b", "10.0.0.1:7000"), None, 1);
    assert!(
        matches!(result, Err(CommandError::Invalid(_))),
        "{result:?}"
    );
    assert!(txn.changes.is_empty());
}

#[test]
fn a_worker_stored_before_instances_existed_loads_with_none() {
    let stored = r#"{"name":"w1","address":"10.0.0.1:7000","labels":{},"capacity":null,
        "driver":"process","status":"ready","registered_at":1,"updated_at":1}"#;
    let worker: Worker = serde_json::from_str(stored).unwrap();
    assert_eq!(worker.instance, "");
    assert_eq!(worker.driver, Some(Driver::Process));
    // A registration that names none is its agent's, as before.
    let registration: Registration =
        serde_json::from_str(r#"{"name":"w1","address":"10.0.0.1:7000"}"#).unwrap();
    assert_eq!(registration.instance, "");
}
