//! Fencing, the pure part: what the agent knows of its lease and of its worker's epoch,
//! and what follows from it — when the lease runs out, which tasks that cuts off, which
//! list the plan may see, whether a pass may start a task, which containers a new epoch
//! kills. No clock and no I/O: the moments are passed in (the loops in `fencing` read
//! the clock and act).
//!
//! The lease (see `mycluster_core::lease`) is counted from the moment the agent *sent*
//! the last heartbeat (or registration) the manager acknowledged. Once it has run out,
//! the worker's `on_disconnect: "stop"` tasks are *cut off*: taken out of the list the
//! plan sees, stopped, and reported failed once stopped (the report goes whenever the
//! manager answers again). The agent stays *fenced* — no `stop` task is started or
//! restarted — until it holds a task list it asked for after a renewal: a list from
//! before (or from a long-poll that began before) may still name tasks the manager has
//! replaced meanwhile.
//!
//! The epoch: every heartbeat answer and task list names the worker's epoch. An answer
//! newer than the list the agent acts on means the worker was declared down while it was
//! cut off (its tasks are replaced elsewhere): the sync pass holds off (no start, no
//! report) until the agent fetched its list again and killed every container the new
//! list does not hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mycluster_core::lease::{self, DEFAULT_LEASE, MAX_LEASE};
use mycluster_core::service::OnDisconnect;
use mycluster_core::wire::{DesiredState, TaskDoc};
use mycluster_runtime::Container;

/// The lease a manager's answer names (seconds); the default when it names no duration.
pub fn lease_of(seconds: f64) -> Duration {
    match Duration::try_from_secs_f64(seconds) {
        Ok(lease) if !lease.is_zero() => lease.min(MAX_LEASE),
        _ => DEFAULT_LEASE,
    }
}

/// Whether `task` is cut off when the lease runs out: an `on_disconnect: "stop"` task
/// the manager wants running (one it asked to stop is being stopped already).
pub fn cut_off_by_lease(task: &TaskDoc) -> bool {
    task.on_disconnect == OnDisconnect::Stop && task.desired_state == DesiredState::Running
}

/// Why a task the lease cut off is reported failed.
pub fn lease_error(silent_for: Duration) -> String {
    format!(
        "stopped: the worker's lease expired (no answer from the manager for {:.1}s)",
        silent_for.as_secs_f64()
    )
}

/// The containers of tasks `list` does not hold: what a newer epoch kills at once.
pub fn unassigned<'a>(list: &[TaskDoc], containers: &'a [Container]) -> Vec<&'a Container> {
    containers
        .iter()
        .filter(|c| !list.iter().any(|t| t.id == c.task_id))
        .collect()
}

/// Where the lease stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Not renewed yet (the agent has not registered).
    Unknown,
    /// Runs out after this long.
    Left(Duration),
    /// Ran out: the last acknowledged renewal was sent this long ago.
    Expired(Duration),
}

/// A task the lease cut off.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub task: TaskDoc,
    /// What its failed report says.
    pub error: String,
    /// Whether that report was handed to the sync pass.
    pub reported: bool,
}

/// A task list as the manager sent it, for [`Fencing::take`].
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub index: u64,
    pub epoch: u64,
    pub lease: Duration,
    pub tasks: Vec<TaskDoc>,
}

/// Where a list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The long-poll, asked when the published list was of this generation: stale if
    /// another list was published meanwhile.
    Watch { generation: u64 },
    /// Fetched at once after a renewal (see `fencing::relist`): lifts the fence.
    Relist,
}

/// A list to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    /// What the plan may see.
    pub tasks: Vec<TaskDoc>,
    /// The list's epoch is newer than the one before (`(old, new)`): kill at once every
    /// container it does not hold, then call [`Fencing::killed`].
    pub epoch_moved: Option<(u64, u64)>,
}

/// What the lease cut off when it ran out.
#[derive(Debug, Clone, PartialEq)]
pub struct Expiry {
    /// How long since the last acknowledged renewal was sent.
    pub silent_for: Duration,
    /// The tasks cut off now.
    pub cut: Vec<Cut>,
    /// What the plan may see from now on.
    pub tasks: Vec<TaskDoc>,
}

#[derive(Debug, Clone)]
pub struct Fencing {
    /// When the last acknowledged renewal was sent.
    renewed: Option<Instant>,
    lease: Duration,
    /// The epoch the last heartbeat (or registration) answer named.
    heard_epoch: u64,
    /// The index and epoch of the published list; `None` before the first.
    list: Option<(u64, u64)>,
    /// The lease ran out and no list was fetched after a renewal since.
    fenced: bool,
    /// A newer epoch's kills are being launched.
    killing: bool,
    /// The tasks the lease cut off, by id, until the manager's list no longer wants them
    /// running.
    cut: BTreeMap<String, Cut>,
    /// Moves on with each list published and each expiry: a pass planned on an older one
    /// starts nothing.
    generation: u64,
}

impl Default for Fencing {
    fn default() -> Self {
        Fencing {
            renewed: None,
            lease: DEFAULT_LEASE,
            heard_epoch: 0,
            list: None,
            fenced: false,
            killing: false,
            cut: BTreeMap::new(),
            generation: 0,
        }
    }
}

impl Fencing {
    /// The manager acknowledged a heartbeat (or registration) sent at `sent`, naming the
    /// worker's `epoch` (and the lease, when it says).
    pub fn renewed(&mut self, sent: Instant, lease: Option<Duration>, epoch: u64) {
        self.renewed = Some(self.renewed.map_or(sent, |r| r.max(sent)));
        if let Some(lease) = lease {
            self.lease = lease;
        }
        self.heard_epoch = epoch;
    }

