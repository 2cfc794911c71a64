//! The state store: one narrow trait, `Store`, that the manager writes every change
//! through, and the backends behind it. Every backend must pass the conformance suite in
//! `tests/conformance.rs`.

mod embedded;
mod redis_store;

use std::path::Path;
use std::sync::Arc;

use mycluster_core::{Change, Counters, Service, Task, Worker};

pub use embedded::EmbeddedStore;
pub use redis_store::RedisStore;

/// Everything a store holds, as read back at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The index of the last commit (0 for an empty store).
    pub index: u64,
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
    pub workers: Vec<Worker>,
    pub counters: Counters,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written now; the same call may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What the store holds cannot be read back.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The store belongs to another cluster: opening it would mix two clusters' state.
    #[error("the store belongs to cluster '{found}', not '{expected}' (use --name {found}, or another data dir)")]
    WrongCluster { found: String, expected: String },
    /// The store URL or path is not usable.
    #[error("{0}")]
    Config(String),
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

    /// Applies `changes` in order, atomically and durably, and records `index` as the
    /// index of the last commit.
    async fn commit(&self, index: u64, changes: Vec<Change>) -> Result<(), StoreError>;

    /// Whether the store answers now.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the store a `--store` value names: `embedded` (the default) keeps a file in
/// `data_dir`; `redis://host:port[/db]` uses a Redis server.
pub async fn open(url: &str, data_dir: &Path, cluster: &str) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        "" | "embedded" => Ok(Arc::new(EmbeddedStore::open(data_dir, cluster).await?)),
        other if other.starts_with("redis://") => {
            Ok(Arc::new(RedisStore::open(other, cluster).await?))
        }
        other => Err(StoreError::Config(format!(
            "unknown store '{other}': use 'embedded' or redis://host:port[/db]"
        ))),
    }
}
