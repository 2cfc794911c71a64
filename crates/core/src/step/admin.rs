//! What operators do to workers and volumes: drain a worker and activate it again, set
//! its labels, remove it, rebalance services, and remove volumes. The moves a drain or a
//! rebalance asks for are made by `reconcile` (start-first, one slot of a service at a
//! time); these commands only record the intent.

use std::collections::BTreeMap;

use crate::commands::{self, CommandError};
use crate::rebalance::{self, Move};
use crate::service::{valid_label_key, Volume};
use crate::worker::effective_labels;
use crate::{Change, Txn, Worker, WorkerStatus};

use super::{Applied, Command, Context, Scope};

/// `worker drain` (`drain: true`): the worker takes nothing new and its tasks move
/// elsewhere, each replacement healthy before the old task stops. `worker activate`
/// (`false`): it takes tasks again (nothing moves back by itself; see `Rebalance`).
/// Answers the worker as it is now.
pub struct SetDrain {
    pub worker: String,
    pub drain: bool,
}

impl Command for SetDrain {
    type Outcome = Worker;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Worker>, CommandError> {
        let mut worker = commands::existing_worker(txn, &self.worker)?;
        if worker.drain == self.drain {
            return Ok(Applied::new(worker, Scope::Nothing));
        }
        worker.drain = self.drain;
        // A down worker stays down; the drain applies when it comes back.
        if worker.status != WorkerStatus::Down {
            worker.status = worker.up_status();
        }
        worker.updated_at = ctx.now;
        txn.push(Change::PutWorker(worker.clone()));
        Ok(Applied::new(worker, Scope::All))
    }
}

/// `worker rm`: forgets a worker that is down, or drained and empty. Its record goes
/// (and with it the manager's memory of its heartbeats); an agent that still runs under
/// that name registers it anew.
pub struct RemoveWorker(pub String);

impl Command for RemoveWorker {
    type Outcome = Worker;

    fn apply(self, txn: &mut Txn, _ctx: &Context) -> Result<Applied<Worker>, CommandError> {
        let worker = commands::existing_worker(txn, &self.0)?;
        let live = txn
            .state
            .tasks_on_worker(&self.0)
            .filter(|t| t.is_live())
            .count();
        let removable = match worker.status {
            WorkerStatus::Down => true,
            WorkerStatus::Draining => live == 0,
            WorkerStatus::Ready => false,
        };
        if !removable {
            let why = match worker.status {
                WorkerStatus::Draining => format!(
                    "it still holds {live} task(s) being moved: wait until `mycluster workers` shows it empty"
                ),
                _ => format!(
                    "it is {}: drain it first (`mycluster worker drain {}`), or stop its agent",
                    worker.status, worker.name
                ),
            };
            return Err(CommandError::Conflict(format!(
                "worker {} cannot be removed: {why}",
                worker.name
            )));
        }
        // The tasks it held are finished (a down worker's are lost); their records go
        // with their slots' history, and none may point at a worker that is gone.
        txn.push(Change::DeleteWorker(self.0.clone()));
        Ok(Applied::new(worker, Scope::All))
    }
}

