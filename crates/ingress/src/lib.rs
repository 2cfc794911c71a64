//! The ingress: MyCluster's own L4 load balancer. It listens on every published port of
//! the cluster's route table and hands each new client connection to the next running,
//! healthy replica of the port's service (round robin); a replica that refuses or does
//! not answer within the connect timeout is skipped, so a dead worker's replicas cost no
//! failed connection. The table comes from the manager by long-poll, and the last good
//! one is kept while the manager is unreachable.
//!
//! Where to start reading: [`run`] (what `mycluster ingress` runs) and [`Ingress::start`]
//! (the two tasks: the feed and the ports), then `feed` (the long-poll), `ports` (which
//! listeners exist), `proxy` (one port's accept loop and the relay of one connection),
//! `table` (the pure choice of replica) and `proxy_protocol` (the PROXY v2 header).

mod config;
mod feed;
mod ports;
mod proxy;
pub mod proxy_protocol;
mod stats;
mod table;

use std::collections::BTreeMap;
use std::sync::Arc;

use mycluster_core::wire::RouteTable;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, IngressConfig};
pub use feed::{FeedError, ManagerSource, RouteSource};
pub use stats::StatsSnapshot;

use crate::feed::Feed;
use crate::ports::Ports;
use crate::proxy::Relays;
use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manager(#[from] mycluster_client::ClientError),
    #[error("the ingress's {0} task failed: {1}")]
    Task(&'static str, String),
}

/// Runs the ingress for the manager of `config` until `stop`.
pub async fn run(config: IngressConfig, stop: CancellationToken) -> Result<(), IngressError> {
    config.check()?;
    let source = ManagerSource::new(&config.manager, config.token.clone(), config.pin)?;
    tracing::info!(
        "ingress: serving the published ports of the cluster at {} on {}",
        config.manager,
        config.listen
    );
    Ingress::start(&config, Arc::new(source), stop)?
        .wait()
        .await
}

/// A running ingress.
pub struct Ingress {
    ports: watch::Receiver<BTreeMap<u16, String>>,
    stats: Arc<Stats>,
    feed: JoinHandle<()>,
    proxy: JoinHandle<()>,
}

impl Ingress {
    /// Starts serving the tables of `source` (the manager's, or a scripted one) as
    /// `config` says, until `stop`. Must be called within a Tokio runtime.
    pub fn start(
        config: &IngressConfig,
        source: Arc<dyn RouteSource>,
        stop: CancellationToken,
    ) -> Result<Ingress, IngressError> {
        config.check()?;
        let stats = Arc::new(Stats::default());
        let (tables, tables_seen) = watch::channel::<Option<Arc<RouteTable>>>(None);
        let (status, ports) = watch::channel(BTreeMap::new());
        let wake = Arc::new(Notify::new());
        let feed = Feed::new(source, tables, wake.clone(), config.poll_wait, stop.clone());
        let relays = Arc::new(Relays {
            connect_timeout: config.connect_timeout,
            stats: stats.clone(),
            stop: stop.clone(),
        });
        let open = Ports::new(config.listen, config.cooling, relays, tables_seen, status);
        let feed = tokio::spawn(feed.run());
        let proxy = tokio::spawn(async move { open.run(&wake, stop).await });
        Ok(Ingress {
            ports,
            stats,
            feed,
            proxy,
        })
    }

    /// The open ports, each with its service; changes as ports open and close (a port is
    /// in it only while its listener is open).
    pub fn ports(&self) -> watch::Receiver<BTreeMap<u16, String>> {
        self.ports.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits until the ingress has stopped (its stop token was cancelled) and every
    /// port is closed.
    pub async fn wait(self) -> Result<(), IngressError> {
        let proxy = self.proxy.await;
        let feed = self.feed.await;
        let stats = self.stats.snapshot();
        tracing::info!(
            "ingress: stopped ({} connection(s) relayed, {} closed because no replica answered)",
            stats.relayed,
            stats.failed
        );
        proxy.map_err(|e| IngressError::Task("ports", e.to_string()))?;
        feed.map_err(|e| IngressError::Task("route table", e.to_string()))?;
        Ok(())
    }
}
