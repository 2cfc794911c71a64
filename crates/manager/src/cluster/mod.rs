//! The manager's single source of truth: the cluster state in memory, written through to
//! the store. Readers take an `Arc` snapshot and never wait on disk or on writers.
//!
//! Every change is a command of the core's pure `step` (`mycluster_core::step`); this
//! module only queues, commits, publishes and wakes watchers. Writers use group commit.
//! Each command is stepped alone, under the writer lock, on the *tip* (the latest state,
//! including changes queued but not yet durable), and queues its changes in the open
//! batch. One commit at a time takes the whole open batch to the
//! store (one fsync for however many mutations queued meanwhile), then publishes it and
//! answers every mutation in it. Nothing is published or acknowledged before it is
//! durable; if a commit fails, every mutation in it — and every one queued since, having
//! been computed on top of it — fails, and the tip goes back to what is published.
//!
//! Every commit names the store's head it builds on (see `mycluster_store::Head`), so a
//! store that lost this manager's history is found out instead of written over. The
//! manager keeps the store's health: a store that is down is tried again at every write
//! and checked every second; a store that lost the history (or was taken by another
//! manager) is written no more until an operator reseeds it from memory. A commit whose
//! answer was lost is *in doubt* until the store's head says whether it landed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mycluster_core::commands::CommandError;
use mycluster_core::state::compact;
use mycluster_core::step::{Liveness, NoteWhen, Step};
use mycluster_core::wire::{Suspicion, SuspicionReason};
use mycluster_core::worker::{heartbeat_interval, LastHeard, MIN_HEARTBEAT_INTERVAL};
use mycluster_core::{step, Change, ClusterState, Command, Context, IdSource, Limits, Millis};
use mycluster_store::{Head, Store, StoreError};
use tokio::sync::{oneshot, watch};

mod history;
pub use history::StoreHealth;
use history::COMPUTED_BEFORE;

use crate::api::volumes::to_remove;
use crate::events::EventLog;
use crate::metrics::Metrics;

/// One published version of the state.
#[derive(Debug)]
pub struct Snapshot {
    /// Bumped by every commit; agents long-poll on it.
    pub index: u64,
    pub state: ClusterState,
}

pub struct Cluster {
    pub name: String,
    pub limits: Limits,
    /// The most heartbeats a second this manager takes (`--max-heartbeats-per-second`):
    /// sets the interval each agent is told.
    heartbeat_rate: u32,
    started: Instant,
    store: Arc<dyn Store>,
    current: RwLock<Arc<Snapshot>>,
    /// Held while a mutation computes, so each sees the ones before it.
    writer: tokio::sync::Mutex<Writer>,
    /// Held while a batch is committed and published (or the store checked or
    /// reseeded): one at a time. Knows the store's head.
    committer: tokio::sync::Mutex<Committer>,
    /// What the last commit or check said of the store.
    health: Mutex<StoreHealth>,
    /// The index of the last commit, for anyone waiting on any change.
    committed: watch::Sender<u64>,
    /// Per worker: the index of the last change to its tasks, for long-polls.
    task_watch: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Last heartbeat per worker. Kept in memory only: a heartbeat a second per worker is
    /// not worth a disk write, and after a restart every worker gets a fresh grace period.
    heartbeats: Mutex<HashMap<String, Heard>>,
    /// The index of the latest suspicion noted (`suspect`), for the monitor's long-poll.
    suspicions: watch::Sender<u64>,
    /// What each commit changed, said as events (`GET /api/v1/events`).
    events: EventLog,
    /// What this manager measures of itself (`GET /metrics`).
    metrics: Metrics,
}

/// When a worker was last heard from, and the heartbeat interval it was last asked for
/// (its silence is judged against that).
#[derive(Clone, Copy, Debug)]
pub struct Heard {
    pub at: Instant,
    pub interval: Duration,
    /// A reason to think the worker dead before its silence says so (its agent left,
    /// its connection dropped), until it is heard from again.
    pub suspected: Option<Suspicion>,
}

