//! Carrying out the plan's actions — starting a task's container, stopping and removing
//! one — and saying where a running task is reached, for its `running` report (what
//! puts it in the ingresses' route table).

use mycluster_core::wire::{TaskDoc, TaskReport};
use mycluster_core::TaskState;
use mycluster_runtime::{Container, ContainerState, RuntimeError};

use crate::plan::{report, Action};
use crate::{workload, Shared};

/// Adds where each task reported running is reached (its address, and its ports) to
/// the report, unless it says already.
pub(crate) async fn add_where_reached(
    shared: &Shared,
    tasks: &[TaskDoc],
    containers: &[Container],
    reports: &mut [TaskReport],
) {
    for r in reports
        .iter_mut()
        .filter(|r| r.state == TaskState::Running && r.address.is_none())
    {
        let Some(task) = tasks.iter().find(|t| t.id == r.id) else {
            continue;
        };
        let Some(container) = containers
            .iter()
            .find(|c| Some(&c.id) == r.container_id.as_ref())
        else {
            continue;
        };
        r.address = address(shared, container).await;
        r.ports = shared.ports.reached(task, shared.runtime.driver());
    }
}

/// Where the runtime says `container` is reached; none when it cannot say (the report
/// goes without it, and the manager keeps what it knew).
async fn address(shared: &Shared, container: &Container) -> Option<std::net::IpAddr> {
    match shared.runtime.address(container).await {
        Ok(address) => address,
        Err(e) => {
            tracing::warn!(
                "agent {}: cannot tell where {} is reached: {e}",
                shared.config.name,
                container.name
            );
            None
        }
    }
}

/// Carries out one action; returns the report it leads to, if any.
pub(crate) async fn act(shared: &Shared, action: Action) -> Option<TaskReport> {
    match action {
        Action::Start(task) => Some(start(shared, &task).await),
        Action::Remove {
            container,
            report: wanted_report,
            stop,
        } => match shared.runtime.remove(&container, stop.grace).await {
            Ok(()) => {
                tracing::info!("agent {}: removed {}", shared.config.name, container.name);
                wanted_report.map(|id| TaskReport {
                    container_id: Some(container.id.clone()),
                    ..TaskReport::new(id, TaskState::Shutdown)
                })
            }
            Err(e) => {
                tracing::warn!(
                    "agent {}: cannot remove {}: {e}",
                    shared.config.name,
                    container.name
                );
                None
            }
        },
    }
}

async fn start(shared: &Shared, task: &TaskDoc) -> TaskReport {
    let driver = shared.runtime.driver();
    let ports = match shared.ports.assign(task, driver) {
        Ok(ports) => ports,
        Err(e) => {
            tracing::warn!("agent {}: {e}", shared.config.name);
            return report(task, TaskState::Failed, Some(e.to_string()));
        }
    };
    let spec = workload::spec(task, &ports, driver, &shared.host);
    let result = match shared.runtime.check(&spec) {
        Ok(()) => shared.runtime.start(&spec).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(id) => {
            tracing::info!(
                "agent {}: started {} for service {}",
                shared.config.name,
                spec.container_name(),
                task.service
            );
            let container = Container {
                task_id: task.id.clone(),
                id: id.clone(),
                name: spec.container_name(),
                state: ContainerState::Running,
            };
            let mut r = report(task, TaskState::Running, None);
            r.address = address(shared, &container).await;
            r.ports = ports;
            r.container_id = Some(id);
            r
        }
        Err(e) => {
            shared.ports.release(&task.id);
            tracing::warn!(
                "agent {}: cannot start {}: {e}",
                shared.config.name,
                spec.container_name()
            );
            let error = match e {
                RuntimeError::Engine(why) => format!("the container engine failed: {why}"),
                other => other.to_string(),
            };
            report(task, TaskState::Failed, Some(error))
        }
    }
}
