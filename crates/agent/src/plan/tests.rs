//! The plan's tests: each case is the two lists (and verdicts) an agent may find, and
//! what it must do and say.

use super::*;
use mycluster_core::endpoints::DEREGISTER_DELAY;
use std::time::Duration;

fn task(id: &str, desired: DesiredState, state: TaskState) -> TaskDoc {
    TaskDoc {
        desired_state: desired,
        state,
        ..crate::fixtures::task_doc(id)
    }
}

fn none() -> BTreeMap<String, Verdict> {
    BTreeMap::new()
}

fn container(task: &str, state: ContainerState) -> Container {
    Container {
        task_id: task.into(),
        id: format!("c-{task}"),
        name: format!("web.0.{task}"),
        state,
    }
}

/// The manager's task list reads into the typed states the plan compares.
#[test]
fn a_task_list_reads_into_typed_states() {
    let text = r#"{"index":7,"tasks":[{"id":"a","service":"web","slot":0,"image":"img",
        "worker":"w1","desired_state":"running","state":"assigned","message":"",
        "container_id":null,"exit_code":null,"error":null,"created_at":1.0,"updated_at":1.0}]}"#;
    let list: mycluster_core::wire::AssignedTasks = serde_json::from_str(text).expect("reads");
    assert_eq!(
        list.tasks,
        [TaskDoc {
            created_at: 1.0,
            updated_at: 1.0,
            ..task("a", DesiredState::Running, TaskState::Assigned)
        }]
    );
    let (actions, _) = plan(&list.tasks, &[], &none(), &BTreeSet::new());
    assert_eq!(actions, [Action::Start(Box::new(list.tasks[0].clone()))]);
    // A state this agent does not know is refused, not taken for another.
    let unknown = text.replace(r#""state":"assigned""#, r#""state":"paused""#);
    assert!(serde_json::from_str::<mycluster_core::wire::AssignedTasks>(&unknown).is_err());
}

#[test]
fn starts_what_is_assigned_and_reports_what_runs() {
    let wanted = [
        task("a", DesiredState::Running, TaskState::Assigned),
        task("b", DesiredState::Running, TaskState::Assigned),
    ];
    let containers = [container("b", ContainerState::Running)];
    let (actions, reports) = plan(&wanted, &containers, &none(), &BTreeSet::new());
    assert_eq!(actions, [Action::Start(Box::new(wanted[0].clone()))]);
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].id.as_str(), reports[0].state),
        ("b", TaskState::Running)
    );
    assert_eq!(reports[0].container_id.as_deref(), Some("c-b"));
}

#[test]
fn adopts_running_containers_without_a_word() {
    let wanted = [task("a", DesiredState::Running, TaskState::Running)];
    let containers = [container("a", ContainerState::Running)];
    assert_eq!(
        plan(&wanted, &containers, &none(), &BTreeSet::new()),
        (vec![], vec![])
    );
}

#[test]
fn removes_what_is_not_wanted_and_reports_shutdowns() {
    let wanted = [
        task("a", DesiredState::Shutdown, TaskState::Running),
        task("b", DesiredState::Shutdown, TaskState::Assigned),
    ];
    let containers = [
        container("a", ContainerState::Running),
        container("orphan", ContainerState::Running),
    ];
    let (actions, reports) = plan(&wanted, &containers, &none(), &BTreeSet::new());
    assert_eq!(
        actions,
        [
            Action::Remove {
                container: containers[0].clone(),
                report: Some("a".into()),
                // No ports: in no route table, stopped at once with its grace.
                stop: Stop {
                    delay: Duration::ZERO,
                    grace: Some(Duration::from_secs(10))
                }
            },
            // No task speaks for it: the driver's default grace.
            Action::Remove {
                container: containers[1].clone(),
                report: None,
                stop: Stop::default()
            },
        ]
    );
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].id.as_str(), reports[0].state),
        ("b", TaskState::Shutdown)
    );
}

