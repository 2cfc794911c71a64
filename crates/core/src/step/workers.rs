//! What agents and the monitor change: a worker registering, a down worker beating
//! again, the monitor's down verdict, and an agent's report of what really runs.

use std::collections::HashMap;
use std::time::Duration;

use crate::commands::{self, CommandError};
use crate::identity::{self, Admission, Caller};
use crate::wire::{Ignored, Registration, RelocationDoc, SkippedDoc, TaskReport};
use crate::worker::heartbeat_interval;
use crate::{ClusterState, Task, TaskState, Txn, Worker, WorkerStatus};

use super::{Applied, Command, Context, HeardFrom, NoteWhen, Scope};

/// An agent joins, or joins again after a restart (see `commands::register_worker`). The
/// registration counts as a heartbeat, noted before the commit: a second agent's
/// registration queued behind this one must find the name held. Who registers decides,
/// on the state the commit is made on, whether it may and whether the worker gets the
/// fresh credential (`identity::admit`); a new name past `--max-workers` is refused.
pub struct Register {
    pub registration: Registration,
    /// Who registers, as the manager authenticated the call.
    pub by: Caller,
    /// The hash of a credential the manager made for this registration: the worker's
    /// from now on if `identity::admit` says it gets one (the manager then hands the
    /// secret to the agent).
    pub fresh_credential: Option<String>,
}

impl Register {
    /// A registration in a cluster without authentication (tests, `--insecure-no-auth`).
    pub fn open(registration: Registration) -> Register {
        Register {
            registration,
            by: Caller::Open,
            fresh_credential: None,
        }
    }
}

/// A registration's answer: the worker now, and as it was before (`None`: new).
#[derive(Debug, Clone)]
pub struct Registered {
    pub worker: Worker,
    pub before: Option<Worker>,
    /// The worker got the fresh credential: its secret goes to the agent.
    pub issued: bool,
}

impl Command for Register {
    type Outcome = Registered;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Registered>, CommandError> {
        let registration = self.registration;
        let name = registration.name.clone();
        let admission = identity::admit(&txn.state, &name, &registration.instance, &self.by)?;
        let before = txn.state.workers.get(&name).cloned();
        if let (None, Some(max)) = (&before, ctx.limits.max_workers) {
            if txn.state.workers.len() >= max {
                return Err(CommandError::Limit(format!(
                    "this cluster takes at most {max} workers (--max-workers): remove one \
                     (`mycluster worker rm NAME`) or start the manager with a higher \
                     --max-workers"
                )));
            }
        }
        let (credential, issued) = match (admission, self.fresh_credential) {
            (Admission::Issue, Some(fresh)) => (Some(fresh), true),
            _ => (before.as_ref().and_then(|w| w.credential.clone()), false),
        };
        let heard = ctx.heard.last_heard(&name);
        let worker = commands::register_worker(txn, registration, heard, ctx.now, credential)?;
        let interval = heartbeat_interval(txn.state.workers.len(), ctx.max_heartbeats_per_second);
        // A worker that was down comes back with nothing: its services may need it.
        let reconcile = match &before {
            Some(old) if old.status == WorkerStatus::Down => Scope::All,
            _ => Scope::Nothing,
        };
        Ok(Applied {
            heard: Some(HeardFrom {
                worker: worker.name.clone(),
                interval: Some(interval),
                when: NoteWhen::Queued,
            }),
            outcome: Registered {
                worker,
                before,
                issued,
            },
            reconcile,
        })
    }
}

/// A worker declared down beats again: it is ready again, or draining if its operator
/// drained it (any other status is left as it is). Only the agent instance that
/// holds the worker may bring it back (checked again here, on the latest state: another
/// agent may have taken it over since the heartbeat was read).
pub struct WorkerBack {
    pub worker: String,
    pub instance: String,
}

impl Command for WorkerBack {
    type Outcome = Worker;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Worker>, CommandError> {
        let worker = txn
            .state
            .workers
            .get(&self.worker)
            .ok_or_else(|| CommandError::WorkerNotFound(self.worker.clone()))?;
        identity::check_holder(worker, &self.instance)?;
        // Only a down worker comes back; a draining one stays draining.
        if worker.status != WorkerStatus::Down {
            return Ok(Applied::new(worker.clone(), Scope::Nothing));
        }
        let status = worker.up_status();
        let worker = commands::set_worker_status(txn, &self.worker, status, ctx.now)?;
        Ok(Applied::new(worker, Scope::All))
    }
}

/// An agent's report of its tasks (see `commands::report_tasks`). Answers the reports
/// that were not taken. A report counts as a heartbeat.
pub struct Report {
    pub worker: String,
    pub instance: String,
    pub tasks: Vec<TaskReport>,
    /// Volumes the agent removed, as its task list asked (`remove_volumes`).
    pub removed_volumes: Vec<String>,
}

