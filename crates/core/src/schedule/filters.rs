//! The filters a worker must pass to take a task, each explaining a refusal in words
//! that read after a count of workers ("2 lack label disk=ssd"), and the unplaceable
//! reason built from them. Shared by the scheduler and by a rebalance, which checks a
//! move's target with [`fits`].

use std::fmt;

use crate::service::{Bytes, Constraint, Cpus, MountKind};
use crate::worker::driver_cannot_run;
use crate::{ClusterState, Driver, Task, Worker, WorkerStatus};

/// How the message of a task no worker can take begins: the CLI's wait and the rollout
/// planner read it back (`is_unplaceable`).
pub(super) const UNPLACEABLE: &str = "no worker can take it";

/// Why one worker cannot take a task: the first filter it fails, in the order they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    Down,
    Draining,
    /// It holds a task of the same slot that is moving away from it (a drain or a
    /// rebalance): the replacement must start elsewhere.
    MovingFrom,
    /// Its driver cannot run the task (why: "the docker driver needs an image").
    CannotRun(&'static str),
    /// It does not satisfy one of the task's constraints.
    Constraint(Constraint),
    /// The task mounts a volume that lives on another host.
    VolumeHost {
        volume: String,
        host: String,
    },
    /// It holds as many tasks as its capacity allows.
    AtCapacity,
    /// Its CPUs, less what its tasks reserve, fall short of the reservation by this much.
    LacksCpus(Cpus),
    /// Its memory, less what its tasks reserve, falls short by this much.
    LacksMemory(Bytes),
}

impl Cause {
    /// The filter's place in the order: the reason lists causes in it.
    fn stage(&self) -> u8 {
        match self {
            Cause::Down => 0,
            Cause::Draining => 1,
            Cause::MovingFrom => 2,
            Cause::CannotRun(_) => 3,
            Cause::Constraint(_) => 4,
            Cause::VolumeHost { .. } => 5,
            Cause::AtCapacity => 6,
            Cause::LacksCpus(_) => 7,
            Cause::LacksMemory(_) => 8,
        }
    }

    /// Whether two workers refused for these causes are counted together: the same
    /// cause, or a shortfall of the same resource (of whatever size).
    fn same_kind(&self, other: &Cause) -> bool {
        match (self, other) {
            (Cause::LacksCpus(_), Cause::LacksCpus(_)) => true,
            (Cause::LacksMemory(_), Cause::LacksMemory(_)) => true,
            _ => self == other,
        }
    }

    /// The words after a count of `n` workers ("2 lack label disk=ssd", "1 is down");
    /// `at_least` when the workers counted together lack different amounts (the smallest
    /// is said: "2 lack at least 256 MiB of memory").
    pub fn phrase(&self, n: usize, at_least: bool) -> String {
        let one = n == 1;
        let verb = |singular: &str, plural: &str| if one { singular } else { plural }.to_string();
        let least = if at_least { "at least " } else { "" };
        match self {
            Cause::Down => verb("is down", "are down"),
            Cause::Draining => verb("is draining", "are draining"),
            Cause::MovingFrom => verb("is where it moves from", "are where it moves from"),
            Cause::CannotRun(why) => format!("cannot run it ({why})"),
            Cause::Constraint(c) if one => c.miss_one(),
            Cause::Constraint(c) => c.miss(),
            Cause::VolumeHost { volume, host } => format!(
                "{} not on host {host} where volume {volume} lives",
                verb("is", "are")
            ),
            Cause::AtCapacity => verb("is at capacity", "are at capacity"),
            Cause::LacksCpus(c) => {
                let unit = if c.0 == 1000 && !at_least {
                    "CPU"
                } else {
                    "CPUs"
                };
                format!("{} {least}{c} {unit}", verb("lacks", "lack"))
            }
            Cause::LacksMemory(b) => format!("{} {least}{b} of memory", verb("lacks", "lack")),
        }
    }

    fn shortfall(&self) -> u64 {
        match self {
            Cause::LacksCpus(c) => c.0,
            Cause::LacksMemory(b) => b.0,
            _ => 0,
        }
    }
}

