//! Schedule: place pending tasks on workers. Filters first (`filters`: ready, not where
//! its slot moves from, a driver that runs it, its constraints, its volumes' host, room
//! for it), then a ranking (`rank`): the value of the service's spread attribute holding
//! the fewest of its slots, then fewest active tasks of the same service, then fewest
//! active tasks in all, then the worker's name. A task no worker can take stays pending
//! with the reason, counted per cause.

mod filters;
mod rank;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use filters::{eligible, fits, Cause};

use filters::{check, pinned, pins, room, unplaceable_reason, Held, UNPLACEABLE};
use rank::{Counts, Ranking};

use crate::service::{volume_name, MountKind, Volume};
use crate::{Change, ClusterState, Millis, Service, Task, TaskState, Worker, WorkerStatus};

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
    // which still hold their room while they stop (capacity and reservations).
    let mut loads: BTreeMap<&str, Load> = BTreeMap::new();
    for worker in state
        .workers
        .values()
        .filter(|w| w.status == WorkerStatus::Ready && !w.drain)
    {
        let load = Load {
            worker,
            active: state.load_of(&worker.name).active,
            held: Held::of(state, &worker.name),
        };
        loads.insert(&worker.name, load);
    }

    let mut pass = Pass {
        state,
        now,
        loads,
        changes: Vec::new(),
        volumes: HashSet::new(),
    };
    let mut start = 0;
    while start < pending.len() {
        let service = &pending[start].service;
        let end = start + pending[start..].partition_point(|t| &t.service == service);
        pass.place_service(&pending[start..end]);
        start = end;
    }
    pass.changes
}

struct Load<'a> {
    worker: &'a Worker,
    active: u32,
    held: Held,
}

/// One scheduling pass: what it placed so far is counted in the loads.
struct Pass<'a> {
    state: &'a ClusterState,
    now: Millis,
    loads: BTreeMap<&'a str, Load<'a>>,
    changes: Vec<Change>,
    /// Volumes whose records this pass wrote.
    volumes: HashSet<String>,
}

/// Where a slot is counted, best first: its task of the current template, its old task
/// (a rollout has not reached it yet), a task moving away.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Home {
    Moving,
    Old,
    Current,
}