fn with_ports(mut t: TaskDoc) -> TaskDoc {
    t.ports = vec![mycluster_core::task::TaskPort {
        target: 8000,
        port: Some(41000),
    }];
    t.stop_grace_period = mycluster_core::span::Span(1_500);
    t
}

#[test]
fn a_routed_task_is_stopped_after_the_deregister_delay_with_its_grace() {
    let routed = with_ports(task("a", DesiredState::Shutdown, TaskState::Running));
    let running = container("a", ContainerState::Running);
    let stop = |t: &TaskDoc, c: &Container| match plan(
        std::slice::from_ref(t),
        std::slice::from_ref(c),
        &none(),
        &BTreeSet::new(),
    )
    .0
    .as_slice()
    {
        [Action::Remove { stop, .. }] => *stop,
        other => panic!("expected one removal, got {other:?}"),
    };
    let grace = Some(Duration::from_millis(1_500));
    assert_eq!(
        stop(&routed, &running),
        Stop {
            delay: Duration::from_millis(DEREGISTER_DELAY),
            grace
        }
    );
    // Not in any route table: stopped at once, still with its grace.
    let at_once = Stop {
        delay: Duration::ZERO,
        grace,
    };
    let starting = with_ports(task("a", DesiredState::Shutdown, TaskState::Starting));
    assert_eq!(stop(&starting, &running), at_once);
    let exited = container(
        "a",
        ContainerState::Exited {
            code: 0,
            error: None,
        },
    );
    assert_eq!(stop(&routed, &exited), at_once);
    let mut portless = routed.clone();
    portless.ports.clear();
    assert_eq!(stop(&portless, &running), at_once);
}

#[test]
fn a_running_task_the_manager_has_no_address_for_is_reported_until_announced() {
    let t = with_ports(task("a", DesiredState::Running, TaskState::Running));
    let containers = [container("a", ContainerState::Running)];
    let (actions, reports) = plan(
        std::slice::from_ref(&t),
        &containers,
        &none(),
        &BTreeSet::new(),
    );
    assert!(actions.is_empty());
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (reports[0].state, reports[0].container_id.as_deref()),
        (TaskState::Running, Some("c-a"))
    );
    // Once reported by this agent, or once the manager knows it: nothing more.
    let announced = BTreeSet::from(["c-a".to_string()]);
    assert_eq!(
        plan(std::slice::from_ref(&t), &containers, &none(), &announced),
        (vec![], vec![])
    );
    let mut known = t.clone();
    known.address = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    assert_eq!(
        plan(&[known], &containers, &none(), &BTreeSet::new()),
        (vec![], vec![])
    );
    // Without ports it is in no route table: adopted without a word.
    let mut portless = t;
    portless.ports.clear();
    assert_eq!(
        plan(&[portless], &containers, &none(), &BTreeSet::new()),
        (vec![], vec![])
    );
}

#[test]
fn exits_become_complete_or_failed_with_the_code() {
    let wanted = [
        task("ok", DesiredState::Running, TaskState::Running),
        task("bad", DesiredState::Running, TaskState::Running),
    ];
    let containers = [
        container(
            "ok",
            ContainerState::Exited {
                code: 0,
                error: None,
            },
        ),
        container(
            "bad",
            ContainerState::Exited {
                code: 137,
                error: Some("OOM killed".into()),
            },
        ),
    ];
    let (actions, reports) = plan(&wanted, &containers, &none(), &BTreeSet::new());
    assert!(actions.is_empty());
    assert_eq!(reports[0].state, TaskState::Complete);
    assert_eq!(reports[1].state, TaskState::Failed);
    assert_eq!(reports[1].exit_code, Some(137));
    assert_eq!(reports[1].error.as_deref(), Some("OOM killed"));
}

#[test]
fn a_running_task_without_a_container_failed() {
    let wanted = [task("a", DesiredState::Running, TaskState::Running)];
    let (actions, reports) = plan(&wanted, &[], &none(), &BTreeSet::new());
    assert!(actions.is_empty());
    assert_eq!(reports[0].state, TaskState::Failed);
    assert!(reports[0].error.as_deref().unwrap().contains("disappeared"));
}

