//! The embedded store: one redb file in the data directory. redb is pure Rust, keeps a
//! checksummed copy-on-write B-tree, and fsyncs every commit before it returns, so a
//! commit that returned survives `kill -9` and power loss; a torn write is rolled back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mycluster_core::{Change, Counters};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Snapshot, Store, StoreError};

const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const FILE_NAME: &str = "mycluster.redb";
/// Bumped when the stored layout changes incompatibly.
const SCHEMA: &str = "1";

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir` for `cluster`. A store made for another
    /// cluster is refused rather than silently shared.
    pub async fn open(data_dir: &Path, cluster: &str) -> Result<EmbeddedStore, StoreError> {
        let data_dir = data_dir.to_path_buf();
        let cluster = cluster.to_string();
        blocking(move || Self::open_blocking(&data_dir, &cluster)).await
    }

    fn open_blocking(data_dir: &Path, cluster: &str) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Config(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Config(format!(
                "{} is already open in another process (is another manager using this data dir?)",
                path.display()
            )),
            other => StoreError::Unavailable(format!("cannot open {}: {other}", path.display())),
        })?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            for table in [SERVICES, TASKS, WORKERS] {
                txn.open_table(table).map_err(unavailable)?;
            }
            let mut meta = txn.open_table(META).map_err(unavailable)?;
            let found = meta
                .get("cluster")
                .map_err(unavailable)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match found {
                Some(found) if found != cluster => {
                    return Err(StoreError::WrongCluster {
                        found,
                        expected: cluster.to_string(),
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert("cluster", cluster.as_bytes())
                        .map_err(unavailable)?;
                    meta.insert("schema", SCHEMA.as_bytes())
                        .map_err(unavailable)?;
                }
            }
            let schema = meta
                .get("schema")
                .map_err(unavailable)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            if schema.as_deref() != Some(SCHEMA) {
                return Err(StoreError::Corrupt(format!(
                    "{} has schema {schema:?}, this version reads schema {SCHEMA}",
                    path.display()
                )));
            }
        }
        txn.commit().map_err(unavailable)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path,
        })
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded (redb) at {}", self.path.display())
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_read().map_err(unavailable)?;
            let meta = txn.open_table(META).map_err(unavailable)?;
            let index = match meta.get("index").map_err(unavailable)? {
                Some(v) => decode::<u64>("index", v.value())?,
                None => 0,
            };
            let counters = match meta.get("counters").map_err(unavailable)? {
                Some(v) => decode::<Counters>("counters", v.value())?,
                None => Counters::default(),
            };
            Ok(Snapshot {
                index,
                services: read_all(&txn, SERVICES)?,
                tasks: read_all(&txn, TASKS)?,
                workers: read_all(&txn, WORKERS)?,
                counters,
            })
        })
        .await
    }

    async fn commit(&self, index: u64, changes: Vec<Change>) -> Result<(), StoreError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut services = txn.open_table(SERVICES).map_err(unavailable)?;
                let mut tasks = txn.open_table(TASKS).map_err(unavailable)?;
                let mut workers = txn.open_table(WORKERS).map_err(unavailable)?;
                let mut meta = txn.open_table(META).map_err(unavailable)?;
                for change in &changes {
                    match change {
                        Change::PutService(s) => {
                            services.insert(s.spec.name.as_str(), encode(s)?.as_slice())
                        }
                        Change::DeleteService(name) => services.remove(name.as_str()),
                        Change::PutTask(t) => tasks.insert(t.id.as_str(), encode(t)?.as_slice()),
                        Change::DeleteTask(id) => tasks.remove(id.as_str()),
                        Change::PutWorker(w) => {
                            workers.insert(w.name.as_str(), encode(w)?.as_slice())
                        }
                        Change::DeleteWorker(name) => workers.remove(name.as_str()),
                        Change::PutCounters(c) => meta.insert("counters", encode(c)?.as_slice()),
                    }
                    .map_err(unavailable)?;
                }
                meta.insert("index", encode(&index)?.as_slice())
                    .map_err(unavailable)?;
            }
            // Durability::Immediate is redb's default: commit returns after fsync.
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        blocking(move || db.begin_read().map(drop).map_err(unavailable)).await
    }
}

fn read_all<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let table_name = table.name().to_string();
    let table = txn.open_table(table).map_err(unavailable)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(unavailable)? {
        let (key, value) = entry.map_err(unavailable)?;
        out.push(decode(
            &format!("{table_name}/{}", key.value()),
            value.value(),
        )?);
    }
    Ok(out)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn unavailable(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(e.into().to_string())
}

/// redb is synchronous: run it off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}