impl<'a> Pass<'a> {
    /// Places one service's pending tasks, keeping its spread even.
    fn place_service(&mut self, tasks: &[&'a Task]) {
        let state = self.state;
        // The spread counts each slot once, where it will be: at its task of the current
        // template, or (while a rollout has not reached it yet) at its old task, whose
        // replacement goes to the same worker when that worker can take it, or (while
        // its replacement waits) at a task moving away. Counting old and new tasks both
        // would pile the new ones onto whichever worker sorts first, and a rollout would
        // leave a spread that a later scale-down (which stops the highest slots wherever
        // they run) makes worse. A replacement placed elsewhere moves its slot's count.
        let service = state.services.get(&tasks[0].service);
        let mut homes: HashMap<u32, (Home, &'a Worker)> = HashMap::new();
        let mut moving_from: HashMap<u32, Vec<&'a str>> = HashMap::new();
        for task in state
            .tasks_of_service(&tasks[0].service)
            .filter(|t| t.is_active())
        {
            let Some(worker) = task.worker.as_ref().and_then(|w| state.workers.get(w)) else {
                continue;
            };
            let home = if task.moving.is_some() {
                moving_from.entry(task.slot).or_default().push(&worker.name);
                Home::Moving
            } else if service.is_none_or(|s| task.runs(s)) {
                Home::Current
            } else {
                Home::Old
            };
            let entry = homes.entry(task.slot).or_insert((home, worker));
            if home > entry.0 {
                *entry = (home, worker);
            }
        }
        let attr = service.and_then(|s| s.spec.spread.as_ref()).map(|s| &s.0);
        let mut counts = Counts::new(attr);
        for (_, worker) in homes.values() {
            counts.shift(worker, true);
        }

        // Tasks of one template share their eligible workers; a rollout's old and new
        // templates (other constraints, reservations) do not.
        let mut templates: Vec<Vec<&'a Task>> = Vec::new();
        for task in tasks {
            match templates.iter_mut().find(|t| same_template(t[0], task)) {
                Some(group) => group.push(task),
                None => templates.push(vec![task]),
            }
        }
        for group in templates {
            let mut place = Placing {
                service,
                homes: &mut homes,
                moving_from: &moving_from,
                counts: &mut counts,
            };
            self.place_template(&group, &mut place);
        }
    }

    fn place_template(&mut self, tasks: &[&'a Task], place: &mut Placing<'_, 'a>) {
        let first = tasks[0];
        let candidates = self.loads.values().filter(|load| {
            eligible(first, load.worker).is_ok() && room(first, load.worker, &load.held).is_ok()
        });
        let mut ranking = Ranking::build(candidates.map(|l| (l.worker, l.active)), place.counts);
        // The reason for a task that no slot-specific filter concerns: the same for
        // every such task once nothing can be placed.
        let mut plain_reason: Option<String> = None;
        for task in tasks {
            let pins = pins(self.state, task);
            let avoid: &[&str] = place.moving_from.get(&task.slot).map_or(&[], Vec::as_slice);
            let ok = |name: &str| {
                !avoid.contains(&name)
                    && (pins.is_empty()
                        || self
                            .loads
                            .get(name)
                            .is_some_and(|l| pinned(l.worker, &pins).is_ok()))
            };
            let home = place.homes.get(&task.slot).copied();
            let at_old_home = home
                .filter(|(h, w)| {
                    *h == Home::Old
                        && ok(&w.name)
                        && self
                            .loads
                            .get(w.name.as_str())
                            .is_some_and(|l| ranking.contains(w, place.counts, l.active))
                })
                .map(|(_, w)| w.name.as_str());
            let Some(name) = at_old_home.or_else(|| ranking.best(ok)) else {
                let plain = pins.is_empty() && avoid.is_empty();
                let reason = match (&plain_reason, plain) {
                    (Some(reason), true) => reason.clone(),
                    _ => {
                        let reason = self.reason(task, &pins, avoid);
                        if plain {
                            plain_reason = Some(reason.clone());
                        }
                        reason
                    }
                };
                if task.message != reason {
                    let mut waiting = (*task).clone();
                    waiting.message = reason;
                    waiting.updated_at = self.now;
                    self.changes.push(Change::PutTask(waiting));
                }
                continue;
            };
            let Some(load) = self.loads.get(name) else {
                continue;
            };
            let worker = load.worker;
            // The slot is counted here now, and (if its replacement left it) no longer
            // where it was.
            let left = match home {
                Some((Home::Old | Home::Moving, was))
                    if at_old_home.is_none() && was.name != worker.name =>
                {
                    // A worker that is not ready is no candidate: only its group moves.
                    let active = self.loads.get(was.name.as_str()).map_or(0, |l| l.active);
                    Some((was, active))
                }
                _ => None,
            };
            ranking.take(worker, place.counts, load.active);
            let left_was_in = left.map(|(was, active)| ranking.take(was, place.counts, active));
            if at_old_home.is_none() {
                place.counts.shift(worker, true);
                if let Some((was, _)) = left {
                    place.counts.shift(was, false);
                }
                place.homes.insert(task.slot, (Home::Current, worker));
            }
            let Some(load) = self.loads.get_mut(name) else {
                continue;
            };
            load.active += 1;
            load.held.add(task);
            let has_room = room(first, worker, &load.held).is_ok();
            ranking.put_back(worker, place.counts, load.active, has_room);
            if let (Some((was, active)), Some(was_in)) = (left, left_was_in) {
                ranking.put_back(was, place.counts, active, was_in);
            }
            self.put(place.service, task, worker);
        }
    }

    /// Places `task` on `worker`, with the records of the volumes it mounts.
    fn put(&mut self, service: Option<&Service>, task: &Task, worker: &Worker) {
        let mut placed = task.clone();
        placed.worker = Some(worker.name.clone());
        placed.state = TaskState::Assigned;
        placed.message = String::new();
        placed.updated_at = self.now;
        self.changes.push(Change::PutTask(placed));
        for mount in task.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            if !self.volumes.insert(mount.source.clone()) {
                continue;
            }
            let record = match self.state.volumes.get(&mount.source) {
                None => Volume {
                    name: mount.source.clone(),
                    service: task.service.clone(),
                    source: spec_source(service, task, &mount.source),
                    slot: task.slot,
                    host: worker.host.clone(),
                    worker: worker.name.clone(),
                    remove: false,
                    created_at: self.now,
                },
                // Asked to be removed, and wanted again (a service re-created under the
                // same name before its agents removed it): kept, where it goes now.
                Some(v) if v.remove => Volume {
                    remove: false,
                    host: worker.host.clone(),
                    worker: worker.name.clone(),
                    ..v.clone()
                },
                // Made by a worker that did not say its host: now it is known.
                Some(v) if v.host.is_empty() && !worker.host.is_empty() => Volume {
                    host: worker.host.clone(),
                    worker: worker.name.clone(),
                    ..v.clone()
                },
                Some(_) => continue,
            };
            self.changes.push(Change::PutVolume(record));
        }
    }

    /// Why no worker can take `task`, with what this pass placed counted.
    fn reason(&self, task: &Task, pins: &[filters::Pin], avoid: &[&str]) -> String {
        let causes = self.state.workers.values().filter_map(|worker| {
            let held = match self.loads.get(worker.name.as_str()) {
                Some(load) => load.held,
                None => Held::of(self.state, &worker.name),
            };
            let moving_from = avoid.contains(&worker.name.as_str());
            check(task, worker, pins, moving_from, &held).err()
        });
        unplaceable_reason(self.state, task, causes, pins)
    }
}

/// What the tasks of one service share while they are placed.
struct Placing<'p, 'a> {
    service: Option<&'a Service>,
    homes: &'p mut HashMap<u32, (Home, &'a Worker)>,
    moving_from: &'p HashMap<u32, Vec<&'a str>>,
    counts: &'p mut Counts<'a>,
}

/// Whether two tasks of a service pass the same template filters and need the same room.
fn same_template(a: &Task, b: &Task) -> bool {
    a.image == b.image
        && a.command == b.command
        && a.constraints == b.constraints
        && a.resources.reservations == b.resources.reservations
        && a.mounts.is_empty() == b.mounts.is_empty()
}

/// The spec's source of a slot's volume `name` (`<service>-<source>-<slot>`).
fn spec_source(service: Option<&Service>, task: &Task, name: &str) -> String {
    let from_spec = service.and_then(|s| {
        s.spec
            .volumes
            .iter()
            .find(|v| !v.is_bind() && volume_name(&task.service, &v.source, task.slot) == name)
    });
    match from_spec {
        Some(v) => v.source.clone(),
        None => name
            .strip_prefix(&format!("{}-", task.service))
            .and_then(|rest| rest.strip_suffix(&format!("-{}", task.slot)))
            .unwrap_or(name)
            .to_string(),
    }
}