    /// How long ago the lease was last renewed (`None`: never), as of `now`.
    pub fn lease_age(&self, now: Instant) -> Option<Duration> {
        self.renewed.map(|r| now.saturating_duration_since(r))
    }

    /// Whether the manager ever acknowledged this agent (it registered).
    pub fn known(&self) -> bool {
        self.renewed.is_some()
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn lease_at(&self, now: Instant) -> LeaseState {
        let Some(renewed) = self.renewed else {
            return LeaseState::Unknown;
        };
        let since = now.saturating_duration_since(renewed);
        if lease::expired(since, self.lease) {
            LeaseState::Expired(since)
        } else {
            LeaseState::Left(self.lease - since)
        }
    }

    /// Whether the agent must fetch its list at once: it is fenced, or the manager named
    /// a newer epoch than its list's.
    pub fn must_relist(&self) -> bool {
        self.fenced || self.epoch_behind()
    }

    pub fn fenced(&self) -> bool {
        self.fenced
    }

    fn epoch_behind(&self) -> bool {
        self.list.is_some_and(|(_, epoch)| self.heard_epoch > epoch)
    }

    /// Whether the sync pass must do nothing (start nothing, report nothing): the list
    /// it would act on is of an older epoch, or the new epoch's kills are not launched.
    pub fn holds_off(&self) -> bool {
        self.epoch_behind() || self.killing
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The index of the published list, for the next long-poll.
    pub fn index(&self) -> Option<u64> {
        self.list.map(|(index, _)| index)
    }

    /// At `now`, with `wanted` the list the plan sees: if the lease ran out and the
    /// agent is not fenced yet, fences it and says what that cuts off.
    pub fn expire(&mut self, now: Instant, wanted: &[TaskDoc]) -> Option<Expiry> {
        let LeaseState::Expired(silent_for) = self.lease_at(now) else {
            return None;
        };
        if self.fenced {
            return None;
        }
        self.fenced = true;
        self.generation += 1;
        let error = lease_error(silent_for);
        let mut cut = Vec::new();
        for task in wanted.iter().filter(|t| cut_off_by_lease(t)) {
            if self.cut.contains_key(&task.id) {
                continue;
            }
            let c = Cut {
                task: task.clone(),
                error: error.clone(),
                reported: false,
            };
            self.cut.insert(task.id.clone(), c.clone());
            cut.push(c);
        }
        Some(Expiry {
            silent_for,
            cut,
            tasks: self.visible(wanted),
        })
    }

    /// Takes a list from the manager: `None` if it is stale (a long-poll answered after
    /// another list was published), else what to publish.
    pub fn take(&mut self, list: &List, source: Source) -> Option<Taken> {
        if let Source::Watch { generation } = source {
            if generation != self.generation {
                return None;
            }
        }
        self.lease = list.lease;
        let epoch_moved = match self.list {
            Some((_, old)) if list.epoch > old => Some((old, list.epoch)),
            _ => None,
        };
        if source == Source::Relist {
            self.fenced = false;
        }
        // A cut task stays out of the plan's sight until the manager no longer wants it
        // running: it ended (our report), or was replaced.
        self.cut.retain(|id, _| {
            list.tasks.iter().any(|t| {
                &t.id == id && t.desired_state == DesiredState::Running && !t.state.is_terminal()
            })
        });
        self.list = Some((list.index, list.epoch));
        self.generation += 1;
        if epoch_moved.is_some() {
            self.killing = true;
        }
        Some(Taken {
            tasks: self.visible(&list.tasks),
            epoch_moved,
        })
    }

    /// The new epoch's kills are launched: the sync pass may go on.
    pub fn killed(&mut self) {
        self.killing = false;
    }

    /// What the plan may see of `tasks`: none the lease cut off, and while fenced no
    /// `stop` task wanted running.
    pub fn visible(&self, tasks: &[TaskDoc]) -> Vec<TaskDoc> {
        tasks
            .iter()
            .filter(|t| !self.cut.contains_key(&t.id))
            .filter(|t| !(self.fenced && cut_off_by_lease(t)))
            .cloned()
            .collect()
    }

    /// Whether a pass that planned on the list of `generation` may start `task` now.
    pub fn may_start(&self, task: &TaskDoc, generation: u64) -> bool {
        let fenced_out = self.fenced && task.on_disconnect == OnDisconnect::Stop;
        generation == self.generation
            && !self.holds_off()
            && !self.cut.contains_key(&task.id)
            && !fenced_out
    }

    /// The cut task `id`, if the lease cut it off.
    pub fn cut(&self, id: &str) -> Option<&Cut> {
        self.cut.get(id)
    }

    /// Marks the cut task `id` reported; whether its report is due: not sent yet, or
    /// forgotten already (the manager no longer wants it running: a report is harmless).
    pub fn report(&mut self, id: &str) -> bool {
        match self.cut.get_mut(id) {
            Some(cut) if cut.reported => false,
            Some(cut) => {
                cut.reported = true;
                true
            }
            None => true,
        }
    }

    /// The tasks the lease cut off that the manager still wants running.
    pub fn cuts(&self) -> impl Iterator<Item = &Cut> {
        self.cut.values()
    }

    /// The cut tasks not reported yet.
    pub fn unreported(&self) -> impl Iterator<Item = &Cut> {
        self.cut.values().filter(|c| !c.reported)
    }
}

#[cfg(test)]
mod tests;
