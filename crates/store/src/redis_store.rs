//! The Redis store, as the original used: every key under `mycluster:<cluster>:`, so
//! clusters can share one server. A service is JSON under `...:services.<name>` (readable
//! with `redis-cli GET`), tasks and workers are hashes, and the identity, head and
//! counters live in a `meta` hash. Every commit is one Lua script that checks the head
//! and the lease and writes, atomically (see `redis_scripts`).
//!
//! One manager per cluster: `...:lease` names the holder and expires unless renewed
//! (every `check`, about once a second). A second manager finds it held and is refused
//! once it has seen it renewed for a whole lease; a crashed manager's lease is taken
//! over at once when its process is known to be gone (same host), else when it expires.
//!
//! Durability is the server's: a commit is acknowledged when Redis has applied it, and
//! survives a Redis crash only with `appendonly yes` and `appendfsync always` (what
//! `mycluster setup --store redis` configures); the manager warns at start otherwise. A
//! server that may evict keys (`maxmemory-policy` other than `noeviction`) would drop
//! acknowledged changes silently: it is refused at start, and a running manager that sees
//! one stops writing until an operator reseeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mycluster_core::service::Volume;
use mycluster_core::{Change, Counters, Service, Task, Worker};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::redis_scripts::{self, Reply};
use crate::{diverged, Create, Head, Holder, OpenOptions, Snapshot, Store, StoreError};

/// Where a volume record lives in the `meta` hash: `volume.<name>`.
const VOLUME_PREFIX: &str = "volume.";

pub struct RedisStore {
    connection: ConnectionManager,
    url: String,
    cluster: String,
    prefix: String,
    /// The lease's value while this store holds it.
    lease: String,
    /// The cluster's identity, read (or made) at open.
    id: String,
    /// Set when an evicting policy was seen while this store wrote: keys may be gone, so
    /// it stays diverged until replaced. The policy's name.
    evicted: Mutex<Option<String>>,
    /// Whether `CONFIG GET` was refused (said once).
    config_refused: std::sync::atomic::AtomicBool,
}

/// One Redis call may not take longer than this: a store that hangs is unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a lease lasts unless renewed; the manager renews it about every second.
pub const LEASE: Duration = Duration::from_secs(10);

