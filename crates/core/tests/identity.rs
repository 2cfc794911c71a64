//! One agent per worker name, through the step the manager runs: a registration that
//! would take a live worker's name from its agent changes nothing; a down or silent
//! worker is taken over with its tasks; a superseded agent's reports change nothing; and
//! a worker stored before instances existed still loads.

mod support;

use support::step_at;

use std::collections::BTreeMap;
use std::time::Duration;

use mycluster_core::commands::CommandError;
use mycluster_core::step::{DeclareDown, NoteWhen, PutService, Register, Report, Step};
use mycluster_core::wire::{Registration, TaskReport};
use mycluster_core::worker::LastHeard;
use mycluster_core::{
    ClusterState, Command, Driver, SequentialIds, ServiceSpec, TaskState, Worker, WorkerStatus,
};

fn registration(instance: &str, address: &str) -> Registration {
    Registration {
        name: "w1".into(),
        address: address.into(),
        labels: Default::default(),
        capacity: None,
        driver: Driver::Process.into(),
        instance: instance.into(),
        resources: Default::default(),
        host: String::new(),
        agent_ca_sha256: None,
    }
}

/// Runs `command` on `state` at `now`, w1 last heard `heard_ms` ago (`None`: never).
fn run<C: Command>(
    state: &ClusterState,
    command: C,
    heard_ms: Option<u64>,
    now: u64,
) -> Result<Step<C::Outcome>, CommandError> {
    let heard: BTreeMap<String, LastHeard> = heard_ms
        .map(|ms| {
            let heard = LastHeard {
                age: Duration::from_millis(ms),
                interval: Duration::from_secs(1),
            };
            ("w1".to_string(), heard)
        })
        .into_iter()
        .collect();
    step_at(state, command, now, &heard, &mut SequentialIds::default())
}

/// A cluster with w1 registered by agent instance `aaaa` and two tasks placed on it.
fn held_by_a() -> ClusterState {
    let registered = run(
        &ClusterState::default(),
        Register::open(registration("aaaa", "10.0.0.1:7000")),
        None,
        1_000,
    )
    .unwrap();
    let spec = ServiceSpec {
        healthcheck: None,
        update: Default::default(),
        name: "web".into(),
        image: None,
        command: Some(vec!["sleep".into(), "60".into()]),
        env: Default::default(),
        replicas: 2,
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
    let placed = run(&registered.state, PutService(spec), None, 1_000).unwrap();
    assert_eq!(placed.state.tasks_on_worker("w1").count(), 2);
    placed.state
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
    let refused = conflict(run(
        &state,
        Register::open(registration("bbbb", "10.0.0.2:7000")),
        Some(400),
        2_000,
    ));
    assert!(
        refused.contains("worker w1 is live at 10.0.0.1:7000"),
        "{refused}"
    );
    // Its own agent may register again at any time.
    let again = run(
        &state,
        Register::open(registration("aaaa", "10.0.0.1:7000")),
        Some(400),
        2_000,
    )
    .unwrap();
    assert_eq!(again.outcome.worker.instance, "aaaa");
    assert!(again.changes.is_empty(), "nothing but the time changed");
}

#[test]
fn a_silent_or_down_worker_is_taken_over_with_its_tasks() {
    for down in [false, true] {
        let mut state = held_by_a();
        if down {
            let verdict = DeclareDown {
                workers: vec!["w1".into()],
                silent_for: None,
            };
            state = run(&state, verdict, None, 1_500).unwrap().state;
        }
        let heard = if down { Some(100) } else { Some(3_500) };
        let taken = run(
            &state,
            Register::open(registration("bbbb", "10.0.0.2:7000")),
            heard,
            2_000,
        )
        .unwrap();
        let worker = &taken.outcome.worker;
        assert_eq!(worker.instance, "bbbb");
        assert_eq!(worker.address, "10.0.0.2:7000");
        assert_eq!(worker.status, WorkerStatus::Ready);
        assert_eq!(
            worker.registered_at, 1_000,
            "the same worker, not a new one"
        );
        assert_eq!(&taken.state.workers["w1"], worker);
        assert_eq!(
            taken.outcome.before.map(|w| w.instance).as_deref(),
            Some("aaaa")
        );
        // Silent: its tasks stay with the worker. Down: they were lost and replaced on
        // the worker as soon as it came back.
        let live = taken.state.tasks_on_worker("w1").filter(|t| t.is_active());
        assert_eq!(live.count(), 2);
        // The registration counts as a heartbeat, noted as soon as it is queued.
        let heard = taken.heard.expect("a heartbeat to note");
        assert_eq!(
            (heard.worker.as_str(), heard.when),
            ("w1", NoteWhen::Queued)
        );
    }
}

#[test]
fn a_superseded_agents_reports_change_nothing() {
    let state = run(
        &held_by_a(),
        Register::open(registration("bbbb", "10.0.0.2:7000")),
        Some(5_000),
        2_000,
    )
    .unwrap()
    .state;
    let reports: Vec<TaskReport> = state
        .tasks_on_worker("w1")
        .map(|t| TaskReport {
            health: None,
            health_message: None,
            id: t.id.clone(),
            state: TaskState::Running,
            container_id: Some("c".into()),
            exit_code: None,
            error: None,
            message: None,
            address: None,
            ports: Vec::new(),
        })
        .collect();
    let report = |instance: &str| Report {
        worker: "w1".into(),
        instance: instance.into(),
        tasks: reports.clone(),
        removed_volumes: Vec::new(),
    };
    let refused = conflict(run(&state, report("aaaa"), None, 3_000));
    assert!(refused.starts_with("superseded: worker w1"), "{refused}");
    conflict(run(&state, report(""), None, 3_000));
    // The holder's reports count.
    let taken = run(&state, report("bbbb"), None, 3_000).unwrap();
    assert!(taken.outcome.is_empty());
    assert!(taken
        .state
        .tasks_on_worker("w1")
        .all(|t| t.state == TaskState::Running));
}

#[test]
fn a_bad_instance_id_is_refused() {
    let result = run(
        &ClusterState::default(),
        Register::open(registration("a b", "10.0.0.1:7000")),
        None,
        1,
    );
    assert!(
        matches!(result, Err(CommandError::Invalid(_))),
        "{result:?}"
    );
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
