//! Schedule: place pending tasks on workers. Filters first (ready, below capacity), then a
//! spread ranking: fewest active tasks of the same service, then fewest active tasks in
//! all, then the worker's name. A task no worker can take stays pending with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::worker::driver_cannot_run;
use crate::{Change, ClusterState, Millis, Task, TaskState, Worker, WorkerStatus};

/// How the message of a task no worker can take begins: the CLI's wait and the rollout
/// planner read it back (`is_unplaceable`).
const UNPLACEABLE: &str = "no worker can take it";

/// Whether a pending task's message is the scheduler's word that no worker can take it.
pub fn is_unplaceable(message: &str) -> bool {
    message.starts_with(UNPLACEABLE)
}

/// Placements (and new pending reasons) for every pending task.
pub fn schedule(state: &ClusterState, now: Millis) -> Vec<Change> {
    let mut pending: Vec<&Task> = state.pending_tasks().collect();
    if pending.is_empty() {
        return Vec::new();
    }
    pending.sort_by(|a, b| (&a.service, a.slot, &a.id).cmp(&(&b.service, b.slot, &b.id)));

    // Load of every worker that may take work: active tasks (the spread) and live ones,
    // which still hold resources while they stop (the capacity).
    let mut loads: BTreeMap<&str, Load> = BTreeMap::new();
    for worker in state
        .workers
        .values()
        .filter(|w| w.status == WorkerStatus::Ready)
    {
        let held = state.load_of(&worker.name);
        let load = Load {
            worker,
            active: held.active,
            live: held.live,
        };
        loads.insert(&worker.name, load);
    }

    let mut changes = Vec::new();
    let mut start = 0;
    while start < pending.len() {
        let service = &pending[start].service;
        let end = start + pending[start..].partition_point(|t| &t.service == service);
        place_service(state, &pending[start..end], &mut loads, now, &mut changes);
        start = end;
    }
    changes
}

struct Load<'a> {
    worker: &'a Worker,
    active: u32,
    live: u32,
}

impl Load<'_> {
    fn has_room(&self) -> bool {
        self.worker.capacity.is_none_or(|cap| self.live < cap)
    }
}