/// What the committer knows of the store's history.
struct Committer {
    /// The store's head: the last commit this manager made (and published).
    head: Head,
    /// A commit whose answer was lost: it may or may not be in the store.
    in_doubt: Option<InDoubt>,
}

struct InDoubt {
    head: Head,
    state: ClusterState,
    changes: Vec<Change>,
    /// The changes as they were made, before `compact` (for the events).
    made: Vec<Change>,
}

impl Heard {
    /// As of now, for the core's liveness rule (`LastHeard::is_live`).
    pub fn as_of_now(&self) -> LastHeard {
        LastHeard {
            age: self.at.elapsed(),
            interval: self.interval,
        }
    }
}

/// What writers share: the tip and the batch waiting for the next commit.
struct Writer {
    ids: RandomIds,
    /// The latest state: what is published plus everything queued.
    tip: ClusterState,
    /// Changes queued for the next commit, in order.
    open: Vec<Change>,
    /// The mutations waiting for the next commit.
    waiters: Vec<oneshot::Sender<Result<Arc<Snapshot>, StoreError>>>,
}

/// Why a command did not happen. Nothing was changed in either case.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    #[error(transparent)]
    Rejected(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Cluster {
    /// Loads the state from `store` and makes it current.
    pub async fn load(
        name: String,
        limits: Limits,
        store: Arc<dyn Store>,
    ) -> Result<Cluster, StoreError> {
        let stored = store.load().await?;
        let head = stored.head;
        let state = ClusterState::from_parts(
            stored.services,
            stored.tasks,
            stored.workers,
            stored.volumes,
            stored.counters,
        );
        // Every known worker gets a fresh grace period: after a restart, silence is only
        // silence since this manager started.
        let now = Instant::now();
        let heard = Heard {
            at: now,
            interval: MIN_HEARTBEAT_INTERVAL,
            suspected: None,
        };
        let heartbeats = state.workers.keys().map(|w| (w.clone(), heard)).collect();
        Ok(Cluster {
            name,
            limits,
            heartbeat_rate: DEFAULT_HEARTBEAT_RATE,
            started: now,
            store,
            current: RwLock::new(Arc::new(Snapshot {
                index: head.index,
                state: state.clone(),
            })),
            writer: tokio::sync::Mutex::new(Writer {
                ids: RandomIds,
                tip: state,
                open: Vec::new(),
                waiters: Vec::new(),
            }),
            committer: tokio::sync::Mutex::new(Committer {
                head,
                in_doubt: None,
            }),
            health: Mutex::new(StoreHealth::Ok),
            committed: watch::channel(head.index).0,
            task_watch: Mutex::new(HashMap::new()),
            heartbeats: Mutex::new(heartbeats),
            suspicions: watch::channel(0).0,
            events: EventLog::new(head.index, crate::events::DEFAULT_HISTORY),
            metrics: Metrics::new(),
        })
    }

    /// The history of events this manager keeps.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// What this manager measured of itself: its commits, its tasks' starts, its API.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The current state. Cheap: an `Arc` clone under a lock held for nanoseconds.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Applies `command` to the tip through the core's `step` (the command, then
    /// reconcile and schedule of what it touched), queues the changes for the next group
    /// commit, and returns once they are durable and published (with the published
    /// state). If the command refuses or the commit fails, nothing changes. Once queued,
    /// the commit no longer depends on the caller: a client that hangs up cannot leave
    /// memory and store apart.
    pub async fn apply<C: Command>(
        self: &Arc<Self>,
        command: C,
    ) -> Result<(C::Outcome, Arc<Snapshot>), MutateError> {
        let (outcome, heard, noted, done) = {
            let mut writer = self.writer.lock().await;
            let ctx = Context {
                now: now_millis(),
                limits: &self.limits,
                max_heartbeats_per_second: self.heartbeat_rate,
                heard: &**self,
            };
            let Writer { ids, tip, .. } = &mut *writer;
            let Step {
                outcome,
                changes,
                state,
                mut heard,
            } = step(tip, command, &ctx, ids)?;
            // A registration is heard now, before the commit (see `NoteWhen`), and taken
            // back below if the commit fails.
            let noted = heard
                .take_if(|h| h.when == NoteWhen::Queued)
                .map(|h| (self.note_heartbeat(&h.worker, h.interval), h.worker));
            // Even with nothing to write, the answer waits in line: it was computed on the
            // tip, which may hold a batch still on its way to disk.
            writer.tip = state;
            writer.open.extend(changes);
            let (tell, done) = oneshot::channel();
            writer.waiters.push(tell);
            // No await between queueing and this: the batch is sure to be committed.
            let cluster = self.clone();
            tokio::spawn(async move { cluster.commit_open_batch().await });
            (outcome, heard, noted, done)
        };
        let failed = |e: StoreError| {
            if let Some(((before, now), worker)) = &noted {
                self.unnote_heartbeat(worker, *now, *before);
            }
            MutateError::Store(e)
        };
        match done.await {
            Ok(Ok(snapshot)) => {
                if let Some(h) = heard {
                    self.note_heartbeat(&h.worker, h.interval);
                }
                Ok((outcome, snapshot))
            }
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(failed(StoreError::Unavailable(
                "the commit task ended without an answer".into(),
            ))),
        }
    }

    /// Commits whatever is queued (nothing, if an earlier commit took it already).
    async fn commit_open_batch(&self) {
        let mut committer = self.committer.lock().await;
        let (changes, waiters, state) = {
            let mut writer = self.writer.lock().await;
            if writer.waiters.is_empty() {
                return;
            }
            (
                std::mem::take(&mut writer.open),
                std::mem::take(&mut writer.waiters),
                writer.tip.clone(),
            )
        };
        let base = self.snapshot();
        if changes.is_empty() {
            for waiter in waiters {
                let _ = waiter.send(Ok(base.clone()));
            }
            return;
        }
        if let StoreHealth::Refusing(why) = self.health() {
            self.fail(waiters, StoreError::Diverged(why), &base).await;
            return;
        }
        match self.resolve_in_doubt(&mut committer).await {
            Ok(None) => {}
            // What this batch was computed on is not the state any more.
            Ok(Some(recovered)) => {
                let error = StoreError::Unavailable(COMPUTED_BEFORE.into());
                self.fail(waiters, error, &recovered).await;
                return;
            }
            Err(e) => {
                self.fail(waiters, e, &base).await;
                return;
            }
        }
        let next = committer.head.next(rand::random());
        // The store gets each record's last write; the events are said from every change
        // in the order it was made (a task's every state, a replacement made and lost in
        // one batch).
        let made = changes;
        let changes = compact(&made);
        let began = Instant::now();
        match self
            .store
            .commit(committer.head, next, changes.clone())
            .await
        {
            Ok(()) => {
                self.metrics.observe_commit(began.elapsed(), changes.len());
                committer.head = next;
                self.set_health(StoreHealth::Ok);
                let next = self.publish(&base, state, &changes, &made, next.index);
                for waiter in waiters {
                    let _ = waiter.send(Ok(next.clone()));
                }
            }
            Err(e) => {
                if e.is_transient() {
                    // It may have landed all the same: the store's head will tell.
                    committer.in_doubt = Some(InDoubt {
                        head: next,
                        state,
                        changes,
                        made,
                    });
                }
                self.set_health(StoreHealth::of(&e));
                self.fail(waiters, e, &base).await;
            }
        }
    }

    /// Makes `state` (committed at `index`: `changes`, compacted from `made`) the current
    /// state and wakes who waits on it.
    fn publish(
        &self,
        before: &Snapshot,
        state: ClusterState,
        changes: &[Change],
        made: &[Change],
        index: u64,
    ) -> Arc<Snapshot> {
        // Before the state is visible: a reader who saw a commit finds its events.
        self.events.record(&before.state, made, index, now_millis());
        let next = Arc::new(Snapshot { index, state });
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next.clone();
        self.wake_workers(&before.state, &next.state, changes, index);
        self.metrics.observe_published(&before.state, made);
        self.committed.send_replace(index);
        next
    }

    /// Fails a batch, and everything queued since (it was computed on top of it); the
    /// tip goes back to `base`, the published state.
    async fn fail(
        &self,
        waiters: Vec<oneshot::Sender<Result<Arc<Snapshot>, StoreError>>>,
        error: StoreError,
        base: &Snapshot,
    ) {
        let later = {
            let mut writer = self.writer.lock().await;
            writer.tip = base.state.clone();
            writer.open.clear();
            std::mem::take(&mut writer.waiters)
        };
        for waiter in waiters.into_iter().chain(later) {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// Tells the long-polls of every worker whose tasks changed, or whose volumes to
    /// remove did. Only what changes an agent's work wakes it (see
    /// `Task::news_for_agent`): a report an agent sent does not send its whole task list
    /// straight back to it.
    fn wake_workers(
        &self,
        before: &ClusterState,
        after: &ClusterState,
        changes: &[Change],
        index: u64,
    ) {
        let mut workers = BTreeSet::new();
        if touches_volumes(before, changes) {
            let watches = self.task_watch.lock().unwrap_or_else(|p| p.into_inner());
            workers.extend(
                watches
                    .keys()
                    .filter(|w| to_remove(before, w) != to_remove(after, w))
                    .cloned(),
            );
        }
        for change in changes {
            match change {
                Change::PutTask(task)
                    if task.news_for_agent(before.tasks.get(&task.id).map(|t| t.as_ref())) =>
                {
                    workers.extend(task.worker.clone())
                }
                Change::DeleteTask(id) => {
                    workers.extend(before.tasks.get(id).and_then(|t| t.worker.clone()))
                }
                _ => {}
            }
        }
        let watches = self.task_watch.lock().unwrap_or_else(|p| p.into_inner());
        for worker in workers {
            if let Some(sender) = watches.get(&worker) {
                sender.send_replace(index);
            }
        }
    }

    /// A receiver that changes when the worker's tasks change (or the volumes it must
    /// remove). Its value is the index of
    /// the last such change (or the index at the time it was first asked for).
    pub fn watch_worker(&self, worker: &str) -> watch::Receiver<u64> {
        let mut watches = self.task_watch.lock().unwrap_or_else(|p| p.into_inner());
        watches
            .entry(worker.to_string())
            .or_insert_with(|| watch::channel(self.snapshot().index).0)
            .subscribe()
    }

    /// Changes with every commit.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Notes a heartbeat; returns what was noted before (to put back with
    /// `unnote_heartbeat`) and what is noted now.
    pub fn note_heartbeat(&self, worker: &str, told: Option<Duration>) -> (Option<Heard>, Heard) {
        let mut heartbeats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        let interval = told
            .or_else(|| heartbeats.get(worker).map(|h| h.interval))
            .unwrap_or(MIN_HEARTBEAT_INTERVAL);
        let now = Heard {
            at: Instant::now(),
            interval,
            suspected: None,
        };
        (heartbeats.insert(worker.to_string(), now), now)
    }

    /// Takes back a heartbeat noted for a change that was not saved, unless another was
    /// heard since: a registration that failed must not make the worker's holder look
    /// alive.
    pub fn unnote_heartbeat(&self, worker: &str, noted: Heard, before: Option<Heard>) {
        let mut heartbeats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        if heartbeats.get(worker).map(|h| h.at) != Some(noted.at) {
            return;
        }
        match before {
            Some(before) => heartbeats.insert(worker.to_string(), before),
            None => heartbeats.remove(worker),
        };
    }

    /// Notes a reason to think `worker` dead now (its agent said it is leaving, or its
    /// connection dropped) and wakes the monitor's long-poll, which then looks at it at
    /// once instead of after missed heartbeats. Cleared by the next heartbeat. A worker
    /// this manager never heard from is not suspected.
    pub fn suspect(&self, worker: &str, reason: SuspicionReason) {
        let mut heartbeats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        let Some(heard) = heartbeats.get_mut(worker) else {
            return;
        };
        // A departure said is not overwritten by the drop of the connection it caused.
        if heard
            .suspected
            .is_some_and(|s| s.reason == SuspicionReason::Left)
        {
            return;
        }
        let mut index = 0;
        self.suspicions.send_modify(|latest| {
            *latest += 1;
            index = *latest;
        });
        heard.suspected = Some(Suspicion { reason, index });
    }

    /// The highest index of the suspicions held now (0: none).
    pub fn latest_suspicion(&self) -> u64 {
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|h| h.suspected.map(|s| s.index))
            .max()
            .unwrap_or(0)
    }

    /// Changes with every suspicion noted; its value is the latest one's index.
    pub fn watch_suspicions(&self) -> watch::Receiver<u64> {
        self.suspicions.subscribe()
    }

    /// Forgets what was heard from a worker that was removed, and answers its agent's
    /// long-poll (which then finds the worker gone).
    pub fn forget_worker(&self, worker: &str) {
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker);
        let watch = self
            .task_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker);
        if let Some(sender) = watch {
            sender.send_replace(self.snapshot().index);
        }
    }

    /// Sets the most heartbeats a second the manager takes, and takes every worker as
    /// told the interval that gives (at start: a manager that restarts in a large cluster
    /// must not take the agents' slower pace for silence).
    pub fn set_heartbeat_rate(&mut self, per_second: u32) {
        self.heartbeat_rate = per_second;
        let interval = self.heartbeat_interval(&self.snapshot().state);
        let heartbeats = self.heartbeats.get_mut().unwrap_or_else(|p| p.into_inner());
        for heard in heartbeats.values_mut() {
            heard.interval = interval;
        }
    }

    /// The heartbeat interval agents are asked for in `state`: once a second, unless the
    /// cluster is so large that this would pass the heartbeat rate.
    pub fn heartbeat_interval(&self, state: &ClusterState) -> Duration {
        heartbeat_interval(state.workers.len(), self.heartbeat_rate)
    }

    /// Whether `worker` is live by the core's one liveness rule (`LastHeard::is_live`).
    pub fn is_live(&self, worker: &str) -> bool {
        self.last_heard(worker).is_some_and(|h| h.is_live())
    }

    /// When the worker was last heard from (`None`: not since this manager started).
    pub fn heard(&self, worker: &str) -> Option<Heard> {
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker)
            .copied()
    }
}

