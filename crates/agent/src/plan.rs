//! The agent's decision, as a pure function: given the tasks the manager assigned to this
//! worker and the containers the runtime has, what to start, what to remove, and what to
//! report. Level-triggered: it looks only at the two lists (and the health checks' latest
//! verdicts), so a pass that was missed or failed is repaired by the next.
//!
//! Health: a verdict that differs from the health the manager holds is reported, with the
//! task still running. A container found unhealthy is removed like a crashed one; once it
//! is gone the task is reported failed, `error: "unhealthy: <why>"`, and the manager
//! replaces it with its crash backoff.
//!
//! Stops: how each container is stopped is decided here too (see `stop`).
//!
//! Where a task is reached: the sync pass adds the address and ports to every `running`
//! report (the plan only decides to report). A running task with ports whose address the
//! manager lacks (reported by an agent that did not send it) is reported again, once per
//! container in this agent's life (`announced`), so a restarted agent fills it in.

use std::collections::{BTreeMap, BTreeSet};

use mycluster_core::service::Health;
use mycluster_core::wire::{DesiredState, TaskDoc, TaskReport, TaskState};
use mycluster_runtime::{Container, ContainerState};

pub use crate::stop::Stop;
use crate::verdict::Verdict;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a container for this task, then report it running (or failed).
    Start(Box<TaskDoc>),
    /// Stop and remove this container; `report` says the task was shut down.
    Remove {
        container: Container,
        report: Option<String>,
        stop: Stop,
    },
}

/// What to do now, and what to tell the manager (before the actions' own reports).
/// `verdicts` are the health checks' latest, by task id; `announced`, the containers this
/// agent reported running (with where they are reached) since it started.
pub fn plan(
    wanted: &[TaskDoc],
    containers: &[Container],
    verdicts: &BTreeMap<String, Verdict>,
    announced: &BTreeSet<String>,
) -> (Vec<Action>, Vec<TaskReport>) {
    let by_task: BTreeMap<&str, &Container> =
        containers.iter().map(|c| (c.task_id.as_str(), c)).collect();
    let wanted_ids: BTreeSet<&str> = wanted.iter().map(|t| t.id.as_str()).collect();
    let mut actions = Vec::new();
    let mut reports = Vec::new();

    for task in wanted {
        let container = by_task.get(task.id.as_str()).copied();
        if task.desired_state != DesiredState::Running {
            match container {
                Some(container) => actions.push(Action::Remove {
                    container: container.clone(),
                    report: Some(task.id.clone()),
                    stop: Stop::unwanted(task, container),
                }),
                None => reports.push(report(task, TaskState::Shutdown, None)),
            }
            continue;
        }
        // The verdict on this very container, if its health is checked.
        let verdict = verdicts.get(&task.id);
        let on_this = verdict.filter(|v| container.is_some_and(|c| c.id == v.container_id));
        let unhealthy = verdict.filter(|v| v.health == Health::Unhealthy);
        match container.map(|c| &c.state) {
            Some(ContainerState::Running) => {
                let Some(container) = container else { continue };
                match on_this {
                    // Replaced like a crashed container: removed first, reported failed
                    // once gone (below), so no second report races the removal.
                    Some(v) if v.health == Health::Unhealthy => actions.push(Action::Remove {
                        container: container.clone(),
                        report: None,
                        stop: Stop::of(task),
                    }),
                    Some(v)
                        if task.state != TaskState::Running || task.health != Some(v.health) =>
                    {
                        let mut r = report(task, TaskState::Running, None);
                        r.container_id = Some(container.id.clone());
                        r.health = Some(v.health);
                        r.health_message = v.message.clone();
                        reports.push(r);
                    }
                    Some(_) => {}
                    None if task.state != TaskState::Running
                        || (task.address.is_none()
                            && !task.ports.is_empty()
                            && !announced.contains(&container.id)) =>
                    {
                        let mut r = report(task, TaskState::Running, None);
                        r.container_id = Some(container.id.clone());
                        reports.push(r);
                    }
                    None => {}
                }
            }
            // Ended while being removed as unhealthy: that is the news, not its exit.
            Some(ContainerState::Exited { code, .. })
                if on_this.is_some_and(|v| v.health == Health::Unhealthy) =>
            {
                if let Some(v) = on_this {
                    if task.state != TaskState::Failed {
                        let mut r = unhealthy_report(task, v);
                        r.exit_code = Some(*code);
                        reports.push(r);
                    }
                }
            }
            Some(ContainerState::Exited { code, error }) => {
                let state = if *code == 0 && error.is_none() {
                    TaskState::Complete
                } else {
                    TaskState::Failed
                };
                let mut r = report(task, state, error.clone());
                r.exit_code = Some(*code);
                r.container_id = container.map(|c| c.id.clone());
                reports.push(r);
            }
            // Created but never started (a start cut short): begin again from scratch.
            Some(ContainerState::Created) => {
                if let Some(container) = container {
                    actions.push(Action::Remove {
                        container: container.clone(),
                        report: None,
                        stop: Stop::of(task),
                    });
                }
            }
            // Removed as unhealthy: now it is reported failed, and why.
            None if unhealthy.is_some() => {
                if let Some(v) = unhealthy {
                    if task.state != TaskState::Failed {
                        reports.push(unhealthy_report(task, v));
                    }
                }
            }
            None if task.state == TaskState::Running => reports.push(report(
                task,
                TaskState::Failed,
                Some("its container disappeared (removed, or its agent restarted)".into()),
            )),
            // Ended (failed, complete...): the manager replaces it; never started again.
            None if task.state.is_terminal() => {}
            None => actions.push(Action::Start(Box::new(task.clone()))),
        }
    }

    // Ours, but no longer assigned here: a finished, lost or forgotten task's container.
    for container in containers {
        if !wanted_ids.contains(container.task_id.as_str()) {
            actions.push(Action::Remove {
                container: container.clone(),
                report: None,
                stop: Stop::default(),
            });
        }
    }
    (actions, reports)
}

/// A task failed because its health check found it unhealthy.
fn unhealthy_report(task: &TaskDoc, verdict: &Verdict) -> TaskReport {
    let why = verdict
        .message
        .as_deref()
        .unwrap_or("its health check failed");
    let mut r = report(task, TaskState::Failed, Some(format!("unhealthy: {why}")));
    r.container_id = Some(verdict.container_id.clone());
    r.health = Some(Health::Unhealthy);
    r.health_message = verdict.message.clone();
    r
}

pub fn report(task: &TaskDoc, state: TaskState, error: Option<String>) -> TaskReport {
    TaskReport {
        error,
        ..TaskReport::new(task.id.clone(), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycluster_core::endpoints::DEREGISTER_DELAY;
    use std::time::Duration;

    fn task(id: &str, desired: DesiredState, state: TaskState) -> TaskDoc {
        TaskDoc {
            healthcheck: None,
            health: None,
            health_message: None,
            id: id.into(),
            service: "web".into(),
            slot: 0,
            image: Some("img".into()),
            command: None,
            env: Default::default(),
            worker: Some("w1".into()),
            desired_state: desired,
            state,
            message: String::new(),
            container_id: None,
            exit_code: None,
            error: None,
            created_at: 0.0,
            updated_at: 0.0,
            ports: Vec::new(),
            address: None,
            stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
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
    fn a_running_task_the_manager_has_no_address_for_is_reported_once() {
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
}
