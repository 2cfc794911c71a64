//! The manager's single source of truth: the cluster state in memory, written through to
//! the store. Readers take an `Arc` snapshot and never wait on disk or on writers;
//! writers are serialised, build the next state beside the current one, commit it to the
//! store, and only then publish it — so what a client was told is always durable.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mycluster_core::reconcile::reconcile_services;
use mycluster_core::{reconcile, schedule, Change, ClusterState, IdSource, Limits, Millis, Txn};
use mycluster_store::{Store, StoreError};
use tokio::sync::watch;

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
    started: Instant,
    store: Arc<dyn Store>,
    current: RwLock<Arc<Snapshot>>,
    /// Held for a whole mutation, so writers see each other's results in order.
    writer: Arc<tokio::sync::Mutex<RandomIds>>,
    /// The index of the last commit, for anyone waiting on any change.
    committed: watch::Sender<u64>,
    /// Per worker: the index of the last change to its tasks, for long-polls.
    task_watch: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Last heartbeat per worker. Kept in memory only: a heartbeat a second per worker is
    /// not worth a disk write, and after a restart every worker gets a fresh grace period.
    heartbeats: Mutex<HashMap<String, Instant>>,
}

/// Why a mutation did not happen. Nothing was changed in either case.
#[derive(Debug, thiserror::Error)]
pub enum MutateError<E> {
    #[error(transparent)]
    Rejected(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a mutation should reconcile after its command ran.
pub enum Follow {
    /// Nothing beyond scheduling what is pending.
    Schedule,
    /// These services (their tasks may have to be created or stopped).
    Services(Vec<String>),
    /// Everything (a worker's status changed, which may touch any service).
    All,
}

impl Cluster {
    /// Loads the state from `store` and makes it current.
    pub async fn load(
        name: String,
        limits: Limits,
        store: Arc<dyn Store>,
    ) -> Result<Cluster, StoreError> {
        let stored = store.load().await?;
        let state = ClusterState::from_parts(
            stored.services,
            stored.tasks,
            stored.workers,
            stored.counters,
        );
        // Every known worker gets a fresh grace period: after a restart, silence is only
        // silence since this manager started.
        let now = Instant::now();
        let heartbeats = state.workers.keys().map(|w| (w.clone(), now)).collect();
        Ok(Cluster {
            name,
            limits,
            started: now,
            store,
            current: RwLock::new(Arc::new(Snapshot {
                index: stored.index,
                state,
            })),
            writer: Arc::new(tokio::sync::Mutex::new(RandomIds)),
            committed: watch::channel(stored.index).0,
            task_watch: Mutex::new(HashMap::new()),
            heartbeats: Mutex::new(heartbeats),
        })
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The current state. Cheap: an `Arc` clone under a lock held for nanoseconds.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs `command` on a copy of the current state, then reconciles and schedules what
    /// it touched, commits all of it durably, and publishes the result. If the command
    /// refuses or the store fails, nothing changes.
    pub async fn mutate<T, E>(
        self: &Arc<Self>,
        command: impl FnOnce(&mut Txn, Millis) -> Result<(T, Follow), E>,
    ) -> Result<(T, Arc<Snapshot>), MutateError<E>> {
        let mut ids = self.writer.clone().lock_owned().await;
        let base = self.snapshot();
        let now = now_millis();
        let mut txn = Txn::new(base.state.clone());
        let (out, follow) = command(&mut txn, now).map_err(MutateError::Rejected)?;
        let followups = match follow {
            Follow::Schedule => Vec::new(),
            Follow::Services(names) => {
                reconcile_services(&txn.state, names.iter().map(String::as_str), now, &mut *ids)
            }
            Follow::All => reconcile(&txn.state, now, &mut *ids),
        };
        txn.extend(followups);
        let placements = schedule(&txn.state, now);
        txn.extend(placements);
        if txn.changes.is_empty() {
            return Ok((out, base));
        }
        // From here on nothing may be cancelled: a client that hangs up drops this
        // future, and a commit that lands on disk but is never published would leave
        // memory and store apart. The spawned task holds the writer lock to the end.
        let cluster = self.clone();
        let publish = tokio::spawn(async move {
            let index = base.index + 1;
            let changes = txn.compacted();
            cluster.store.commit(index, changes.clone()).await?;
            let next = Arc::new(Snapshot {
                index,
                state: txn.state,
            });
            *cluster
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = next.clone();
            cluster.wake_workers(&base.state, &changes, index);
            cluster.committed.send_replace(index);
            drop(ids);
            Ok::<_, StoreError>(next)
        });
        let next = publish
            .await
            .map_err(|e| StoreError::Unavailable(format!("the commit task failed: {e}")))??;
        Ok((out, next))
    }

    /// Tells the long-polls of every worker whose tasks changed.
    fn wake_workers(&self, before: &ClusterState, changes: &[Change], index: u64) {
        let mut workers = BTreeSet::new();
        for change in changes {
            match change {
                Change::PutTask(task) => workers.extend(task.worker.clone()),
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

    /// A receiver that changes when the worker's tasks change. Its value is the index of
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

    pub fn record_heartbeat(&self, worker: &str) {
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker.to_string(), Instant::now());
    }

    /// How long ago each worker was last heard from (`None`: not since this manager
    /// started).
    pub fn heartbeat_age(&self, worker: &str) -> Option<Duration> {
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(worker)
            .map(Instant::elapsed)
    }
}

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
