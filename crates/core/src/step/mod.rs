//! The step: the one pure function every change to the cluster goes through.
//!
//! A change is a *command* (a service written, a worker registering, a worker coming
//! back, the monitor's verdict, an agent's report, the periodic pass). `step` applies it
//! to a snapshot of the state, then reconciles what the command says it touched and
//! schedules whatever is pending, and returns the changes, the state after them, and the
//! command's answer. Like Nomad's scheduler (`Process(eval)` over a read-only state,
//! acting through a plan) it does no I/O: the manager's `Cluster` only queues, commits,
//! publishes and wakes watchers, and HTTP handlers only parse, call and render. The
//! scenario and property tests in `tests/` drive this same function.
//!
//! Reading order: `Command` and `step` here, then the commands in `services.rs`,
//! `workers.rs` and `pass.rs`; the rules they use are in `commands.rs`, `reconcile.rs`
//! and `schedule.rs`.

use std::time::Duration;

use crate::commands::CommandError;
use crate::reconcile::reconcile_services;
use crate::worker::LastHeard;
use crate::{reconcile, schedule, Change, ClusterState, IdSource, Limits, Millis, Txn};

mod admin;
mod pass;
mod services;
mod workers;

pub use admin::{LabelWorker, Rebalance, RemoveVolumes, RemoveWorker, SetDrain};
pub use pass::Reconcile;
pub use services::{
    DeleteService, DeletedService, PatchService, PostService, PutService, RestartService,
    RollbackService,
};
pub use workers::{DeclareDown, Downed, Register, Registered, Report, Verdict, WorkerBack};

/// What the manager knows of each worker's heartbeats. Heartbeats are kept in the
/// manager's memory, not in the state (a write a second per worker is not worth it), so
/// the step reads them through this view.
pub trait Liveness {
    /// What was last heard from `worker` (`None`: nothing since the manager started).
    fn last_heard(&self, worker: &str) -> Option<LastHeard>;
}

/// Nothing heard from anyone: for tests, and a manager that just started.
pub struct NothingHeard;

impl Liveness for NothingHeard {
    fn last_heard(&self, _worker: &str) -> Option<LastHeard> {
        None
    }
}

impl Liveness for std::collections::BTreeMap<String, LastHeard> {
    fn last_heard(&self, worker: &str) -> Option<LastHeard> {
        self.get(worker).copied()
    }
}

/// What a step may read besides the state: the time, the cluster's limits and policies,
/// and what was heard from the workers. Passed in: the core reads no clock of its own.
pub struct Context<'a> {
    pub now: Millis,
    pub limits: &'a Limits,
    /// The most heartbeats a second the manager takes; sets each agent's interval.
    pub max_heartbeats_per_second: u32,
    pub heard: &'a dyn Liveness,
}

/// What a command says must be reconciled after it (scheduling always runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Nothing beyond placing what is pending.
    Nothing,
    /// These services: their tasks may have to be created or stopped.
    Services(Vec<String>),
    /// Every service (a worker's status changed, which may touch any of them).
    All,
}

/// A heartbeat to note in the manager's memory: a registration and a report both say
/// the agent is alive. `interval`: the heartbeat interval it was just told (`None`: the
/// one it had).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardFrom {
    pub worker: String,
    pub interval: Option<Duration>,
    pub when: NoteWhen,
}

/// When the manager notes a heartbeat a command carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteWhen {
    /// As soon as the command is queued, taken back if its commit fails: a second
    /// agent's registration queued behind this one must find the name held.
    Queued,
    /// Once the command is committed: a refused or failed report leaves no trace, and a
    /// down verdict queued in the same batch is judged on what was heard before.
    Committed,
}

/// What a command did to the transaction.
pub struct Applied<O> {
    pub outcome: O,
    pub reconcile: Scope,
    pub heard: Option<HeardFrom>,
}

impl<O> Applied<O> {
    pub fn new(outcome: O, reconcile: Scope) -> Applied<O> {
        Applied {
            outcome,
            reconcile,
            heard: None,
        }
    }
}

/// One kind of change to the cluster.
pub trait Command {
    /// What the caller is told.
    type Outcome;

    /// Checks the command against `txn.state` and records its changes in `txn`. An error
    /// leaves nothing applied (the step drops the transaction).
    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Self::Outcome>, CommandError>;

    /// Completes the outcome once reconcile and schedule have run on top of the command
    /// (a down verdict tells where each lost task went). Most outcomes are complete.
    fn conclude(
        outcome: Self::Outcome,
        _before: &ClusterState,
        _after: &ClusterState,
    ) -> Self::Outcome {
        outcome
    }
}

/// A command applied: its answer, the changes to commit, the state after them, and a
/// heartbeat to note.
#[derive(Debug)]
pub struct Step<O> {
    pub outcome: O,
    pub changes: Vec<Change>,
    pub state: ClusterState,
    pub heard: Option<HeardFrom>,
}

/// Applies `command` to `state`, reconciles what it touched and schedules what is
/// pending: the whole of what the manager does with a change before committing it.
pub fn step<C: Command>(
    state: &ClusterState,
    command: C,
    ctx: &Context,
    ids: &mut dyn IdSource,
) -> Result<Step<C::Outcome>, CommandError> {
    let mut txn = Txn::new(state.clone());
    let applied = command.apply(&mut txn, ctx)?;
    let followups = match &applied.reconcile {
        Scope::Nothing => Vec::new(),
        Scope::Services(names) => reconcile_services(
            &txn.state,
            names.iter().map(String::as_str),
            ctx.now,
            ids,
            ctx.limits.rebalance,
        ),
        Scope::All => reconcile(&txn.state, ctx.now, ids, ctx.limits.rebalance),
    };
    txn.extend(followups);
    let placements = schedule(&txn.state, ctx.now);
    txn.extend(placements);
    let outcome = C::conclude(applied.outcome, state, &txn.state);
    Ok(Step {
        outcome,
        changes: txn.changes,
        state: txn.state,
        heard: applied.heard,
    })
}