/// The step reads what was heard from workers through this.
impl Liveness for Cluster {
    fn last_heard(&self, worker: &str) -> Option<LastHeard> {
        self.heard(worker).map(|h| h.as_of_now())
    }
}

/// `--max-heartbeats-per-second` unless told otherwise.
pub const DEFAULT_HEARTBEAT_RATE: u32 = 1000;

pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Random 64-bit task ids, as 16 hex digits: unique without coordination, and their first
/// 8 digits are distinct enough to name containers.
struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&mut self) -> String {
        format!("{:016x}", rand::random::<u64>())
    }
}

/// Whether `changes` may change which volumes some agent must remove: a volume record
/// changed, or a task that mounts a volume ended or went.
fn touches_volumes(before: &ClusterState, changes: &[Change]) -> bool {
    let mounts = |t: &mycluster_core::Task| {
        t.mounts
            .iter()
            .any(|m| m.kind == mycluster_core::service::MountKind::Volume)
    };
    changes.iter().any(|change| match change {
        Change::PutVolume(_) | Change::DeleteVolume(_) => true,
        Change::PutTask(task) => {
            mounts(task)
                && before
                    .tasks
                    .get(&task.id)
                    .is_none_or(|old| old.is_live() != task.is_live())
        }
        Change::DeleteTask(id) => before.tasks.get(id).is_some_and(|t| mounts(t)),
        _ => false,
    })
}
