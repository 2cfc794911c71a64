//! The Redis store, as the original used: every key under `mycluster:<cluster>:`, so
//! clusters can share one server. A service is JSON under `...:services.<name>` (readable
//! with `redis-cli GET`), tasks and workers are hashes, and the commit index and counters
//! live in a `meta` hash. A commit is one MULTI/EXEC: all of it or none.
//!
//! Durability is the server's: a commit is acknowledged when Redis has applied it, and
//! survives a Redis crash only with `appendonly yes` and `appendfsync always` (what
//! `mycluster setup --store redis` configures). The manager warns at start otherwise.

use std::collections::HashMap;
use std::time::Duration;

use mycluster_core::{Change, Counters, Service, Task, Worker};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Snapshot, Store, StoreError};

pub struct RedisStore {
    connection: ConnectionManager,
    url: String,
    prefix: String,
}

/// One Redis call may not take longer than this: a store that hangs is unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(url: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis at {url}: {e}"))
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://host:port[/db]`) for `cluster`.
    pub async fn open(url: &str, cluster: &str) -> Result<RedisStore, StoreError> {
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
        let store = RedisStore {
            connection,
            url: url.to_string(),
            prefix: format!("mycluster:{cluster}:"),
        };
        store.warn_unless_durable().await;
        Ok(store)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn warn_unless_durable(&self) {
        let mut connection = self.connection.clone();
        let answer: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query_async(&mut connection)
            .await;
        let fsync = answer.ok().and_then(|a| a.get(1).cloned());
        let mut connection = self.connection.clone();
        let aof: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut connection)
            .await;
        let aof = aof.ok().and_then(|a| a.get(1).cloned());
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

    async fn commit_once(&self, index: u64, changes: &[Change]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let services = self.key("services");
        let tasks = self.key("tasks");
        let workers = self.key("workers");
        let meta = self.key("meta");
        for change in changes {
            match change {
                Change::PutService(s) => {
                    pipe.set(self.key(&format!("services.{}", s.spec.name)), encode(s)?)
                        .ignore()
                        .sadd(&services, &s.spec.name)
                        .ignore();
                }
                Change::DeleteService(name) => {
                    pipe.del(self.key(&format!("services.{name}")))
                        .ignore()
                        .srem(&services, name)
                        .ignore();
                }
                Change::PutTask(t) => {
                    pipe.hset(&tasks, &t.id, encode(t)?).ignore();
                }
                Change::DeleteTask(id) => {
                    pipe.hdel(&tasks, id).ignore();
                }
                Change::PutWorker(w) => {
                    pipe.hset(&workers, &w.name, encode(w)?).ignore();
                }
                Change::DeleteWorker(name) => {
                    pipe.hdel(&workers, name).ignore();
                }
                Change::PutCounters(c) => {
                    pipe.hset(&meta, "counters", encode(c)?).ignore();
                }
            }
        }
        pipe.hset(&meta, "index", index).ignore();
        let mut connection = self.connection.clone();
        self.call("commit", pipe.query_async::<()>(&mut connection))
            .await
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
                if let Some(value) = value {
                    services.push(decode::<Service>(&format!("services.{name}"), &value)?);
                }
            }
        }
        let tasks: HashMap<String, String> =
            self.call("load", c.hgetall(self.key("tasks"))).await?;
        let workers: HashMap<String, String> =
            self.call("load", c.hgetall(self.key("workers"))).await?;
        let meta: HashMap<String, String> = self.call("load", c.hgetall(self.key("meta"))).await?;
        Ok(Snapshot {
            index: match meta.get("index") {
                Some(v) => v
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("meta index '{v}'")))?,
                None => 0,
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
            counters: match meta.get("counters") {
                Some(v) => decode::<Counters>("counters", v)?,
                None => Counters::default(),
            },
        })
    }

    async fn commit(&self, index: u64, changes: Vec<Change>) -> Result<(), StoreError> {
        match self.commit_once(index, &changes).await {
            // A dropped connection fails the call that hit it while the manager
            // reconnects; the commit sets values (it does not add to them), so applying it
            // twice is harmless: try once more.
            Err(StoreError::Unavailable(first)) => {
                tracing::debug!("commit failed once, retrying: {first}");
                self.commit_once(index, &changes).await
            }
            other => other,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.connection.clone();
        self.call("ping", redis::cmd("PING").query_async::<String>(&mut c))
            .await
            .map(drop)
    }
}

fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
