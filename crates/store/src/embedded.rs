//! The embedded store: one redb file in the data directory. redb is pure Rust, keeps a
//! checksummed copy-on-write B-tree, and fsyncs every commit before it returns, so a
//! commit that returned survives `kill -9` and power loss; a torn write is rolled back.
//!
//! What redb leaves to us: a file that is not a store (empty, truncated, overwritten) is
//! refused at open with what to do, never silently started afresh, and every page is
//! checked at open (a damaged page is an error here, not a panic later). After an I/O
//! error (a full disk) redb refuses every write until the file is reopened: the store
//! then drops it, and reopens and verifies it before its next use once the disk has room
//! again (1 MiB free), so a freed disk is enough to write again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mycluster_core::{Change, Counters};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{diverged, Create, Head, Snapshot, Store, StoreError};

const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
/// Volumes made for slots (absent from a file written before volumes existed: read as
/// none, made at the first write).
const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The store's file in a data dir.
pub const FILE_NAME: &str = "mycluster.redb";
/// Bumped when the stored layout changes incompatibly.
const SCHEMA: &str = "1";

pub struct EmbeddedStore {
    path: PathBuf,
    cluster: String,
    /// The cluster's identity, made when the file was first written.
    id: String,
    /// The open file; `None` after a write failed, until it is reopened and verified.
    /// An async lock: a reopen (which reads the whole file) runs off the async workers
    /// while it is held, so two uses never reopen at once.
    db: tokio::sync::Mutex<Option<Arc<Database>>>,
}

impl EmbeddedStore {
    /// Opens the store in `data_dir` for `cluster`, making it when there is none.
    pub async fn open(data_dir: &Path, cluster: &str) -> Result<EmbeddedStore, StoreError> {
        Self::open_with(data_dir, cluster, Create::IfMissing).await
    }

    /// Opens the store in `data_dir` for `cluster`; `create` says whether a missing (or
    /// empty, with `Create::Init`) file may start a new cluster. A store made for another
    /// cluster is refused rather than silently shared.
    pub async fn open_with(
        data_dir: &Path,
        cluster: &str,
        create: Create,
    ) -> Result<EmbeddedStore, StoreError> {
        let data_dir = data_dir.to_path_buf();
        let cluster = cluster.to_string();
        blocking("open", move || {
            Self::open_blocking(&data_dir, &cluster, create)
        })
        .await
    }

    /// Where the store's file is (or would be) in `data_dir`.
    pub fn file_in(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    fn open_blocking(
        data_dir: &Path,
        cluster: &str,
        create: Create,
    ) -> Result<EmbeddedStore, StoreError> {
        let path = Self::file_in(data_dir);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 && create != Create::Init => {
                return Err(StoreError::Corrupt(format!(
                    "{} is empty (0 bytes): it is not a store. Restore it from a copy, or start \
                     the manager with --init to start an empty cluster in it",
                    path.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if create == Create::No {
                    return Err(StoreError::Config(format!(
                        "{} belongs to a cluster that existed (it holds the cluster's tokens or \
                         the record of its store), but its store {FILE_NAME} is missing: restore \
                         it from a copy, or start the manager with --init to start an empty \
                         cluster",
                        data_dir.display()
                    )));
                }
                std::fs::create_dir_all(data_dir).map_err(|e| {
                    StoreError::Config(format!(
                        "cannot create data dir {}: {e}",
                        data_dir.display()
                    ))
                })?;
            }
            Err(e) => {
                return Err(StoreError::Config(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        }
        // The engine may panic on a damaged file: that is damage too, said once.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> Result<(Database, String), OpenFailure> {
                let db = open_file(&path)?;
                let id = id_or_init(&db, cluster)?;
                Ok((db, id))
            },
        ));
        let (db, id) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(failure)) => return Err(at_start(&path, failure)),
            Err(panic) => return Err(corrupt(&path, &panic_message(&*panic))),
        };
        Ok(EmbeddedStore {
            path,
            cluster: cluster.to_string(),
            id,
            db: tokio::sync::Mutex::new(Some(Arc::new(db))),
        })
    }

    /// The open database, reopened (and verified, and written once) if the last write
    /// left it unusable — unless `reopen` is false.
    async fn database(&self, reopen: bool) -> Result<Arc<Database>, StoreError> {
        let mut slot = self.db.lock().await;
        if let Some(db) = &*slot {
            return Ok(db.clone());
        }
        if !reopen {
            return Err(unavailable(format!(
                "{} is to be reopened after a failed write",
                self.path.display()
            )));
        }
        let (path, cluster, id, describe) = (
            self.path.clone(),
            self.cluster.clone(),
            self.id.clone(),
            self.describe(),
        );
        let db = blocking("reopen", move || {
            reopen_file(&path, &cluster, &id, &describe)
        })
        .await?;
        tracing::info!("store: {} reopened and verified", self.path.display());
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// After a failed write: drop the file, so the next use reopens it.
    async fn broken(&self) {
        *self.db.lock().await = None;
    }

    /// Runs `f` on the database off the async workers (reopening it first if a write
    /// left it unusable); a failure that redb needs a reopen to get over marks the file
    /// for one.
    async fn with_db<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Database, &str) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.database(true).await?;
        let id = self.id.clone();
        let result = blocking(what, move || f(&db, &id)).await;
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.broken().await;
        }
        result
    }
}