fn unavailable(url: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis at {url}: {e}"))
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://host:port[/db]`) for `cluster`, held by
    /// this process as a manager, creating the cluster if it has no data there.
    pub async fn open(url: &str, cluster: &str) -> Result<RedisStore, StoreError> {
        Self::connect(url, &OpenOptions::new(cluster, "manager")).await
    }

    /// Connects, checks the server is set up not to lose data, and takes the cluster's
    /// lease (waiting up to a lease for a holder that may be gone).
    pub async fn connect(url: &str, options: &OpenOptions) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Config(format!("invalid redis URL '{url}': {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2);
        let connection = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| unavailable(url, "no answer"))?
        .map_err(|e| unavailable(url, e))?;
        let prefix = format!("mycluster:{}:", options.cluster);
        let mut store = RedisStore {
            connection,
            url: url.to_string(),
            cluster: options.cluster.clone(),
            prefix,
            lease: options.holder.encode(),
            id: String::new(),
            evicted: Mutex::new(None),
            config_refused: Default::default(),
        };
        if let Some(policy) = store.evicting_policy().await? {
            return Err(StoreError::Config(format!(
                "redis at {url} runs with maxmemory-policy {policy}: it may evict this cluster's \
                 keys and silently lose acknowledged changes. Set it to noeviction \
                 (`redis-cli CONFIG SET maxmemory-policy noeviction`, and in redis.conf), then \
                 start again"
            )));
        }
        store.warn_unless_durable().await;
        store.id = store.take_lease(options.create).await?;
        Ok(store)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs a script with `meta` and `lease` as its keys.
    async fn script(&self, what: &str, code: &str, args: Vec<String>) -> Result<Reply, StoreError> {
        self.script_with(what, code, &["meta", "lease"], args).await
    }

    /// Runs a script with these keys (names under the cluster's prefix).
    async fn script_with(
        &self,
        what: &str,
        code: &str,
        keys: &[&str],
        args: Vec<String>,
    ) -> Result<Reply, StoreError> {
        let mut command = redis::cmd("EVAL");
        command.arg(code).arg(keys.len());
        for key in keys {
            command.arg(self.key(key));
        }
        command.arg(args);
        let mut connection = self.connection.clone();
        let values: Vec<String> = self
            .call(what, command.query_async(&mut connection))
            .await?;
        Reply::parse(values)
    }

    /// The holder, ttl, identity: the arguments every script starts with.
    fn fixed_args(&self) -> Vec<String> {
        vec![
            self.lease.clone(),
            LEASE.as_millis().to_string(),
            self.id.clone(),
        ]
    }

    /// Takes the lease; returns the cluster's identity.
    async fn take_lease(&self, create: Create) -> Result<String, StoreError> {
        let started = Instant::now();
        let mut said = false;
        loop {
            let new_id = format!("{:032x}", rand::random::<u128>());
            let create = if create == Create::No { "0" } else { "1" };
            let args = vec![
                self.lease.clone(),
                LEASE.as_millis().to_string(),
                new_id,
                create.to_string(),
            ];
            match self.script("open", redis_scripts::OPEN, args).await? {
                Reply::Ok(Some(id)) => return Ok(id),
                Reply::Empty => {
                    return Err(StoreError::Config(format!(
                        "redis at {} holds nothing for cluster '{}', but this manager's data dir \
                         says the cluster existed: restore the store, or start the manager with \
                         --init to start an empty cluster",
                        self.url, self.cluster
                    )))
                }
                Reply::Held(value) => {
                    let shown = Holder::shown(&value);
                    if Holder::decode(&value).is_some_and(|h| h.may_take_over()) {
                        tracing::warn!(
                            "cluster '{}' in redis at {} was held by {shown}, which is gone: taking it over",
                            self.cluster,
                            self.url
                        );
                        self.release_value(&value).await?;
                        continue;
                    }
                    // A holder that stopped renewing loses the lease within LEASE; one
                    // that still holds it after that is alive.
                    if started.elapsed() > LEASE + Duration::from_secs(1) {
                        return Err(StoreError::Held(format!(
                            "cluster '{}' in redis at {} is held by {shown}, which keeps renewing \
                             it: is another manager running with --name {}? Stop it, or give this \
                             one another --name",
                            self.cluster, self.url, self.cluster
                        )));
                    }
                    if !said {
                        tracing::warn!(
                            "cluster '{}' in redis at {} is held by {shown}: waiting up to {}s for it to let go",
                            self.cluster,
                            self.url,
                            LEASE.as_secs() + 1
                        );
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => {
                    return Err(StoreError::Unavailable(format!(
                        "redis at {}: unexpected answer to open: {other:?}",
                        self.url
                    )))
                }
            }
        }
    }

    async fn release_value(&self, value: &str) -> Result<(), StoreError> {
        let mut command = redis::cmd("EVAL");
        command
            .arg(redis_scripts::RELEASE)
            .arg(1)
            .arg(self.key("lease"))
            .arg(value);
        let mut connection = self.connection.clone();
        self.call(
            "release",
            command.query_async::<Vec<String>>(&mut connection),
        )
        .await
        .map(drop)
    }

    /// The server's `maxmemory-policy` if it may evict keys (anything but `noeviction`:
    /// the `volatile-*` ones may evict the lease); `None` if it does not, or cannot be
    /// read (a server that refuses `CONFIG`: said once).
    async fn evicting_policy(&self) -> Result<Option<String>, StoreError> {
        match self.config_get("maxmemory-policy").await? {
            Ok(policy) => Ok(policy.filter(|p| p != "noeviction")),
            Err(e) => {
                if !self
                    .config_refused
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        "redis at {}: cannot read maxmemory-policy ({e}): make sure it is noeviction, or an evicted key loses acknowledged changes",
                        self.url
                    );
                }
                Ok(None)
            }
        }
    }

    /// A setting of the server (`CONFIG GET`): the outer error is a server that does not
    /// answer; the inner one a server that refuses the command (`CONFIG` renamed away,
    /// or not allowed to this user), which is not an outage.
    async fn config_get(
        &self,
        name: &str,
    ) -> Result<Result<Option<String>, redis::RedisError>, StoreError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("CONFIG");
        command.arg("GET").arg(name);
        let query = command.query_async::<Vec<String>>(&mut connection);
        match tokio::time::timeout(CALL_TIMEOUT, query).await {
            Err(_) => Err(unavailable(
                &self.url,
                format!("config: no answer in {CALL_TIMEOUT:?}"),
            )),
            Ok(Ok(values)) => Ok(Ok(values.get(1).cloned())),
            Ok(Err(e))
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout() =>
            {
                Err(unavailable(&self.url, format!("config: {e}")))
            }
            Ok(Err(e)) => Ok(Err(e)),
        }
    }

    /// Refuses to write while the server may evict keys; once it was seen, keys may be
    /// gone, so the store stays refused until it is replaced.
    async fn refuse_if_evicting(&self) -> Result<(), StoreError> {
        if let Some(policy) = self.evicting_policy().await? {
            *self.evicted.lock().unwrap_or_else(|p| p.into_inner()) = Some(policy);
        }
        match &*self.evicted.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(policy) => Err(StoreError::Diverged(format!(
                "redis at {} was set to maxmemory-policy {policy} while this manager wrote to \
                 it: it may have evicted keys, losing acknowledged changes. Nothing more is \
                 written: set it to noeviction, then `mycluster store reseed` writes this \
                 manager's state back",
                self.url
            ))),
            None => Ok(()),
        }
    }

    async fn warn_unless_durable(&self) {
        let setting = |answer: Result<Result<Option<String>, redis::RedisError>, StoreError>| {
            answer.ok().and_then(Result::ok).flatten()
        };
        let aof = setting(self.config_get("appendonly").await);
        let fsync = setting(self.config_get("appendfsync").await);
        if aof.as_deref() != Some("yes") || fsync.as_deref() != Some("always") {
            tracing::warn!(
                "redis at {} runs with appendonly={} appendfsync={}: an acknowledged change can be lost if Redis crashes (use appendonly yes, appendfsync always)",
                self.url,
                aof.as_deref().unwrap_or("?"),
                fsync.as_deref().unwrap_or("?")
            );
        }
    }

    async fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(&self.url, format!("{what}: {e}"))),
            Err(_) => Err(unavailable(
                &self.url,
                format!("{what}: no answer in {CALL_TIMEOUT:?}"),
            )),
        }
    }

    /// The ops that write `changes` (see `redis_scripts`).
    fn ops(&self, changes: &[Change], ops: &mut Vec<String>) -> Result<(), StoreError> {
        let services = self.key("services");
        let tasks = self.key("tasks");
        let workers = self.key("workers");
        let meta = self.key("meta");
        let mut op = |parts: &[&str]| ops.extend(parts.iter().map(|p| p.to_string()));
        for change in changes {
            match change {
                Change::PutService(s) => {
                    let key = self.key(&format!("services.{}", s.spec.name));
                    op(&["S", &key, &encode(s)?]);
                    op(&["A", &services, &s.spec.name]);
                }
                Change::DeleteService(name) => {
                    op(&["D", &self.key(&format!("services.{name}"))]);
                    op(&["R", &services, name]);
                }
                Change::PutTask(t) => op(&["H", &tasks, &t.id, &encode(t)?]),
                Change::DeleteTask(id) => op(&["X", &tasks, id]),
                Change::PutWorker(w) => op(&["H", &workers, &w.name, &encode(w)?]),
                Change::DeleteWorker(name) => op(&["X", &workers, name]),
                Change::PutCounters(c) => op(&["H", &meta, "counters", &encode(c)?]),
                // Volumes live in `meta` under `volume.<name>`: no new key for the
                // scripts to know, and `replace` clears them with the rest of `meta`.
                Change::PutVolume(v) => op(&[
                    "H",
                    &meta,
                    &format!("{VOLUME_PREFIX}{}", v.name),
                    &encode(v)?,
                ]),
                Change::DeleteVolume(name) => op(&["X", &meta, &format!("{VOLUME_PREFIX}{name}")]),
            }
        }
        Ok(())
    }

    async fn commit_once(
        &self,
        after: Head,
        next: Head,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        let mut args = self.fixed_args();
        args.extend([
            after.index.to_string(),
            after.commit.to_string(),
            next.index.to_string(),
            next.commit.to_string(),
        ]);
        self.ops(changes, &mut args)?;
        let reply = self
            .script("commit", &redis_scripts::commit(), args)
            .await?;
        self.verdict(after, reply)
    }

    /// What a script's answer means for a write that expected `head`.
    fn verdict(&self, head: Head, reply: Reply) -> Result<(), StoreError> {
        match reply {
            Reply::Ok(_) | Reply::Done => Ok(()),
            Reply::Held(value) => Err(StoreError::Held(format!(
                "this manager lost cluster '{}' in redis at {} to {}: it no longer writes (stop \
                 one of the two managers; restart this one to take the cluster back once the \
                 other is gone)",
                self.cluster,
                self.url,
                Holder::shown(&value)
            ))),
            Reply::Empty => Err(diverged(&self.describe(), Some(head), "nothing")),
            Reply::Diverged { id, index, commit } => {
                let found = if id.is_empty() && index.is_empty() {
                    "nothing for this cluster".to_string()
                } else if id != self.id {
                    format!("another cluster's history (id {id}, index {index})")
                } else {
                    let commit: u64 = commit.parse().unwrap_or_default();
                    format!("index {index} (commit {commit:016x})")
                };
                Err(diverged(&self.describe(), Some(head), &found))
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn describe(&self) -> String {
        format!("redis at {} (keys {}*)", self.url, self.prefix)
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut c = self.connection.clone();
        let names: Vec<String> = self.call("load", c.smembers(self.key("services"))).await?;
        let mut services = Vec::with_capacity(names.len());
        if !names.is_empty() {
            let keys: Vec<String> = names
                .iter()
                .map(|n| self.key(&format!("services.{n}")))
                .collect();
            let values: Vec<Option<String>> = self.call("load", c.mget(&keys)).await?;
            for (name, value) in names.iter().zip(values) {
                match value {
                    Some(value) => {
                        services.push(decode::<Service>(&format!("services.{name}"), &value)?)
                    }
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "redis at {} lists service {name} but holds no {}: keys were \
                             evicted or deleted, so this store lost acknowledged changes. \
                             Restore it from a copy (or, to take it as it is, remove \
                             {name} from the set {})",
                            self.url,
                            self.key(&format!("services.{name}")),
                            self.key("services")
                        )))
                    }
                }
            }
        }
        let tasks: HashMap<String, String> =
            self.call("load", c.hgetall(self.key("tasks"))).await?;
        let workers: HashMap<String, String> =
            self.call("load", c.hgetall(self.key("workers"))).await?;
        let meta: HashMap<String, String> = self.call("load", c.hgetall(self.key("meta"))).await?;
        let number = |key: &str| -> Result<u64, StoreError> {
            match meta.get(key) {
                Some(v) => v
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("meta {key} '{v}'"))),
                None => Ok(0),
            }
        };
        Ok(Snapshot {
            head: Head {
                index: number("index")?,
                commit: number("commit")?,
            },
            services,
            tasks: tasks
                .iter()
                .map(|(id, v)| decode::<Task>(&format!("tasks/{id}"), v))
                .collect::<Result<_, _>>()?,
            workers: workers
                .iter()
                .map(|(name, v)| decode::<Worker>(&format!("workers/{name}"), v))
                .collect::<Result<_, _>>()?,
            volumes: meta
                .iter()
                .filter_map(|(key, v)| Some((key.strip_prefix(VOLUME_PREFIX)?, v)))
                .map(|(name, v)| decode::<Volume>(&format!("volumes/{name}"), v))
                .collect::<Result<_, _>>()?,
            counters: match meta.get("counters") {
                Some(v) => decode::<Counters>("counters", v)?,
                None => Counters::default(),
            },
        })
    }

    async fn commit(
        &self,
        after: Head,
        next: Head,
        changes: Vec<Change>,
    ) -> Result<(), StoreError> {
        self.refuse_if_evicting().await?;
        match self.commit_once(after, next, &changes).await {
            // A dropped connection fails the call that hit it while the manager
            // reconnects. The script is safe to run twice (the second finds `next` and
            // answers `done`): try once more.
            Err(StoreError::Unavailable(first)) => {
                tracing::debug!("commit failed once, retrying: {first}");
                self.commit_once(after, next, &changes).await
            }
            other => other,
        }
    }

    async fn head(&self) -> Result<Head, StoreError> {
        let mut c = self.connection.clone();
        let (id, index, commit): (Option<String>, Option<u64>, Option<u64>) = self
            .call(
                "head",
                redis::cmd("HMGET")
                    .arg(self.key("meta"))
                    .arg("id")
                    .arg("index")
                    .arg("commit")
                    .query_async(&mut c),
            )
            .await?;
        if id.as_deref() != Some(self.id.as_str()) {
            return Err(diverged(
                &self.describe(),
                None,
                &match id {
                    None => "nothing for this cluster".to_string(),
                    Some(id) => format!("another cluster's history (id {id})"),
                },
            ));
        }
        Ok(Head {
            index: index.unwrap_or(0),
            commit: commit.unwrap_or(0),
        })
    }

    async fn check(&self, head: Head) -> Result<(), StoreError> {
        self.refuse_if_evicting().await?;
        let mut args = self.fixed_args();
        args.extend([head.index.to_string(), head.commit.to_string()]);
        let reply = self.script("renew", redis_scripts::RENEW, args).await?;
        self.verdict(head, reply)
    }

    async fn replace(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        if let Some(policy) = self.evicting_policy().await? {
            return Err(StoreError::Config(format!(
                "redis at {} runs with maxmemory-policy {policy}: set it to noeviction first",
                self.url
            )));
        }
        let mut args = self.fixed_args();
        args.extend([
            snapshot.head.index.to_string(),
            snapshot.head.commit.to_string(),
            self.key("services."),
        ]);
        self.ops(&snapshot.changes(), &mut args)?;
        let keys = ["meta", "lease", "services", "tasks", "workers"];
        let reply = self
            .script_with("replace", &redis_scripts::replace(), &keys, args)
            .await?;
        self.verdict(snapshot.head, reply)?;
        *self.evicted.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        self.call("ping", redis::cmd("PING").query_async::<String>(&mut c))
            .await
            .map(drop)
    }

    async fn release(&self) {
        if let Err(e) = self.release_value(&self.lease).await {
            tracing::warn!("could not let go of the cluster's lease: {e}");
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