/// One worker's refusal: "is draining", "lacks label disk=ssd", "lacks 512 MiB of
/// memory" (to read after the worker's name).
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.phrase(1, false))
    }
}

/// What a worker holds for the room filters: live tasks and their reservations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Held {
    pub live: u32,
    pub cpus: u64,
    pub memory: u64,
}

impl Held {
    pub fn of(state: &ClusterState, worker: &str) -> Held {
        let load = state.load_of(worker);
        Held {
            live: load.live,
            cpus: load.reserved_cpus,
            memory: load.reserved_memory,
        }
    }

    /// `task` added.
    pub fn add(&mut self, task: &Task) {
        let r = task.resources.reservations;
        self.live = self.live.saturating_add(1);
        self.cpus = self.cpus.saturating_add(r.cpus.map_or(0, |c| c.0));
        self.memory = self.memory.saturating_add(r.memory.map_or(0, |m| m.0));
    }
}

/// A volume the task mounts that lives on one host: the task goes only there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pin<'a> {
    pub volume: &'a str,
    pub host: &'a str,
}

/// The hosts `task`'s volumes live on (records being removed do not pin).
pub(super) fn pins<'a>(state: &'a ClusterState, task: &'a Task) -> Vec<Pin<'a>> {
    task.mounts
        .iter()
        .filter(|m| m.kind == MountKind::Volume)
        .filter_map(|m| state.volumes.get(&m.source))
        .filter(|v| !v.host.is_empty() && !v.remove)
        .map(|v| Pin {
            volume: &v.name,
            host: &v.host,
        })
        .collect()
}

/// Whether `worker` can take `task` now (ready, not the worker a task of its slot moves
/// away from, able to run it, within its constraints, on its volumes' host, with room
/// for it), and if not the first cause. What the scheduler filters with, and what a
/// rebalance checks a move's target against. The task is taken as not on the worker yet:
/// its own reservation is counted on top of what the worker's live tasks hold.
pub fn fits(state: &ClusterState, task: &Task, worker: &Worker) -> Result<(), Cause> {
    let moving_from = state.tasks_on_worker(&worker.name).any(|t| {
        t.id != task.id
            && t.service == task.service
            && t.slot == task.slot
            && t.is_active()
            && t.moving.is_some()
    });
    check(
        task,
        worker,
        &pins(state, task),
        moving_from,
        &Held::of(state, &worker.name),
    )
}

/// Every filter, in order.
pub(super) fn check(
    task: &Task,
    worker: &Worker,
    pins: &[Pin],
    moving_from: bool,
    held: &Held,
) -> Result<(), Cause> {
    status(worker)?;
    if moving_from {
        return Err(Cause::MovingFrom);
    }
    runs(task, worker)?;
    constraints(task, worker)?;
    pinned(worker, pins)?;
    room(task, worker, held)
}

/// The filters that depend only on the task's template, not its slot or the worker's
/// load: what makes a worker eligible for a service's spread (the scheduler's and a
/// rebalance's).
pub fn eligible(task: &Task, worker: &Worker) -> Result<(), Cause> {
    status(worker)?;
    runs(task, worker)?;
    constraints(task, worker)
}

fn status(worker: &Worker) -> Result<(), Cause> {
    match worker.status {
        // Drained by its operator: draining whatever its status says.
        WorkerStatus::Ready if worker.drain => Err(Cause::Draining),
        WorkerStatus::Ready => Ok(()),
        WorkerStatus::Down => Err(Cause::Down),
        WorkerStatus::Draining => Err(Cause::Draining),
    }
}

fn runs(task: &Task, worker: &Worker) -> Result<(), Cause> {
    if let Some(why) = driver_cannot_run(
        worker.driver,
        task.image.as_deref(),
        task.command.as_deref(),
    ) {
        return Err(Cause::CannotRun(why));
    }
    if worker.driver == Some(Driver::Process) && !task.mounts.is_empty() {
        return Err(Cause::CannotRun("the process driver cannot mount volumes"));
    }
    Ok(())
}