impl Command for Report {
    type Outcome = Vec<Ignored>;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Vec<Ignored>>, CommandError> {
        let (touched, ignored) =
            commands::report_tasks(txn, &self.worker, &self.instance, self.tasks, ctx.now)?;
        if !self.removed_volumes.is_empty() {
            let host = txn
                .state
                .workers
                .get(&self.worker)
                .map(|w| w.host.clone())
                .unwrap_or_default();
            super::admin::volumes_removed(txn, &host, &self.removed_volumes);
        }
        Ok(Applied {
            outcome: ignored,
            reconcile: Scope::Services(touched),
            heard: Some(HeardFrom {
                worker: self.worker,
                interval: None,
                when: NoteWhen::Committed,
            }),
        })
    }
}

/// The monitor's verdict on one or more workers, in one commit: each is marked down, its
/// tasks lost, and their replacements placed by the usual spread. With `silent_for`, a
/// worker heard from more recently than that is left as it is (it beat again between the
/// monitor's look and its call). An unknown name refuses the whole verdict (a worker
/// removed since the monitor looked is left out of its next one).
pub struct DeclareDown {
    pub workers: Vec<String>,
    pub silent_for: Option<Duration>,
}

/// What a verdict did: each worker declared down, and each left alone with why.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub down: Vec<Downed>,
    pub skipped: Vec<SkippedDoc>,
}

/// A worker declared down, with where each of its tasks went.
#[derive(Debug, Clone)]
pub struct Downed {
    pub worker: String,
    /// It was down already: nothing was relocated now.
    pub was_down: bool,
    pub relocated: Vec<RelocationDoc>,
}

impl Command for DeclareDown {
    type Outcome = Verdict;

    fn apply(mut self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Verdict>, CommandError> {
        self.workers.sort();
        self.workers.dedup();
        let mut verdict = Verdict::default();
        let mut affected = Vec::new();
        for name in self.workers {
            let age = ctx.heard.last_heard(&name).map(|h| h.age);
            if let (Some(silent_for), Some(age)) = (self.silent_for, age) {
                if age < silent_for && txn.state.workers.contains_key(&name) {
                    let why = format!(
                        "Worker {name} was heard from {:.1}s ago: not declared down",
                        age.as_secs_f64()
                    );
                    verdict.skipped.push(SkippedDoc {
                        worker: name,
                        message: why,
                    });
                    continue;
                }
            }
            let was_down = txn
                .state
                .workers
                .get(&name)
                .is_some_and(|w| w.status == WorkerStatus::Down);
            // The last renewal heard: its age as of now (a worker not heard from since
            // this manager started was noted at the start, so this is never too early).
            let renewed_at = ctx
                .now
                .saturating_sub(age.map_or(0, |a| a.as_millis() as crate::Millis));
            commands::declare_down(txn, &name, renewed_at, ctx.limits.lease, ctx.now)?;
            // Only the services with tasks on these workers can change: reconciling every
            // service here made losing many workers at once quadratic.
            affected.extend(
                txn.state
                    .tasks_on_worker(&name)
                    .filter(|t| t.is_live())
                    .map(|t| t.service.clone()),
            );
            verdict.down.push(Downed {
                worker: name,
                was_down,
                relocated: Vec::new(),
            });
        }
        affected.sort();
        affected.dedup();
        Ok(Applied::new(verdict, Scope::Services(affected)))
    }

    fn conclude(mut verdict: Verdict, before: &ClusterState, after: &ClusterState) -> Verdict {
        let mut replacements = Replacements::default();
        for downed in &mut verdict.down {
            downed.relocated = replacements.of(before, after, &downed.worker);
        }
        verdict
    }
}

/// The tasks that took lost tasks' slots, found once per service.
#[derive(Default)]
struct Replacements<'a> {
    by_service: HashMap<String, HashMap<u32, &'a Task>>,
}

impl<'a> Replacements<'a> {
    /// The tasks `worker` lost between two states, each with the task that took its slot.
    fn of(
        &mut self,
        before: &ClusterState,
        after: &'a ClusterState,
        worker: &str,
    ) -> Vec<RelocationDoc> {
        let mut out = Vec::new();
        for old in before.tasks_on_worker(worker).filter(|t| t.is_active()) {
            let lost = after
                .tasks
                .get(&old.id)
                .is_some_and(|t| t.state == TaskState::Lost);
            if !lost {
                continue;
            }
            let new_ones = self
                .by_service
                .entry(old.service.clone())
                .or_insert_with(|| {
                    // The first new task of each slot, by id, as a search would find.
                    let mut first = HashMap::new();
                    for t in after
                        .tasks_of_service(&old.service)
                        .filter(|t| t.is_active() && !before.tasks.contains_key(&t.id))
                    {
                        first.entry(t.slot).or_insert(t);
                    }
                    first
                });
            let replacement = new_ones.get(&old.slot);
            out.push(RelocationDoc {
                task: old.id.clone(),
                service: old.service.clone(),
                slot: old.slot,
                image: old.image.clone(),
                replacement: replacement.map(|t| t.id.clone()),
                worker: replacement.and_then(|t| t.worker.clone()),
                message: replacement.map(|t| t.message.clone()).unwrap_or_default(),
            });
        }
        out
    }
}
