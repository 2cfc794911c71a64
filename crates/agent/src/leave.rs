//! Leaving the cluster when the agent is stopped (its `stop` signal: SIGTERM or SIGINT
//! in `mycluster agent`): it tells the manager (`POST …/workers/<name>/leave`), which has
//! the worker declared down at once instead of after missed heartbeats, so its `replace`
//! tasks are replaced elsewhere at once. Not when it was superseded (the worker is
//! another agent's now), and not in `mycluster dev` (`AgentConfig::leave_on_stop`: the
//! manager stops with its agents there, and their containers are removed).
//!
//! Then it stops its `on_disconnect: "stop"` tasks, each within its grace period: an
//! agent that is gone cannot stop them when its lease runs out, and the manager starts
//! their replacements once the lease, their grace and a margin have passed since the
//! last renewal — by then they are stopped. They are not reported: the manager takes any
//! call of the agent for a sign of life, which would clear the departure it was just
//! told of. `replace` tasks are left as they are (as before: the docker driver's
//! containers keep running until the manager, on the worker's return, has them stopped;
//! the process driver's end with the agent).

use std::sync::Arc;
use std::time::Duration;

use mycluster_core::wire::TaskDoc;
use tokio::task::JoinSet;

use crate::fence::cut_off_by_lease;
use crate::plan::Stop;
use crate::Shared;

/// How long one call to the manager may take while the agent leaves.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times the agent tries to say it is leaving.
const LEAVE_TRIES: u32 = 2;

pub(crate) async fn leave(shared: &Arc<Shared>) {
    let name = &shared.config.name;
    for attempt in 1..=LEAVE_TRIES {
        let client = shared.client();
        let call = client.leave(name, &shared.config.instance);
        let why = match tokio::time::timeout(LEAVE_TIMEOUT, call).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    "agent {name}: told the manager it is leaving: the worker is declared \
                     down and its tasks replaced elsewhere"
                );
                break;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {LEAVE_TIMEOUT:?}"),
        };
        if attempt == LEAVE_TRIES {
            tracing::warn!(
                "agent {name}: cannot tell the manager it is leaving ({why}): the worker is \
                 declared down once its heartbeats are missed"
            );
        } else {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    stop_singletons(shared).await;
}

/// Stops the `on_disconnect: "stop"` tasks, all at once, each within its grace.
async fn stop_singletons(shared: &Arc<Shared>) {
    let name = &shared.config.name;
    let wanted = shared.wanted.borrow().clone();
    let tasks: Vec<TaskDoc> = wanted
        .iter()
        .flat_map(|list| list.iter())
        .filter(|t| cut_off_by_lease(t))
        .cloned()
        .collect();
    if tasks.is_empty() {
        return;
    }
    let containers = match shared.runtime.list().await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::warn!(
                "agent {name}: cannot list containers to stop its on_disconnect=stop tasks: {e}"
            );
            return;
        }
    };
    let mut stops = JoinSet::new();
    let mut names = Vec::new();
    for task in tasks {
        let Some(container) = containers.iter().find(|c| c.task_id == task.id) else {
            continue;
        };
        names.push(container.name.clone());
        let (shared, container) = (shared.clone(), container.clone());
        stops.spawn(async move {
            if let Err(e) = shared
                .runtime
                .remove(&container, Stop::of(&task).grace)
                .await
            {
                tracing::warn!(
                    "agent {}: cannot stop {}: {e}",
                    shared.config.name,
                    container.name
                );
            }
        });
    }
    if names.is_empty() {
        return;
    }
    tracing::info!(
        "agent {name}: stopping {} on_disconnect=stop tasks before it exits: {}",
        names.len(),
        names.join(", ")
    );
    while stops.join_next().await.is_some() {}
}