/// Opens the file again after a failed write, and checks it is still this cluster's and
/// takes a write (the disk has room again) before anyone is told it does.
fn reopen_file(
    path: &Path,
    cluster: &str,
    id: &str,
    describe: &str,
) -> Result<Database, StoreError> {
    // A small write may still fit in pages the file has freed while an ordinary commit
    // does not: only a disk with room again is taken as one that can be written.
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(free) = free_bytes(dir) {
        if free < MIN_FREE {
            return Err(unavailable(format!(
                "no space left on device: {} has {free} bytes free, the store waits for {} MiB",
                dir.display(),
                MIN_FREE >> 20
            )));
        }
    }
    let db = open_file(path).map_err(|e| {
        unavailable(format!(
            "reopening {} after a failed write: {e}",
            path.display()
        ))
    })?;
    let stamp = read_stamp(&db)?;
    if stamp.cluster != cluster || stamp.id.as_deref() != Some(id) {
        // The file was replaced while the manager ran.
        return Err(diverged(
            describe,
            None,
            &format!(
                "cluster '{}' (id {}), not this manager's (id {id})",
                stamp.cluster,
                stamp.id.as_deref().unwrap_or("none"),
            ),
        ));
    }
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert("verified", encode(&now_secs())?.as_slice())
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)?;
    Ok(db)
}

/// The room a disk needs before a store that could not write on it is opened again.
const MIN_FREE: u64 = 1 << 20;

/// The bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills a zeroed struct we own from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Opens the file, checking every page: a damaged file is an error, not a later panic.
fn open_file(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)
}

/// What an open that failed at start means for the operator: never a retry loop.
fn at_start(path: &Path, e: impl Into<OpenFailure>) -> StoreError {
    match e.into() {
        OpenFailure::Store(e @ (StoreError::WrongCluster { .. } | StoreError::Config(_))) => e,
        OpenFailure::Store(StoreError::Corrupt(why)) => corrupt(path, &why),
        OpenFailure::Store(other) => corrupt(path, &other.to_string()),
        OpenFailure::Redb(redb::DatabaseError::DatabaseAlreadyOpen) => StoreError::Held(format!(
            "{} is already open in another process (is another manager using this data dir?)",
            path.display()
        )),
        OpenFailure::Redb(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Config(format!("cannot open {}: {e}", path.display()))
        }
        OpenFailure::Redb(other) => corrupt(path, &other.to_string()),
    }
}

fn corrupt(path: &Path, why: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{} is not a readable store ({why}). Restore it from a copy, or move it aside and \
         start the manager with --init to start an empty cluster",
        path.display()
    ))
}

enum OpenFailure {
    Redb(redb::DatabaseError),
    Store(StoreError),
}

impl From<redb::DatabaseError> for OpenFailure {
    fn from(e: redb::DatabaseError) -> Self {
        OpenFailure::Redb(e)
    }
}

impl From<StoreError> for OpenFailure {
    fn from(e: StoreError) -> Self {
        OpenFailure::Store(e)
    }
}

