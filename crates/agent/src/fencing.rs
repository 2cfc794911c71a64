//! Fencing, the acting part (the rules are `fence`'s): the lease timer that cuts off the
//! worker's `on_disconnect: "stop"` tasks the moment the lease runs out, the publication
//! of every task list (which kills at once what a newer epoch no longer holds), and the
//! fetch of the list right after a renewal (`relist`).
//!
//! Lease expiry: a timer of its own (not the sync pass: it must act within milliseconds
//! of the expiry, not at the next second) takes the `stop` tasks out of the list the plan
//! sees and stops their containers with their own grace period and no deregister delay
//! (the worker is cut off: the manager takes its tasks out of the route table once it is
//! down). Each is reported `failed` once its container is gone, whenever the manager
//! answers again.
//!
//! A newer epoch: the manager declared the worker down while it was cut off, and has
//! replaced its tasks elsewhere (and taken them out of the route table). The containers
//! of tasks its new list does not hold are killed (no grace, no delay) before the sync
//! pass does anything else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycluster_background::{Loop, LoopControl};
use mycluster_core::wire::{AssignedTasks, TaskDoc, TaskReport};
use mycluster_core::TaskState;
use mycluster_runtime::Container;
use tokio_util::sync::CancellationToken;

use crate::fence::{self, Expiry, LeaseState, Source};
use crate::join::ends_agent;
use crate::plan::{report, Stop};
use crate::{lock, Shared};

/// How long the lease timer waits when there is no lease to count down (before the
/// first registration, or once it ran out), unless a renewal wakes it first.
const LEASE_IDLE: Duration = Duration::from_secs(1);

/// How long the fetch of the task list after a renewal may take: it holds up the
/// heartbeats (the next renews the lease only after it).
const RELIST_TIMEOUT: Duration = Duration::from_secs(3);

/// Counts the lease down, and cuts off the `stop` tasks when it runs out. Woken by each
/// renewal (`Shared::renewals`), so it sleeps until the very moment of the expiry.
pub(crate) async fn lease_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let name = format!("agent {} lease", shared.config.name);
    Loop::new(name, LEASE_IDLE, stop)
        .woken_by(&shared.renewals)
        .run(|| {
            let shared = shared.clone();
            async move {
                let now = Instant::now();
                let expiry = {
                    let mut fencing = lock(&shared.fencing);
                    let wanted = shared.wanted.borrow().clone();
                    let tasks = wanted.as_deref().map_or(&[][..], |t| t.as_slice());
                    match fencing.expire(now, tasks) {
                        Some(expiry) => {
                            if wanted.is_some() {
                                shared
                                    .wanted
                                    .send_replace(Some(Arc::new(expiry.tasks.clone())));
                            }
                            expiry
                        }
                        None => {
                            return Ok(match fencing.lease_at(now) {
                                LeaseState::Left(left) => LoopControl::After(left),
                                _ => LoopControl::After(LEASE_IDLE),
                            })
                        }
                    }
                };
                cut_off(&shared, expiry).await;
                Ok(LoopControl::After(LEASE_IDLE))
            }
        })
        .await;
}

/// The lease ran out: stops the tasks it cut off (each reported once gone).
async fn cut_off(shared: &Arc<Shared>, expiry: Expiry) {
    let name = &shared.config.name;
    let silent = expiry.silent_for.as_secs_f64();
    if expiry.cut.is_empty() {
        tracing::warn!(
            "agent {name}: lease expired: cut off from the manager for {silent:.1}s \
             (no on_disconnect=stop task here to stop)"
        );
        return;
    }
    let names: Vec<String> = expiry
        .cut
        .iter()
        .map(|c| format!("{} (service {})", c.task.id, c.task.service))
        .collect();
    tracing::warn!(
        "agent {name}: lease expired: cut off from the manager for {silent:.1}s, stopping {} \
         on_disconnect=stop tasks: {}",
        names.len(),
        names.join(", ")
    );
    // The sync pass stops what this list misses (a container that shows up later): see
    // `sweep`.
    let containers = match shared.runtime.list().await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::warn!("agent {name}: cannot list containers to stop them: {e}");
            shared.poke.notify_one();
            return;
        }
    };
    for cut in &expiry.cut {
        match containers.iter().find(|c| c.task_id == cut.task.id) {
            Some(container) => stop_cut(shared, container.clone(), &cut.task, &cut.error),
            None => report_cut(shared, &cut.task, &cut.error, None),
        }
    }
    shared.poke.notify_one();
}

