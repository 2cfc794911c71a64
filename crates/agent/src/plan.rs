//! The agent's decision, as a pure function: given the tasks the manager assigned to this
//! worker and the containers the runtime has, what to start, what to remove, and what to
//! report. Level-triggered: it looks only at the two lists, so a pass that was missed or
//! failed is repaired by the next.

use std::collections::{BTreeMap, BTreeSet};

use mycluster_core::wire::{DesiredState, TaskDoc, TaskReport, TaskState};
use mycluster_runtime::{Container, ContainerState};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a container for this task, then report it running (or failed).
    Start(TaskDoc),
    /// Stop and remove this container; `report` says the task was shut down.
    Remove {
        container: Container,
        report: Option<String>,
    },
}

/// What to do now, and what to tell the manager (before the actions' own reports).
pub fn plan(wanted: &[TaskDoc], containers: &[Container]) -> (Vec<Action>, Vec<TaskReport>) {
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
                }),
                None => reports.push(report(task, TaskState::Shutdown, None)),
            }
            continue;
        }
        match container.map(|c| &c.state) {
            Some(ContainerState::Running) => {
                if task.state != TaskState::Running {
                    let mut r = report(task, TaskState::Running, None);
                    r.container_id = container.map(|c| c.id.clone());
                    reports.push(r);
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
                    });
                }
            }
            None if task.state == TaskState::Running => reports.push(report(
                task,
                TaskState::Failed,
                Some("its container disappeared (removed, or its agent restarted)".into()),
            )),
            None => actions.push(Action::Start(task.clone())),
        }
    }

    // Ours, but no longer assigned here: a finished, lost or forgotten task's container.
    for container in containers {
        if !wanted_ids.contains(container.task_id.as_str()) {
            actions.push(Action::Remove {
                container: container.clone(),
                report: None,
            });
        }
    }
    (actions, reports)
}

pub fn report(task: &TaskDoc, state: TaskState, error: Option<String>) -> TaskReport {
    TaskReport {
        health: None,
        health_message: None,
        id: task.id.clone(),
        state,
        container_id: None,
        exit_code: None,
        error,
        message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
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
        let (actions, _) = plan(&list.tasks, &[]);
        assert_eq!(actions, [Action::Start(list.tasks[0].clone())]);
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
        let (actions, reports) = plan(&wanted, &containers);
        assert_eq!(actions, [Action::Start(wanted[0].clone())]);
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
        assert_eq!(plan(&wanted, &containers), (vec![], vec![]));
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
        let (actions, reports) = plan(&wanted, &containers);
        assert_eq!(
            actions,
            [
                Action::Remove {
                    container: containers[0].clone(),
                    report: Some("a".into())
                },
                Action::Remove {
                    container: containers[1].clone(),
                    report: None
                },
            ]
        );
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (reports[0].id.as_str(), reports[0].state),
            ("b", TaskState::Shutdown)
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
        let (actions, reports) = plan(&wanted, &containers);
        assert!(actions.is_empty());
        assert_eq!(reports[0].state, TaskState::Complete);
        assert_eq!(reports[1].state, TaskState::Failed);
        assert_eq!(reports[1].exit_code, Some(137));
        assert_eq!(reports[1].error.as_deref(), Some("OOM killed"));
    }

    #[test]
    fn a_running_task_without_a_container_failed() {
        let wanted = [task("a", DesiredState::Running, TaskState::Running)];
        let (actions, reports) = plan(&wanted, &[]);
        assert!(actions.is_empty());
        assert_eq!(reports[0].state, TaskState::Failed);
        assert!(reports[0].error.as_deref().unwrap().contains("disappeared"));
    }
}