/// What `meta` holds about the store itself.
struct Found {
    cluster: String,
    schema: Option<String>,
    id: Option<String>,
}

fn read_stamp(db: &Database) -> Result<Found, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(Found {
                cluster: String::new(),
                schema: None,
                id: None,
            })
        }
        Err(e) => return Err(storage(e)),
    };
    let text = |key: &str| -> Result<Option<String>, StoreError> {
        Ok(meta
            .get(key)
            .map_err(storage)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    };
    Ok(Found {
        cluster: text("cluster")?.unwrap_or_default(),
        schema: text("schema")?,
        id: text("id")?,
    })
}

/// The store's identity: a new file gets one (as does a store written before stores had
/// one).
fn id_or_init(db: &Database, cluster: &str) -> Result<String, StoreError> {
    let found = read_stamp(db)?;
    if !found.cluster.is_empty() && found.cluster != cluster {
        return Err(StoreError::WrongCluster {
            found: found.cluster,
            expected: cluster.to_string(),
        });
    }
    if found.schema.is_some() && found.schema.as_deref() != Some(SCHEMA) {
        return Err(StoreError::Corrupt(format!(
            "it has schema {:?}, this version reads schema {SCHEMA}",
            found.schema
        )));
    }
    match found.id {
        Some(id) => Ok(id),
        None => {
            let id = format!("{:032x}", rand::random::<u128>());
            let txn = db.begin_write().map_err(storage)?;
            {
                for table in [SERVICES, TASKS, WORKERS, VOLUMES] {
                    txn.open_table(table).map_err(storage)?;
                }
                let mut meta = txn.open_table(META).map_err(storage)?;
                meta.insert("cluster", cluster.as_bytes())
                    .map_err(storage)?;
                meta.insert("schema", SCHEMA.as_bytes()).map_err(storage)?;
                meta.insert("id", id.as_bytes()).map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            Ok(id)
        }
    }
}

fn read_head(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Head, StoreError> {
    let number = |key: &str| -> Result<u64, StoreError> {
        match meta.get(key).map_err(storage)? {
            Some(v) => decode::<u64>(key, v.value()),
            None => Ok(0),
        }
    };
    Ok(Head {
        index: number("index")?,
        commit: number("commit")?,
    })
}

fn read_id(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<String, StoreError> {
    Ok(meta
        .get("id")
        .map_err(storage)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
        .unwrap_or_default())
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded (redb) at {}", self.path.display())
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let path = self.path.clone();
        self.with_db("load", move |db, _| {
            let txn = db.begin_read().map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            let counters = match meta.get("counters").map_err(storage)? {
                Some(v) => decode::<Counters>("counters", v.value())?,
                None => Counters::default(),
            };
            Ok(Snapshot {
                head: read_head(&meta)?,
                services: read_all(&txn, SERVICES)?,
                tasks: read_all(&txn, TASKS)?,
                workers: read_all(&txn, WORKERS)?,
                volumes: match txn.open_table(VOLUMES) {
                    Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
                    _ => read_all(&txn, VOLUMES)?,
                },
                counters,
            })
        })
        .await
        .map_err(|e| match e {
            StoreError::Corrupt(why) => corrupt(&path, &why),
            other => other,
        })
    }

    async fn commit(
        &self,
        after: Head,
        next: Head,
        changes: Vec<Change>,
    ) -> Result<(), StoreError> {
        let describe = self.describe();
        self.with_db("commit", move |db, id| {
            let txn = db.begin_write().map_err(storage)?;
            {
                let meta = txn.open_table(META).map_err(storage)?;
                let (found_id, found) = (read_id(&meta)?, read_head(&meta)?);
                if found_id == id && found == next {
                    // Applied already, by a try whose answer was lost.
                    return Ok(());
                }
                if found_id != id || found != after {
                    return Err(diverged(&describe, Some(after), &found.to_string()));
                }
            }
            apply(&txn, &changes, next)?;
            // Durability::Immediate is redb's default: commit returns after fsync.
            txn.commit().map_err(storage)
        })
        .await
    }

    async fn head(&self) -> Result<Head, StoreError> {
        let describe = self.describe();
        self.with_db("head", move |db, id| {
            let txn = db.begin_read().map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            let found = read_id(&meta)?;
            if found != id {
                return Err(diverged(
                    &describe,
                    None,
                    &format!("another cluster's history (id {found})"),
                ));
            }
            read_head(&meta)
        })
        .await
    }

    async fn check(&self, head: Head) -> Result<(), StoreError> {
        let found = self.head().await?;
        if found != head {
            return Err(diverged(&self.describe(), Some(head), &found.to_string()));
        }
        Ok(())
    }

    async fn replace(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let snapshot = snapshot.clone();
        self.with_db("replace", move |db, _| {
            let txn = db.begin_write().map_err(storage)?;
            for table in [SERVICES, TASKS, WORKERS, VOLUMES] {
                txn.delete_table(table).map_err(storage)?;
            }
            apply(&txn, &snapshot.changes(), snapshot.head)?;
            txn.commit().map_err(storage)
        })
        .await
    }

    /// Never reopens: a ping must not read the whole file each time it is asked while
    /// the disk is still full (the next write, or the keeper's check, reopens it).
    async fn ping(&self) -> Result<(), StoreError> {
        let db = self.database(false).await?;
        blocking("ping", move || db.begin_read().map(drop).map_err(storage)).await
    }
}

/// Writes `changes`, in order, and the new head into a write transaction.
fn apply(txn: &redb::WriteTransaction, changes: &[Change], head: Head) -> Result<(), StoreError> {
    let mut services = txn.open_table(SERVICES).map_err(storage)?;
    let mut tasks = txn.open_table(TASKS).map_err(storage)?;
    let mut workers = txn.open_table(WORKERS).map_err(storage)?;
    let mut volumes = txn.open_table(VOLUMES).map_err(storage)?;
    let mut meta = txn.open_table(META).map_err(storage)?;
    for change in changes {
        match change {
            Change::PutService(s) => services.insert(s.spec.name.as_str(), encode(s)?.as_slice()),
            Change::DeleteService(name) => services.remove(name.as_str()),
            Change::PutTask(t) => tasks.insert(t.id.as_str(), encode(t)?.as_slice()),
            Change::DeleteTask(id) => tasks.remove(id.as_str()),
            Change::PutWorker(w) => workers.insert(w.name.as_str(), encode(w)?.as_slice()),
            Change::DeleteWorker(name) => workers.remove(name.as_str()),
            Change::PutCounters(c) => meta.insert("counters", encode(c)?.as_slice()),
            Change::PutVolume(v) => volumes.insert(v.name.as_str(), encode(v)?.as_slice()),
            Change::DeleteVolume(name) => volumes.remove(name.as_str()),
        }
        .map_err(storage)?;
    }
    write_head(&mut meta, head)
}

fn write_head(
    meta: &mut redb::Table<&'static str, &'static [u8]>,
    head: Head,
) -> Result<(), StoreError> {
    meta.insert("index", encode(&head.index)?.as_slice())
        .map_err(storage)?;
    meta.insert("commit", encode(&head.commit)?.as_slice())
        .map_err(storage)?;
    Ok(())
}

fn read_all<T: DeserializeOwned>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let table_name = table.name().to_string();
    let table = txn.open_table(table).map_err(storage)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
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

/// A redb error: damage is `Corrupt`; anything else (I/O, a full disk, a file left
/// unusable by an earlier error) is `Unavailable`, and the file is reopened before its
/// next use.
fn storage(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(why) => StoreError::Corrupt(why),
        other => unavailable(other.to_string()),
    }
}

fn unavailable(why: String) -> StoreError {
    StoreError::Unavailable(why)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// redb is synchronous: run it off the async workers. A panic inside the storage engine
/// (it may panic on a damaged file) is caught here and reported as damage, once.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(StoreError::Corrupt(format!(
            "the storage engine failed during {what}: {}",
            panic_message(&*e.into_panic())
        ))),
        Err(e) => Err(StoreError::Unavailable(format!("store task failed: {e}"))),
    }
}

/// What a caught panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .map_or_else(
            || "the storage engine panicked".into(),
            |m| format!("the storage engine panicked: {m}"),
        )
}