/// `worker label W K=V K2-`: sets and removes labels over the ones its agent registers
/// with; they outlive the agent's restarts. Tasks already placed stay where they are
/// (their constraints were met when they were placed), as in Swarm.
pub struct LabelWorker {
    pub worker: String,
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl Command for LabelWorker {
    type Outcome = Worker;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Worker>, CommandError> {
        let mut worker = commands::existing_worker(txn, &self.worker)?;
        for key in self.set.keys().chain(&self.remove) {
            if !valid_label_key(key) {
                return Err(CommandError::Invalid(format!(
                    "label key '{}' must be 1-253 letters, digits, '.', '_', '-' or '/'",
                    key.escape_debug()
                )));
            }
        }
        if let Some((key, _)) = self.set.iter().find(|(_, v)| v.len() > 253) {
            return Err(CommandError::Invalid(format!(
                "the value of label '{key}' must be at most 253 characters"
            )));
        }
        if let Some(key) = self.remove.iter().find(|k| self.set.contains_key(*k)) {
            return Err(CommandError::Invalid(format!(
                "label '{key}' is both set and removed"
            )));
        }
        let mut overrides = worker.label_overrides.clone();
        let mut delta: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (key, value) in self.set {
            delta.insert(key, Some(value));
        }
        for key in self.remove {
            delta.insert(key, None);
        }
        overrides.extend(delta.clone());
        let labels = effective_labels(&worker.labels, &delta);
        if labels.len() > 64 {
            return Err(CommandError::Invalid(
                "a worker may carry at most 64 labels".into(),
            ));
        }
        if labels == worker.labels && overrides == worker.label_overrides {
            return Ok(Applied::new(worker, Scope::Nothing));
        }
        worker.labels = labels;
        worker.label_overrides = overrides;
        worker.updated_at = ctx.now;
        txn.push(Change::PutWorker(worker.clone()));
        // Pending tasks may fit now.
        Ok(Applied::new(worker, Scope::Nothing))
    }
}

/// `service rebalance [NAME] [--dry-run]`: evens out the spread of one service, or of
/// every service, one start-first move at a time (see `rebalance`). A dry run changes
/// nothing and answers the moves a pass would start now. Otherwise the services are
/// marked, and `reconcile` moves one replica of each at a time until its spread is even;
/// the answer is the first moves.
pub struct Rebalance {
    pub service: Option<String>,
    pub dry_run: bool,
}

impl Command for Rebalance {
    type Outcome = Vec<Move>;

    fn apply(self, txn: &mut Txn, _ctx: &Context) -> Result<Applied<Vec<Move>>, CommandError> {
        let names: Vec<String> = match &self.service {
            Some(name) => vec![commands::existing_service(txn, name)?.spec.name],
            None => txn.state.services.keys().cloned().collect(),
        };
        let mut moves = Vec::new();
        for name in &names {
            let Some(service) = txn.state.services.get(name) else {
                continue;
            };
            let first = rebalance::next_move(&txn.state, service);
            // A service busy with a rollout, a drain or another move is marked too: its
            // moves start once it is done. One that cannot settle (a slot no worker
            // takes, a batch job's completed slots) is not: it would stay marked.
            let wanted = first.is_some() || rebalance::busy(&txn.state, service);
            if !self.dry_run && wanted && !service.rebalance && service.spec.replicas > 0 {
                let mut marked = service.clone();
                marked.rebalance = true;
                txn.push(Change::PutService(marked));
            }
            moves.extend(first);
        }
        let scope = if self.dry_run {
            Scope::Nothing
        } else {
            Scope::Services(names)
        };
        Ok(Applied::new(moves, scope))
    }
}

/// `volume rm NAME...`: marks volumes to be removed; the agents of their host remove
/// them once no task uses them, and report it (`Report`). A volume that a service still
/// mounts is refused. Answers the volumes as marked.
pub struct RemoveVolumes(pub Vec<String>);

impl Command for RemoveVolumes {
    type Outcome = Vec<Volume>;

    fn apply(self, txn: &mut Txn, _ctx: &Context) -> Result<Applied<Vec<Volume>>, CommandError> {
        let mut marked = Vec::new();
        for name in &self.0 {
            let volume = txn
                .state
                .volumes
                .get(name)
                .cloned()
                .ok_or_else(|| CommandError::VolumeNotFound(name.clone()))?;
            if volume.in_use(&txn.state) {
                return Err(CommandError::Conflict(format!(
                    "volume {name} is used by service {}: remove the service (`mycluster service rm {} --volumes`) or its volume from the spec first",
                    volume.service, volume.service
                )));
            }
            marked.push(volume);
        }
        for volume in &mut marked {
            if !volume.remove {
                volume.remove = true;
                txn.push(Change::PutVolume(volume.clone()));
            }
        }
        Ok(Applied::new(marked, Scope::Nothing))
    }
}

/// Marks `names` removed by an agent on `host`: their records go. A name that is not
/// marked for removal, or lives on another host, is left as it is.
pub(crate) fn volumes_removed(txn: &mut Txn, host: &str, names: &[String]) {
    for name in names {
        let gone = txn
            .state
            .volumes
            .get(name)
            .is_some_and(|v| v.remove && (v.host.is_empty() || v.host == host));
        if gone {
            txn.push(Change::DeleteVolume(name.clone()));
        }
    }
}
