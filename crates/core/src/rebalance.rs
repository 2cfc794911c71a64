//! The rebalance planner: which replica of a service to move next so that its spread
//! over the workers that can run it evens out. Pure: a function of the state. Swarm,
//! Nomad and Kubernetes leave a returning worker empty until something else changes;
//! here `service rebalance` (or the manager's `--rebalance`, on every pass) moves one
//! replica of a service at a time, start-first, through the same move a drain makes
//! (`reconcile` starts a replacement for the slot, and stops the old task once the
//! replacement is healthy).
//!
//! The rules, for a service of `replicas` slots:
//! - Only a settled service moves: no rollout under way, every slot served by exactly
//!   one task of the current template that is running and healthy, nothing else live.
//!   So a move never takes it below `replicas` healthy, and with the one replacement it
//!   never has more than `replicas + 1` active.
//! - The spread counts the service's tasks on each *eligible* worker (ready, able to run
//!   it, within its constraints). With a `spread` attribute, the values come first, as
//!   the scheduler spreads: while the value holding the most replicas holds more than
//!   one more than the value holding the fewest, a replica moves from the one to the
//!   other; then the workers within each value.
//! - A move goes from the worker with the most to the one with the fewest, while they
//!   differ by more than one, and only to a worker that can take the task now
//!   (`schedule::fits`: room, resources, its volume's host).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reconcile::moves::leaving;
use crate::schedule::{eligible, fits};
use crate::{ClusterState, Service, Task, Worker};

/// One replica to move: the task of `slot` from worker `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Move {
    pub service: String,
    pub slot: u32,
    pub task: String,
    pub from: String,
    pub to: String,
    /// Why, for people: "w1 runs 3 replicas, w4 runs 1".
    pub why: String,
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}: {} -> {} ({})",
            self.service, self.slot, self.from, self.to, self.why
        )
    }
}

/// Whether `service` is settled enough to move a replica: see the module's rules.
pub fn settled(state: &ClusterState, service: &Service) -> bool {
    if service.spec.replicas == 0 {
        return false;
    }
    if service
        .rollout
        .as_ref()
        .is_some_and(|r| r.state.is_moving() && r.completed_at.is_none())
    {
        return false;
    }
    let mut slots = vec![0u32; service.spec.replicas as usize];
    for task in state.tasks_of_service(service.name()) {
        if !task.is_live() {
            continue;
        }
        let serving = task.is_active()
            && task.is_healthy()
            && task.moving.is_none()
            && task.runs(service)
            && task.worker.is_some();
        let Some(count) = slots.get_mut(task.slot as usize).filter(|_| serving) else {
            return false;
        };
        *count += 1;
    }
    slots.iter().all(|n| *n == 1)
}

/// Whether `service` is busy with something that ends on its own: a rollout under way,
/// a task stopping, or a replica moving (a drain, a rebalance).
pub fn busy(state: &ClusterState, service: &Service) -> bool {
    let rolling = service
        .rollout
        .as_ref()
        .is_some_and(|r| r.state.is_moving() && r.completed_at.is_none());
    rolling
        || state
            .tasks_of_service(service.name())
            .any(|t| (t.is_live() && !t.is_active()) || leaving(state, t))
}

/// The next replica of `service` to move, if its spread is uneven and it is settled.
pub fn next_move(state: &ClusterState, service: &Service) -> Option<Move> {
    if !settled(state, service) {
        return None;
    }
    let tasks: Vec<&Task> = state
        .tasks_of_service(service.name())
        .filter(|t| t.is_active())
        .collect();
    let sample = *tasks.first()?;
    let spread = service.spec.spread.as_ref().map(|s| &s.0);
    // Each spread group: its eligible workers with the service's tasks on each.
    let mut groups: BTreeMap<Option<&str>, Vec<Member>> = BTreeMap::new();
    for worker in state
        .workers
        .values()
        .filter(|w| eligible(sample, w).is_ok())
    {
        let group = spread.and_then(|attr| attr.of(worker));
        let mine: Vec<&Task> = tasks
            .iter()
            .copied()
            .filter(|t| t.worker.as_deref() == Some(worker.name.as_str()))
            .collect();
        groups.entry(group).or_default().push((worker, mine));
    }
    // With a spread attribute, its values first, as the scheduler spreads: from the
    // value holding the most replicas to the one holding the fewest, while they differ
    // by more than one.
    if groups.len() > 1 {
        let held = |members: &Vec<Member>| members.iter().map(|(_, t)| t.len()).sum::<usize>();
        let mut values: Vec<&Vec<Member>> = groups.values().collect();
        values.sort_by_key(|members| held(members));
        if let (Some(fewest), Some(most)) = (values.first(), values.last()) {
            if held(most) > held(fewest) + 1 {
                if let Some(next) = move_between(state, service, most, fewest, false) {
                    return Some(next);
                }
            }
        }
    }
    // Then the workers of each value: the first value with a gap wider than one.
    groups
        .values()
        .find_map(|members| move_between(state, service, members, members, true))
}

/// A worker with the service's tasks on it.
type Member<'a> = (&'a Worker, Vec<&'a Task>);

/// A move from one of `sources` to one of `targets`: from the worker holding the most
/// of the service's tasks to the one holding the fewest that can take it now. With
/// `narrow`, only while the two differ by more than one (within one group); without,
/// the groups' counts have decided already.
fn move_between(
    state: &ClusterState,
    service: &Service,
    sources: &[Member],
    targets: &[Member],
    narrow: bool,
) -> Option<Move> {
    let total = |w: &Worker| state.load_of(&w.name).active;
    // The most loaded first: most of the service's tasks, then most tasks in all.
    let mut from: Vec<&Member> = sources.iter().filter(|(_, t)| !t.is_empty()).collect();
    from.sort_by(|a, b| {
        (b.1.len(), total(b.0), &a.0.name).cmp(&(a.1.len(), total(a.0), &b.0.name))
    });
    // The least loaded first, as the scheduler ranks: fewest of the service's tasks,
    // then fewest in all, then name.
    let mut to: Vec<&Member> = targets.iter().collect();
    to.sort_by(|a, b| (a.1.len(), total(a.0), &a.0.name).cmp(&(b.1.len(), total(b.0), &b.0.name)));
    for (source, on_source) in &from {
        for (target, on_target) in &to {
            if narrow && on_source.len() <= on_target.len() + 1 {
                break;
            }
            // The highest slot on the busiest worker: the one a scale-down stops first.
            let Some(task) = on_source.iter().max_by_key(|t| t.slot) else {
                continue;
            };
            if fits(state, task, target).is_err() {
                continue;
            }
            return Some(Move {
                service: service.spec.name.clone(),
                slot: task.slot,
                task: task.id.clone(),
                from: source.name.clone(),
                to: target.name.clone(),
                why: format!(
                    "{} runs {} replicas, {} runs {}",
                    source.name,
                    on_source.len(),
                    target.name,
                    on_target.len()
                ),
            });
        }
    }
    None
}
