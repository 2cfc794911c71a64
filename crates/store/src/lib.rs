//! The state store: one narrow trait, `Store`, that the manager writes every change
//! through, and the backends behind it. Every backend must pass the conformance suite in
//! `tests/conformance`.
//!
//! A store knows its own history. It holds the cluster's identity (a random id made
//! when the store was first written) and a head — the index of the last commit and that
//! commit's id — written in the same atomic commit as the data. A commit names the head
//! it builds on and is refused if the store's head is anything else: a store that was
//! emptied, evicted, restored from an older copy or written by someone else is found out
//! at the next write (or check) instead of silently taking writes on top of a different
//! past. And one manager at a time holds a cluster's store (see `Holder`).
//!
//! Where to start reading: the `Store` trait below and `open` (which backend a URL
//! names), then `embedded.rs` (redb) and `redis_store.rs` with `redis_scripts.rs` (each
//! commit one Lua script), then `holder.rs`.

mod embedded;
mod holder;
mod redis_scripts;
mod redis_store;

use std::path::Path;
use std::sync::Arc;

use mycluster_core::service::Volume;
use mycluster_core::{Change, Counters, Service, Task, Worker};

pub use embedded::EmbeddedStore;
pub use holder::Holder;
pub use redis_store::{RedisStore, LEASE};

/// Where a store's history stands: the index of its last commit (0 for a new store) and
/// that commit's id (random, so two different commits of the same index differ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Head {
    pub index: u64,
    pub commit: u64,
}

impl Head {
    /// The head of the commit after this one.
    pub fn next(self, commit: u64) -> Head {
        Head {
            index: self.index + 1,
            commit,
        }
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "index {} (commit {:016x})", self.index, self.commit)
    }
}

/// Everything a store holds, as read back at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The last commit.
    pub head: Head,
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
    pub workers: Vec<Worker>,
    pub volumes: Vec<Volume>,
    pub counters: Counters,
}

impl Snapshot {
    /// The changes that write this state into an empty store.
    pub fn changes(&self) -> Vec<Change> {
        let mut changes: Vec<Change> = Vec::new();
        changes.extend(self.services.iter().cloned().map(Change::PutService));
        changes.extend(self.tasks.iter().cloned().map(Change::PutTask));
        changes.extend(self.workers.iter().cloned().map(Change::PutWorker));
        changes.extend(self.volumes.iter().cloned().map(Change::PutVolume));
        changes.push(Change::PutCounters(self.counters));
        changes
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written now; the same call may succeed later. A
    /// commit that fails this way may or may not have been applied: `head` tells.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What the store holds cannot be read back.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The store belongs to another cluster: opening it would mix two clusters' state.
    #[error("the store belongs to cluster '{found}', not '{expected}' (use --name {found}, or another data dir)")]
    WrongCluster { found: String, expected: String },
    /// The store no longer holds this manager's history (it was emptied, evicted,
    /// restored from an older copy, or written by someone else). Nothing was written;
    /// writing on top would lose acknowledged changes, so it takes an operator's choice.
    #[error("{0}")]
    Diverged(String),
    /// Another process holds this cluster's store (a second manager with the same name).
    #[error("{0}")]
    Held(String),
    /// The store URL or path is not usable, or the store is set up in a way that can lose
    /// data (fix the setting, then start again).
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// Whether waiting may fix it (the store is down), as opposed to an error that takes
    /// a person (a corrupt file, another manager, a store that lost data).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A durable home for the cluster state.
///
/// The manager holds the state in memory and calls `commit` before it acknowledges a
/// change: when `commit` returns `Ok`, the changes must survive a crash of the process
/// (and, for a local backend, of the machine). A commit is all or nothing.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend and where, for logs and `/healthz`.
    fn describe(&self) -> String;

    /// Reads back everything committed so far.
    async fn load(&self) -> Result<Snapshot, StoreError>;

    /// Applies `changes` in order, atomically and durably, if the store's head is still
    /// `after`, and makes `next` its head. If the head is already `next` (this very commit,
    /// applied by an earlier try whose answer was lost) it succeeds without writing again.
    /// Any other head is `Diverged`, and nothing is written.
    async fn commit(&self, after: Head, next: Head, changes: Vec<Change>)
        -> Result<(), StoreError>;

    /// The store's head now: what became of a commit whose answer was lost.
    async fn head(&self) -> Result<Head, StoreError>;

    /// Checks that the store still holds this cluster at `head` and can take the next
    /// commit: renews what must be renewed (Redis: the lease, the eviction policy),
    /// repairs what can be repaired (embedded: a file left unusable by an I/O error is
    /// reopened and verified). Called periodically by the manager.
    async fn check(&self, head: Head) -> Result<(), StoreError>;

    /// Replaces everything the store holds for this cluster with `snapshot`, whatever its
    /// head was: the operator's way back from `Diverged` (`mycluster store reseed`) and
    /// how `mycluster store copy` writes. Atomic where the backend allows it.
    async fn replace(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// Whether the store answers now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Lets go of the cluster (the Redis lease), so the next manager need not wait for it
    /// to expire. Called at a clean stop.
    async fn release(&self) {}
}

/// Whether opening a store that holds nothing yet (no file, nothing in Redis) starts a
/// new, empty cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Yes: a missing store is a new cluster.
    IfMissing,
    /// No: the caller knows the cluster existed (its data dir holds the cluster's
    /// tokens, or the record of the store it used), so a missing store is data lost, not
    /// a fresh start.
    No,
    /// The operator asked for a new cluster (`--init`): a missing store, or an empty
    /// (0-byte) file, is made afresh. A store that holds a cluster is still opened as it
    /// is: `--init` never erases one.
    Init,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The cluster's name.
    pub cluster: String,
    /// Whether a store that holds nothing yet may be started as a new, empty cluster.
    pub create: Create,
    /// Who opens it: the holder of the cluster while the store is open.
    pub holder: Holder,
}

impl OpenOptions {
    /// A store for `cluster` that may be created, held by this process in `role`.
    pub fn new(cluster: &str, role: &str) -> OpenOptions {
        OpenOptions {
            cluster: cluster.to_string(),
            create: Create::IfMissing,
            holder: Holder::this_process(role),
        }
    }
}

/// Opens the store a `--store` value names: `embedded` (the default) keeps a file in
/// `data_dir`; `redis://host:port[/db]` uses a Redis server.
pub async fn open(
    url: &str,
    data_dir: &Path,
    options: &OpenOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        "" | "embedded" => Ok(Arc::new(
            EmbeddedStore::open_with(data_dir, &options.cluster, options.create).await?,
        )),
        other if other.starts_with("redis://") => {
            Ok(Arc::new(RedisStore::connect(other, options).await?))
        }
        other => Err(StoreError::Config(format!(
            "unknown store '{other}': use 'embedded' or redis://host:port[/db]"
        ))),
    }
}

/// The message of a store that does not hold this manager's history, with the two ways
/// out. Shared by the backends so an operator reads the same words whichever it is.
/// `expected`: the head this manager last committed, when the caller knows it.
pub fn diverged(store: &str, expected: Option<Head>, found: &str) -> StoreError {
    let committed = expected.map_or(String::new(), |head| {
        format!("this manager last committed {head}, ")
    });
    StoreError::Diverged(format!(
        "the store ({store}) no longer holds this manager's history: {committed}the store holds \
         {found}. It was emptied, evicted, restored from an older copy or written by another \
         process. Nothing more is written until an operator chooses: `mycluster store reseed` \
         writes this manager's state back into the store, or restarting the manager takes the \
         store as it is (losing what it does not hold)"
    ))
}
