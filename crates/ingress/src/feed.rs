//! Where the ingress gets its route table: a [`RouteSource`] (the manager's `GET
//! /api/v1/endpoints`, long-polled by version; or, in tests, a scripted table), read in a
//! loop of the shared shape that hands each new table to the proxy.
//!
//! The last good table is kept while the source fails: a manager that is briefly down
//! (restarting, failing over) must not take every published port down with it. The
//! replicas themselves still run; the ingress keeps balancing over them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mycluster_background::{Loop, LoopControl};
use mycluster_client::{Client, ClientError};
use mycluster_core::wire::RouteTable;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Why the route table could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{0}{hint}", hint = token_hint(.0))]
    Manager(#[from] ClientError),
    #[error("the route table's source has ended")]
    Ended,
}

/// What to do about a refused token, after the manager's own words.
fn token_hint(error: &ClientError) -> &'static str {
    match error.status() {
        Some(401 | 403) => ": give the ingress the cluster's join token ($MYCLUSTER_JOIN_TOKEN) or its API token ($MYCLUSTER_TOKEN)",
        _ => "",
    }
}

/// One narrow edge: the route table, now or once it changes.
#[async_trait]
pub trait RouteSource: Send + Sync {
    /// The table. Without `known`, at once; with the version of the table last seen,
    /// once the table differs from it, or after `wait` whatever it is.
    async fn fetch(&self, known: Option<&str>, wait: Duration) -> Result<RouteTable, FeedError>;
}

/// The manager's route table, `GET /api/v1/endpoints?version=V&wait=W`.
pub struct ManagerSource {
    client: Client,
}

impl ManagerSource {
    /// A source reading the manager at `url`, presenting `token` (the join token or the
    /// API token; none for a manager without authentication).
    pub fn new(
        url: &str,
        token: Option<String>,
        pin: Option<mycluster_tls::Pin>,
    ) -> Result<ManagerSource, ClientError> {
        let client = Client::new(url, Duration::from_secs(10))?
            .with_pin(pin)?
            .with_token(token);
        Ok(ManagerSource { client })
    }
}

#[async_trait]
impl RouteSource for ManagerSource {
    async fn fetch(&self, known: Option<&str>, wait: Duration) -> Result<RouteTable, FeedError> {
        Ok(self.client.route_table(known, wait).await?)
    }
}

/// A table set by hand: the sender's current value, for tests and for embedding the
/// ingress where the table comes from elsewhere.
#[async_trait]
impl RouteSource for watch::Receiver<RouteTable> {
    async fn fetch(&self, known: Option<&str>, wait: Duration) -> Result<RouteTable, FeedError> {
        let mut tables = self.clone();
        let differs = |table: &RouteTable| Some(table.version.as_str()) != known;
        let changed = match tokio::time::timeout(wait, tables.wait_for(differs)).await {
            Ok(Ok(table)) => Ok(table.clone()),
            Ok(Err(_)) => Err(FeedError::Ended),
            Err(_) => Ok(self.borrow().clone()),
        };
        changed
    }
}

/// The first wait after a failed fetch; doubled at each next failure up to
/// [`RETRY_CAP`]: a manager that comes back is heard from within seconds.
const RETRY: Duration = Duration::from_millis(500);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// The feed loop and what it keeps between steps.
pub(crate) struct Feed {
    pub source: Arc<dyn RouteSource>,
    /// Each new table, for the proxy (which `wake` wakes).
    pub tables: watch::Sender<Option<Arc<RouteTable>>>,
    pub wake: Arc<Notify>,
    pub wait: Duration,
    pub stop: CancellationToken,
    /// The version of the table last handed on.
    known: Option<String>,
}

impl Feed {
    pub fn new(
        source: Arc<dyn RouteSource>,
        tables: watch::Sender<Option<Arc<RouteTable>>>,
        wake: Arc<Notify>,
        wait: Duration,
        stop: CancellationToken,
    ) -> Feed {
        Feed {
            source,
            tables,
            wake,
            wait,
            stop,
            known: None,
        }
    }

    /// Runs until the stop: each table that differs from the last is handed on.
    pub async fn run(mut self) {
        let stop = self.stop.clone();
        Loop::new("ingress", RETRY, stop)
            .max_backoff(RETRY_CAP)
            .on_recovery("the manager answers again")
            .run_with(&mut self, |feed| Box::pin(feed.step()))
            .await;
    }

    async fn step(&mut self) -> Result<LoopControl, String> {
        let fetch = self.source.fetch(self.known.as_deref(), self.wait);
        // A fetch waits up to `wait`: the stop does not wait for it.
        let fetched = tokio::select! {
            _ = self.stop.cancelled() => return Ok(LoopControl::Stop),
            fetched = fetch => fetched,
        };
        match fetched {
            Ok(table) => {
                if self.known.as_deref() != Some(table.version.as_str()) {
                    if self.known.is_none() {
                        tracing::info!(
                            "ingress: route table received: {} published ports",
                            table.routes.len()
                        );
                    }
                    self.known = Some(table.version.clone());
                    self.tables.send_replace(Some(Arc::new(table)));
                    self.wake.notify_one();
                }
                Ok(LoopControl::Now)
            }
            Err(FeedError::Ended) => Ok(LoopControl::Stop),
            Err(e) => Err(match self.known {
                None => format!("{e}; no port is served until it answers"),
                // The replicas still run: keep reaching them.
                Some(_) => format!("{e}; the last route table stays in force"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(version: &str) -> RouteTable {
        RouteTable {
            version: version.into(),
            routes: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_scripted_source_answers_changes_like_the_manager() {
        let (tables, source) = watch::channel(table("a"));
        let wait = Duration::from_secs(30);
        assert_eq!(
            source.fetch(None, wait).await.expect("at once").version,
            "a"
        );
        // The same version: waits until the table differs...
        let waiting = tokio::spawn({
            let source = source.clone();
            async move { source.fetch(Some("a"), wait).await }
        });
        tables.send_replace(table("b"));
        let next = waiting.await.expect("joined").expect("a table");
        assert_eq!(next.version, "b");
        // ... or answers the same table after the wait.
        let same = source
            .fetch(Some("b"), Duration::from_millis(10))
            .await
            .expect("a table");
        assert_eq!(same.version, "b");
        drop(tables);
        assert!(matches!(
            source.fetch(Some("b"), wait).await,
            Err(FeedError::Ended)
        ));
    }
}