/// Stops the container of a task the lease cut off, in the background: its own grace
/// period, no deregister delay; reported failed once gone (with `error`). Keyed in
/// `in_flight` like any removal, so the plan does not stop it a second time with the
/// driver's grace.
pub(crate) fn stop_cut(shared: &Arc<Shared>, container: Container, task: &TaskDoc, error: &str) {
    let key = format!("container:{}", container.id);
    let ours = lock(&shared.in_flight).insert(key.clone());
    let (shared, task, error) = (shared.clone(), task.clone(), error.to_string());
    tokio::spawn(async move {
        let grace = Stop::of(&task).grace;
        match shared.runtime.remove(&container, grace).await {
            Ok(()) => {
                tracing::info!(
                    "agent {}: stopped {} (its lease expired)",
                    shared.config.name,
                    container.name
                );
                report_cut(&shared, &task, &error, Some(&container));
            }
            // Still there: the next pass's sweep tries again.
            Err(e) => tracing::warn!(
                "agent {}: cannot stop {}: {e}",
                shared.config.name,
                container.name
            ),
        }
        if ours {
            lock(&shared.in_flight).remove(&key);
        }
        shared.poke.notify_one();
    });
}

/// Hands the failed report of a cut task to the sync pass, unless it did already.
fn report_cut(shared: &Shared, task: &TaskDoc, error: &str, container: Option<&Container>) {
    if !lock(&shared.fencing).report(&task.id) {
        return;
    }
    lock(&shared.finished).push(TaskReport {
        container_id: container.map(|c| c.id.clone()),
        ..report(task, TaskState::Failed, Some(error.to_string()))
    });
}

/// The sync pass's part, with the containers it found: stops a container of a cut task
/// that no stop is under way for (one started just before the expiry, or one the lease
/// timer could not list), and reports cut tasks that have no container. Returns the
/// containers it took over, for the pass to leave alone.
pub(crate) fn sweep(shared: &Arc<Shared>, containers: &[Container]) -> Vec<String> {
    let cuts: Vec<(TaskDoc, String)> = {
        let fencing = lock(&shared.fencing);
        fencing
            .cuts()
            .map(|c| (c.task.clone(), c.error.clone()))
            .collect()
    };
    let mut taken = Vec::new();
    for (task, error) in cuts {
        match containers.iter().find(|c| c.task_id == task.id) {
            Some(container) => {
                taken.push(container.id.clone());
                let busy = lock(&shared.in_flight).contains(&format!("container:{}", container.id));
                if !busy {
                    stop_cut(shared, container.clone(), &task, &error);
                }
            }
            None => {
                // A start launched just before the expiry may still create it.
                let starting = lock(&shared.in_flight).contains(&format!("task:{}", task.id));
                if !starting {
                    report_cut(shared, &task, &error, None);
                }
            }
        }
    }
    taken
}

