//! Moves: a replica leaves its worker without an outage. A task *leaves* when its
//! worker is draining (`worker drain`) or a rebalance marked it `moving`. Its slot gets
//! a replacement beside it (start-first, placed elsewhere by the scheduler), and the
//! leaving task stops only once the replacement is healthy; a leaving task that is not
//! running (pending, assigned, starting) stops at once. One slot of a service moves at
//! a time, and none while a rollout starts tasks, so a service never has more than
//! `replicas + 1` active tasks and never fewer than `replicas` healthy because of a
//! move. A replacement that cannot be placed leaves the old task running (its pending
//! reason says why the drain does not finish). A service with named volumes moves
//! stop-first instead (see `ServiceSpec::replace_order`): a slot's volume is mounted by
//! one task at a time, so its replica is down while it moves.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::rebalance;
use crate::service::UpdateOrder;
use crate::{Change, ClusterState, DesiredState, Millis, Service, Task, TaskState, WorkerStatus};

/// Whether `task` is leaving its worker: active, and marked `moving` or on a draining
/// worker.
pub(crate) fn leaving(state: &ClusterState, task: &Task) -> bool {
    task.is_active() && (task.moving.is_some() || on_draining(state, task))
}

fn on_draining(state: &ClusterState, task: &Task) -> bool {
    task.worker
        .as_ref()
        .and_then(|w| state.workers.get(w))
        .is_some_and(|w| w.status == WorkerStatus::Draining)
}

/// Why a leaving task leaves, for people.
fn why(state: &ClusterState, task: &Task) -> String {
    match (&task.moving, &task.worker) {
        (Some(why), _) => why.clone(),
        (None, Some(worker)) if on_draining(state, task) => format!("worker {worker} is draining"),
        _ => "moving".into(),
    }
}