fn verdict(container: &str, health: Health, message: Option<&str>) -> Verdict {
    Verdict {
        container_id: container.into(),
        health,
        message: message.map(str::to_owned),
    }
}

fn verdicts(list: &[(&str, Verdict)]) -> BTreeMap<String, Verdict> {
    list.iter()
        .map(|(t, v)| (t.to_string(), v.clone()))
        .collect()
}

#[test]
fn a_change_of_health_is_reported_with_the_task_running() {
    let mut t = task("a", DesiredState::Running, TaskState::Running);
    t.health = Some(Health::Starting);
    let containers = [container("a", ContainerState::Running)];
    let healthy = verdicts(&[("a", verdict("c-a", Health::Healthy, None))]);
    let (actions, reports) = plan(&[t.clone()], &containers, &healthy, &BTreeSet::new());
    assert!(actions.is_empty());
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].state, TaskState::Running);
    assert_eq!(reports[0].health, Some(Health::Healthy));
    assert_eq!(reports[0].container_id.as_deref(), Some("c-a"));
    // Once the manager holds it, nothing more to say.
    t.health = Some(Health::Healthy);
    assert_eq!(
        plan(&[t.clone()], &containers, &healthy, &BTreeSet::new()),
        (vec![], vec![])
    );
    // A verdict on another container of the task says nothing of this one.
    let stale = verdicts(&[("a", verdict("c-old", Health::Starting, None))]);
    assert_eq!(
        plan(&[t], &containers, &stale, &BTreeSet::new()),
        (vec![], vec![])
    );
}

#[test]
fn a_starting_task_reports_running_and_its_health_at_once() {
    let t = task("a", DesiredState::Running, TaskState::Starting);
    let containers = [container("a", ContainerState::Running)];
    let starting = verdicts(&[("a", verdict("c-a", Health::Starting, Some("refused")))]);
    let (_, reports) = plan(&[t], &containers, &starting, &BTreeSet::new());
    assert_eq!(reports[0].state, TaskState::Running);
    assert_eq!(reports[0].health, Some(Health::Starting));
    assert_eq!(reports[0].health_message.as_deref(), Some("refused"));
}

#[test]
fn an_unhealthy_container_is_removed_then_its_task_reported_failed() {
    let mut t = task("a", DesiredState::Running, TaskState::Running);
    t.health = Some(Health::Healthy);
    let running = [container("a", ContainerState::Running)];
    let unhealthy = verdicts(&[(
        "a",
        verdict("c-a", Health::Unhealthy, Some("GET http://x/ answered 500")),
    )]);
    let (actions, reports) = plan(&[t.clone()], &running, &unhealthy, &BTreeSet::new());
    assert_eq!(
        actions,
        [Action::Remove {
            container: running[0].clone(),
            report: None,
            stop: Stop::of(&t)
        }]
    );
    assert!(
        reports.is_empty(),
        "no report races the removal: {reports:?}"
    );

    // Exited during its stop: still the health check's failure, not the exit's.
    let exited = [container(
        "a",
        ContainerState::Exited {
            code: 143,
            error: None,
        },
    )];
    let (actions, reports) = plan(&[t.clone()], &exited, &unhealthy, &BTreeSet::new());
    assert!(actions.is_empty());
    assert_eq!(
        reports[0].error.as_deref(),
        Some("unhealthy: GET http://x/ answered 500")
    );

    // Gone: failed, unhealthy, and why; never "disappeared", never started again.
    let (actions, reports) = plan(&[t.clone()], &[], &unhealthy, &BTreeSet::new());
    assert!(actions.is_empty());
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.state, TaskState::Failed);
    assert_eq!(r.health, Some(Health::Unhealthy));
    assert_eq!(
        r.error.as_deref(),
        Some("unhealthy: GET http://x/ answered 500")
    );
    assert_eq!(
        r.health_message.as_deref(),
        Some("GET http://x/ answered 500")
    );
    assert_eq!(r.container_id.as_deref(), Some("c-a"));
    // Once reported, the failed task is left to the manager.
    t.state = TaskState::Failed;
    assert_eq!(
        plan(&[t], &[], &unhealthy, &BTreeSet::new()),
        (vec![], vec![])
    );
}