/// Places one service's pending tasks, keeping its spread even.
fn place_service<'a>(
    state: &ClusterState,
    tasks: &[&Task],
    loads: &mut BTreeMap<&'a str, Load<'a>>,
    now: Millis,
    changes: &mut Vec<Change>,
) {
    // The spread counts each slot once, where it will be: at its task of the current
    // template, or (while a rollout has not reached it yet) at its old task, whose
    // replacement goes to the same worker when that worker can take it. Counting old
    // and new tasks both would pile the new ones onto whichever worker sorts first, and
    // a rollout would leave a spread that a later scale-down (which stops the highest
    // slots wherever they run) makes worse.
    let service = state.services.get(&tasks[0].service);
    let mut homes: HashMap<u32, (bool, &str)> = HashMap::new();
    for task in state
        .tasks_of_service(&tasks[0].service)
        .filter(|t| t.is_active())
    {
        let Some(worker) = &task.worker else { continue };
        let current = service.is_none_or(|s| task.runs(s));
        let home = homes.entry(task.slot).or_insert((current, worker.as_str()));
        if current && !home.0 {
            *home = (true, worker.as_str());
        }
    }
    let mut same_service: HashMap<&str, u32> = HashMap::new();
    for (_, worker) in homes.values() {
        *same_service.entry(worker).or_default() += 1;
    }
    let old_home: HashMap<u32, &str> = homes
        .iter()
        .filter(|(_, (current, _))| !current)
        .map(|(slot, (_, worker))| (*slot, *worker))
        .collect();
    let first = tasks[0];
    let cannot_run = |load: &Load| {
        driver_cannot_run(
            load.worker.driver,
            first.image.as_deref(),
            first.command.as_deref(),
        )
    };
    // Candidates ordered by the ranking; the first is the best.
    let mut ranked: BTreeSet<(u32, u32, &'a str)> = loads
        .iter()
        .filter(|(_, load)| load.has_room() && cannot_run(load).is_none())
        .map(|(name, load)| {
            (
                same_service.get(name).copied().unwrap_or(0),
                load.active,
                *name,
            )
        })
        .collect();

    for task in tasks {
        let best = ranked.first().copied();
        let home = old_home
            .get(&task.slot)
            .and_then(|home| ranked.iter().find(|(_, _, name)| name == home).copied());
        let pick = home.or(best);
        if let Some(entry) = pick {
            ranked.remove(&entry);
        }
        match pick {
            Some((mine, active, name)) => {
                let mut placed = (*task).clone();
                placed.worker = Some(name.to_string());
                placed.state = TaskState::Assigned;
                placed.message = String::new();
                placed.updated_at = now;
                changes.push(Change::PutTask(placed));
                let Some(load) = loads.get_mut(name) else {
                    continue;
                };
                load.active += 1;
                load.live += 1;
                if load.has_room() {
                    // A slot replaced at its old home was counted there already.
                    let slots = if home.is_some() { mine } else { mine + 1 };
                    ranked.insert((slots, active + 1, name));
                }
            }
            None => {
                let reason = unplaceable_reason(state, loads, &cannot_run);
                if task.message != reason {
                    let mut waiting = (*task).clone();
                    waiting.message = reason;
                    waiting.updated_at = now;
                    changes.push(Change::PutTask(waiting));
                }
            }
        }
    }
}

/// Says why no worker can take a task, for `GET /tasks` and the logs, e.g. "no worker
/// can take it: 1 down, 2 cannot run it (the docker driver needs an image)".
fn unplaceable_reason(
    state: &ClusterState,
    loads: &BTreeMap<&str, Load>,
    cannot_run: &dyn Fn(&Load) -> Option<&'static str>,
) -> String {
    if state.workers.is_empty() {
        return format!("{UNPLACEABLE}: no workers registered");
    }
    let count = |status| {
        state
            .workers
            .values()
            .filter(|w| w.status == status)
            .count()
    };
    let mut reasons: Vec<(usize, String)> = vec![
        (count(WorkerStatus::Down), "down".into()),
        (count(WorkerStatus::Draining), "draining".into()),
    ];
    let mut incapable: BTreeMap<&str, usize> = BTreeMap::new();
    let mut full = 0;
    for load in loads.values() {
        match cannot_run(load) {
            Some(why) => *incapable.entry(why).or_default() += 1,
            None => full += usize::from(!load.has_room()),
        }
    }
    reasons.extend(
        incapable
            .into_iter()
            .map(|(why, n)| (n, format!("cannot run it ({why})"))),
    );
    reasons.push((full, "at capacity".into()));
    let parts: Vec<String> = reasons
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    format!("{UNPLACEABLE}: {}", parts.join(", "))
}

/// Whether `worker` can take `task` now (ready, able to run it, within its constraints,
/// its volume's host, and its room), and if not the first cause, in words that read
/// after a count of workers ("lack label disk=ssd"). What the scheduler filters with, and
/// what a rebalance checks a move's target against.
pub fn fits(state: &ClusterState, task: &Task, worker: &Worker) -> Result<(), String> {
    if worker.status != WorkerStatus::Ready {
        return Err(format!("are {}", worker.status));
    }
    if let Some(why) = driver_cannot_run(
        worker.driver,
        task.image.as_deref(),
        task.command.as_deref(),
    ) {
        return Err(format!("cannot run it ({why})"));
    }
    if let Some(c) = task.constraints.iter().find(|c| !c.allows(worker)) {
        return Err(c.miss());
    }
    let load = state.load_of(&worker.name);
    if worker.capacity.is_some_and(|cap| load.live >= cap) {
        return Err("are at capacity".into());
    }
    Ok(())
}