/// Plans `service`'s moves on `tasks` (its tasks as reconcile has them so far): marks the
/// next rebalance move when `rebalance` says to look for one (the manager's
/// `--rebalance` or the service's own request, on a pass that has changed nothing else
/// of the service), stops
/// leaving tasks whose replacement is healthy (or that serve nothing), and adds to
/// `starts` the slot whose replacement starts now. Answers the service when its
/// rebalance request is done (its spread is even).
pub(super) fn plan(
    state: &ClusterState,
    service: &Service,
    tasks: &mut [Cow<'_, Task>],
    starts: &mut Vec<u32>,
    rebalance: bool,
    now: Millis,
    changes: &mut Vec<Change>,
) -> Option<Service> {
    let mut done_service = None;
    let any_leaving = tasks.iter().any(|t| leaving(state, t));
    if rebalance && !any_leaving {
        match rebalance::next_move(state, service) {
            Some(next) => {
                if let Some(task) = tasks.iter_mut().find(|t| t.id == next.task) {
                    let mut marked = Task::clone(task);
                    marked.moving = Some(format!("rebalance: {}", next.why));
                    marked.updated_at = now;
                    changes.push(Change::PutTask(marked.clone()));
                    *task = Cow::Owned(marked);
                }
            }
            None if service.rebalance
                && (service.spec.replicas == 0 || rebalance::settled(state, service)) =>
            {
                let mut cleared = service.clone();
                cleared.rebalance = false;
                changes.push(Change::PutService(cleared.clone()));
                done_service = Some(cleared);
            }
            None => {}
        }
    }

    let mut in_flight = false;
    let mut candidates: Vec<u32> = Vec::new();
    // The running leaving task that serves each slot meanwhile (healthy first, then the
    // newest): a replacement that was itself caught by a drain leaves too, and one of
    // them is enough.
    let mut keep: BTreeMap<u32, (bool, Millis, &str)> = BTreeMap::new();
    for task in tasks.iter() {
        if leaving(state, task) && task.state == TaskState::Running {
            let key = (task.is_healthy(), task.created_at, task.id.as_str());
            let entry = keep.entry(task.slot).or_insert(key);
            *entry = (*entry).max(key);
        }
    }
    let newest: BTreeMap<u32, String> = keep
        .into_iter()
        .map(|(slot, (_, _, id))| (slot, id.to_string()))
        .collect();
    // A rebalance move whose replacement no worker can take is given up: the task stays
    // where it is, and the replacement goes (a later rebalance may find room). A drain is
    // never given up: its task waits beside the pending replacement.
    let mut cancelled: Vec<usize> = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if task.moving.is_none() || on_draining(state, task) || !task.is_active() {
            continue;
        }
        let stuck = tasks.iter().enumerate().find(|(_, t)| {
            t.slot == task.slot
                && t.is_pending()
                && !leaving(state, t)
                && crate::schedule::is_unplaceable(&t.message)
        });
        if let Some((j, _)) = stuck {
            cancelled.extend([i, j]);
        }
    }
    for pair in cancelled.chunks(2) {
        let mut kept = Task::clone(&tasks[pair[0]]);
        kept.moving = None;
        kept.updated_at = now;
        let mut dropped = Task::clone(&tasks[pair[1]]);
        dropped.desired = DesiredState::Shutdown;
        dropped.state = TaskState::Shutdown;
        dropped.message = format!("rebalance given up: {}", dropped.message);
        dropped.updated_at = now;
        changes.push(Change::PutTask(kept.clone()));
        changes.push(Change::PutTask(dropped.clone()));
        tasks[pair[0]] = Cow::Owned(kept);
        tasks[pair[1]] = Cow::Owned(dropped);
    }
    for i in 0..tasks.len() {
        if !leaving(state, &tasks[i]) {
            continue;
        }
        let task = &tasks[i];
        let replacement = tasks
            .iter()
            .find(|t| t.slot == task.slot && t.is_active() && !leaving(state, t));
        let stop = if task.state != TaskState::Running {
            Some(why(state, task))
        } else if newest.get(&task.slot).is_some_and(|id| *id != task.id) {
            Some(format!(
                "another task serves slot {} while it moves ({})",
                task.slot,
                why(state, task)
            ))
        } else {
            match replacement {
                Some(new) if new.is_healthy() => Some(format!(
                    "moved to {} ({})",
                    new.worker.as_deref().unwrap_or("another worker"),
                    why(state, task)
                )),
                Some(_) => {
                    in_flight = true;
                    None
                }
                None => {
                    if task.slot < service.spec.replicas {
                        candidates.push(task.slot);
                    }
                    None
                }
            }
        };
        if let Some(message) = stop {
            let mut next = Task::clone(&tasks[i]);
            next.desired = DesiredState::Shutdown;
            next.message = message;
            if next.state == TaskState::Pending {
                next.state = TaskState::Shutdown;
            }
            next.updated_at = now;
            changes.push(Change::PutTask(next.clone()));
            tasks[i] = Cow::Owned(next);
        }
    }
    // One slot at a time, never while a rollout starts tasks, never past replicas + 1.
    let active = tasks.iter().filter(|t| t.is_active()).count() as u64;
    if in_flight || !starts.is_empty() || active > u64::from(service.spec.replicas) {
        return done_service;
    }
    let Some(slot) = candidates.into_iter().min() else {
        return done_service;
    };
    if service.spec.replace_order() == UpdateOrder::StartFirst {
        starts.push(slot);
        return done_service;
    }
    // Stop-first (a slot's volume is mounted by one task at a time, or the service asks
    // for it): the leaving task stops, and reconcile starts its slot's next task once it
    // is gone; only while every other slot is served, healthy.
    let busy = tasks.iter().any(|t| {
        (t.desired == DesiredState::Shutdown && t.is_live()) || (t.is_active() && !t.is_healthy())
    });
    if busy {
        return done_service;
    }
    if let Some(i) = tasks
        .iter()
        .position(|t| t.slot == slot && leaving(state, t) && t.state == TaskState::Running)
    {
        let mut next = Task::clone(&tasks[i]);
        next.desired = DesiredState::Shutdown;
        let because = if service.spec.update.order == UpdateOrder::StopFirst {
            "the service updates stop-first"
        } else {
            "its slot's volume is mounted by one task at a time"
        };
        next.message = format!("moving stop-first ({}): {because}", why(state, &next));
        next.updated_at = now;
        changes.push(Change::PutTask(next.clone()));
        tasks[i] = Cow::Owned(next);
    }
    done_service
}