#[test]
fn a_routed_unhealthy_replica_leaves_the_table_before_it_is_stopped() {
    let mut t = with_ports(task("a", DesiredState::Running, TaskState::Running));
    t.health = Some(Health::Healthy);
    t.address = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let running = [container("a", ContainerState::Running)];
    let unhealthy = verdicts(&[("a", verdict("c-a", Health::Unhealthy, Some("refused")))]);

    // First said: running and unhealthy, which takes it out of the route table.
    let (actions, reports) = plan(&[t.clone()], &running, &unhealthy, &BTreeSet::new());
    assert!(actions.is_empty(), "not stopped while routed: {actions:?}");
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(
        (r.state, r.health, r.container_id.as_deref()),
        (TaskState::Running, Some(Health::Unhealthy), Some("c-a"))
    );
    assert_eq!(r.health_message.as_deref(), Some("refused"));
    assert_eq!(r.error, None);

    // Once the manager holds it: stopped after the deregister delay, with its grace.
    t.health = Some(Health::Unhealthy);
    let (actions, reports) = plan(&[t.clone()], &running, &unhealthy, &BTreeSet::new());
    assert_eq!(
        actions,
        [Action::Remove {
            container: running[0].clone(),
            report: None,
            stop: Stop {
                delay: Duration::from_millis(DEREGISTER_DELAY),
                grace: Some(Duration::from_millis(1_500)),
            }
        }]
    );
    assert!(reports.is_empty(), "{reports:?}");

    // Gone: failed, and why, as any unhealthy task.
    let (actions, reports) = plan(&[t], &[], &unhealthy, &BTreeSet::new());
    assert!(actions.is_empty());
    assert_eq!(reports[0].state, TaskState::Failed);
    assert_eq!(reports[0].error.as_deref(), Some("unhealthy: refused"));
}

#[test]
fn a_container_is_announced_once_a_report_said_where_it_is_reached() {
    let t = with_ports(task("a", DesiredState::Running, TaskState::Running));
    let mut r = report(&t, TaskState::Running, None);
    r.container_id = Some("c-a".into());
    // No address: the manager cannot route it; asked for again.
    assert!(!announces(&r, Some(&t)));
    let mut portless = t.clone();
    portless.ports.clear();
    assert!(announces(&r, Some(&portless)));
    r.address = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    assert!(announces(&r, Some(&t)));
    r.state = TaskState::Failed;
    assert!(!announces(&r, Some(&t)));
}

#[test]
fn a_checked_task_the_manager_has_no_address_for_is_reported_until_announced() {
    let mut t = with_ports(task("a", DesiredState::Running, TaskState::Running));
    t.health = Some(Health::Healthy);
    let containers = [container("a", ContainerState::Running)];
    let healthy = verdicts(&[("a", verdict("c-a", Health::Healthy, None))]);
    let (actions, reports) = plan(&[t.clone()], &containers, &healthy, &BTreeSet::new());
    assert!(actions.is_empty());
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        (reports[0].state, reports[0].health),
        (TaskState::Running, Some(Health::Healthy))
    );
    let announced = BTreeSet::from(["c-a".to_string()]);
    assert_eq!(
        plan(&[t], &containers, &healthy, &announced),
        (vec![], vec![])
    );
}

#[test]
fn an_ended_task_without_a_container_is_never_started_again() {
    for state in [TaskState::Failed, TaskState::Complete, TaskState::Shutdown] {
        let t = task("a", DesiredState::Running, state);
        assert_eq!(
            plan(&[t], &[], &none(), &BTreeSet::new()),
            (vec![], vec![]),
            "{state:?}"
        );
    }
}