/// Publishes a task list from the manager, unless it is stale (see `Fencing::take`):
/// what the plan may see of it, and the volumes it asks removed. A list of a newer
/// epoch first kills every container it does not hold. Whether it was published.
pub(crate) async fn publish(shared: &Arc<Shared>, list: AssignedTasks, source: Source) -> bool {
    let AssignedTasks {
        index,
        epoch,
        lease,
        tasks,
        remove_volumes,
    } = list;
    let list = fence::List {
        index,
        epoch,
        lease: fence::lease_of(lease),
        tasks,
    };
    let epoch_moved = {
        let mut fencing = lock(&shared.fencing);
        let Some(taken) = fencing.take(&list, source) else {
            return false;
        };
        // Under the fencing lock: a pass reads the list and its generation together.
        shared.wanted.send_replace(Some(Arc::new(taken.tasks)));
        taken.epoch_moved
    };
    lock(&shared.volumes).asked(remove_volumes);
    if let Some((old, new)) = epoch_moved {
        kill_unassigned(shared, &list.tasks, old, new).await;
        lock(&shared.fencing).killed();
    }
    // The lease may have changed.
    shared.renewals.notify_one();
    shared.poke.notify_one();
    true
}

/// The worker's epoch moved on (it was declared down, and its tasks replaced elsewhere):
/// kills at once every container of a task `listed` does not hold.
async fn kill_unassigned(shared: &Arc<Shared>, listed: &[TaskDoc], old: u64, new: u64) {
    let name = &shared.config.name;
    let containers = match shared.runtime.list().await {
        Ok(containers) => containers,
        Err(e) => {
            // The plan removes them (with the driver's grace) once it can list them.
            tracing::warn!(
                "agent {name}: epoch {old} -> {new}: cannot list containers to stop those \
                 of tasks no longer assigned here: {e}"
            );
            return;
        }
    };
    let doomed = fence::unassigned(listed, &containers);
    if doomed.is_empty() {
        tracing::info!(
            "agent {name}: this worker was declared down meanwhile (epoch {old} -> {new}); \
             none of its containers runs a task assigned elsewhere"
        );
        return;
    }
    let names: Vec<&str> = doomed.iter().map(|c| c.name.as_str()).collect();
    tracing::warn!(
        "agent {name}: this worker was declared down while cut off from the manager (epoch \
         {old} -> {new}): killing {} containers of tasks replaced elsewhere: {}",
        names.len(),
        names.join(", ")
    );
    for container in doomed {
        kill(shared, container.clone());
    }
}

/// Kills `container` in the background: no grace, no deregister delay.
fn kill(shared: &Arc<Shared>, container: Container) {
    let key = format!("container:{}", container.id);
    let ours = lock(&shared.in_flight).insert(key.clone());
    let shared = shared.clone();
    tokio::spawn(async move {
        match shared
            .runtime
            .remove(&container, Some(Duration::ZERO))
            .await
        {
            Ok(()) => tracing::info!("agent {}: killed {}", shared.config.name, container.name),
            Err(e) => tracing::warn!(
                "agent {}: cannot kill {}: {e}",
                shared.config.name,
                container.name
            ),
        }
        if ours {
            lock(&shared.in_flight).remove(&key);
        }
        shared.poke.notify_one();
    });
}

/// Fetches the task list at once and publishes it: right after a renewal, when the agent
/// is fenced or the manager named a newer epoch. The long-poll, which may hang on a
/// connection the split broke, starts over from it.
pub(crate) async fn relist(shared: &Arc<Shared>) -> Result<(), String> {
    let client = shared.client();
    let fetch = client.assigned_tasks(
        &shared.config.name,
        &shared.config.instance,
        None,
        Duration::ZERO,
    );
    let list = match tokio::time::timeout(RELIST_TIMEOUT, fetch).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            ends_agent(shared, &e);
            return Err(format!("cannot get tasks: {e}"));
        }
        Err(_) => return Err(format!("no task list within {RELIST_TIMEOUT:?}")),
    };
    let was_fenced = lock(&shared.fencing).fenced();
    publish(shared, list, Source::Relist).await;
    shared.rewatch.notify_one();
    if was_fenced {
        tracing::info!(
            "agent {}: lease renewed and task list fetched: on_disconnect=stop tasks may \
             start again",
            shared.config.name
        );
    }
    Ok(())
}
