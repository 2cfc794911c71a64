//! Carrying out the plan's actions — starting a task's container, stopping and removing
//! one — and saying where a running task is reached, for its `running` report (what
//! puts it in the ingresses' route table).
//!
//! Starts and stops take their turns from two pools: a stop may wait out a task's whole
//! grace period, so stops that do (a scale-down of replicas that ignore SIGTERM) must
//! not keep the starts behind them waiting — among them the replacements of a worker
//! that failed.
//!
//! A running task with ports whose address the runtime cannot tell is outside the route
//! table: its report goes without one, the plan reports it again at the next passes (its
//! container is not `announced` until a report carried the address), and the agent says
//! once, not at every pass, that the replica cannot be routed and why.

use std::sync::Arc;

use mycluster_core::wire::{TaskDoc, TaskReport};
use mycluster_core::TaskState;
use mycluster_runtime::{Container, ContainerState, RuntimeError};

use crate::plan::{report, Action};
use crate::{lock, workload, Shared};

/// Carries out `action` in the background, under `key` in `in_flight` (taken already),
/// and hands its report to the next pass. A stop's deregister delay is waited out before
/// it takes its turn, so it holds up no other action; a stop's grace period is waited
/// out in its turn of the stops', so it holds up no start.
pub(crate) fn launch(shared: Arc<Shared>, action: Action, key: String) {
    tokio::spawn(async move {
        if let Action::Remove {
            container, stop, ..
        } = &action
        {
            if !stop.delay.is_zero() {
                tracing::info!(
                    "agent {}: {} left the route table; stopping it in {:?}",
                    shared.config.name,
                    container.name,
                    stop.delay
                );
                tokio::select! {
                    // The agent stops: the container is left as it is.
                    _ = shared.quit.cancelled() => {
                        lock(&shared.in_flight).remove(&key);
                        return;
                    }
                    _ = tokio::time::sleep(stop.delay) => {}
                }
            }
        }
        let permits = match &action {
            Action::Start(_) => &shared.start_permits,
            Action::Remove { .. } => &shared.stop_permits,
        };
        let permit = permits.clone().acquire_owned().await.ok();
        let done = act(&shared, action).await;
        drop(permit);
        if let Some(done) = done {
            lock(&shared.finished).push(done);
        }
        lock(&shared.in_flight).remove(&key);
        shared.poke.notify_one();
    });
}

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
        r.address = address(shared, task, container).await;
        r.ports = shared.ports.reached(task, shared.runtime.driver());
    }
}

/// Where the runtime says `task`'s `container` is reached; none when it cannot say (the
/// report goes without it, and the manager keeps what it knew). For a task with ports
/// that keeps it out of the route table: said once per container, as a warning, and
/// once more when it is found.
async fn address(
    shared: &Shared,
    task: &TaskDoc,
    container: &Container,
) -> Option<std::net::IpAddr> {
    let name = &shared.config.name;
    let why = match shared.runtime.address(container).await {
        Ok(Some(address)) => {
            if lock(&shared.unroutable).remove(&container.id) {
                tracing::info!(
                    "agent {name}: {} is reached at {address}: it can be routed now",
                    container.name
                );
            }
            return Some(address);
        }
        // Nothing to route to: a task without ports does not need one.
        Ok(None) if task.ports.is_empty() => return None,
        Ok(None) => "the runtime gives it no address (it is gone, or on no network)".to_string(),
        Err(e) => format!("cannot tell where it is reached: {e}"),
    };
    if !lock(&shared.unroutable).insert(container.id.clone()) {
        tracing::debug!(
            "agent {name}: {} still has no address: {why}",
            container.name
        );
    } else if task.ports.is_empty() {
        tracing::warn!("agent {name}: {}: {why}", container.name);
    } else {
        tracing::warn!(
            "agent {name}: {} (service {}) cannot be routed: {why}; the ingresses send it \
             nothing until this agent finds its address, which it tries again at every pass",
            container.name,
            task.service
        );
    }
    None
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
    let began = std::time::Instant::now();
    let result = match shared.runtime.check(&spec) {
        Ok(()) => shared.runtime.start(&spec).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(id) => {
            shared.metrics.observe_start(began.elapsed());
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
            r.address = address(shared, task, &container).await;
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