fn constraints(task: &Task, worker: &Worker) -> Result<(), Cause> {
    match task.constraints.iter().find(|c| !c.allows(worker)) {
        Some(c) => Err(Cause::Constraint(c.clone())),
        None => Ok(()),
    }
}

pub(super) fn pinned(worker: &Worker, pins: &[Pin]) -> Result<(), Cause> {
    match pins.iter().find(|p| p.host != worker.host) {
        Some(p) => Err(Cause::VolumeHost {
            volume: p.volume.to_string(),
            host: p.host.to_string(),
        }),
        None => Ok(()),
    }
}

/// Room for one more task and its reservations. A resource the worker did not say it
/// has is not bounded.
pub(super) fn room(task: &Task, worker: &Worker, held: &Held) -> Result<(), Cause> {
    if worker.capacity.is_some_and(|cap| held.live >= cap) {
        return Err(Cause::AtCapacity);
    }
    let wants = task.resources.reservations;
    if let (Some(need), Some(has)) = (wants.cpus, worker.resources.cpus) {
        let total = held.cpus.saturating_add(need.0);
        if total > has.0 {
            return Err(Cause::LacksCpus(Cpus(total - has.0)));
        }
    }
    if let (Some(need), Some(has)) = (wants.memory, worker.resources.memory) {
        let total = held.memory.saturating_add(need.0);
        if total > has.0 {
            return Err(Cause::LacksMemory(Bytes(total - has.0)));
        }
    }
    Ok(())
}

/// Says why no worker can take a task, for `GET /tasks` and the logs: each worker
/// counted once, under its first failing cause, causes in filter order, e.g. "no worker
/// can take it: 2 lack label disk=ssd, 1 is draining, 1 lacks 512 MiB of memory". A
/// volume whose host has no ready worker is said outright.
pub(super) fn unplaceable_reason(
    state: &ClusterState,
    task: &Task,
    causes: impl Iterator<Item = Cause>,
    pins: &[Pin],
) -> String {
    if state.workers.is_empty() {
        return format!("{UNPLACEABLE}: no workers registered");
    }
    let mut tally: Vec<Tally> = Vec::new();
    for cause in causes {
        let short = cause.shortfall();
        if let Some(entry) = tally.iter_mut().find(|e| e.cause.same_kind(&cause)) {
            entry.count += 1;
            entry.most = entry.most.max(short);
            if short < entry.cause.shortfall() {
                entry.cause = cause;
            }
            continue;
        }
        let within = match &cause {
            Cause::Constraint(c) => task.constraints.iter().position(|x| x == c),
            Cause::VolumeHost { volume, .. } => {
                task.mounts.iter().position(|m| &m.source == volume)
            }
            _ => None,
        }
        .unwrap_or(0);
        tally.push(Tally {
            order: (cause.stage(), within, tally.len()),
            cause,
            count: 1,
            most: short,
        });
    }
    tally.sort_by_key(|e| e.order);
    let parts: Vec<String> = tally
        .iter()
        .map(|e| {
            let differ = e.cause.shortfall() != e.most;
            format!("{} {}", e.count, e.cause.phrase(e.count, differ))
        })
        .collect();
    let mut reason = format!("{UNPLACEABLE}: {}", parts.join(", "));
    for pin in pins {
        let mut on_host = state.workers.values().filter(|w| w.host == pin.host);
        let first = on_host.next();
        if first.is_some_and(|w| w.status == WorkerStatus::Ready)
            || on_host.any(|w| w.status == WorkerStatus::Ready)
        {
            continue;
        }
        let whose = if first.is_some() {
            "whose workers are all down or draining"
        } else {
            "where no worker is registered"
        };
        reason.push_str(&format!(
            "; its volume {} lives on host {}, {whose}",
            pin.volume, pin.host
        ));
    }
    reason
}

/// Workers refused for one kind of cause: the cause (with the smallest shortfall, for a
/// resource), how many, and the largest shortfall.
struct Tally {
    /// Filter order, then order within the filter (a constraint's, a mount's), then
    /// first appearance.
    order: (u8, usize, usize),
    cause: Cause,
    count: usize,
    most: u64,
}
