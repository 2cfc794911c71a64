//! The manager: the cluster's single source of truth. It serves the REST API, keeps the
//! desired and observed state in memory, writes every change through to the store before
//! acknowledging it, and runs the orchestrator loop that keeps tasks matching services.
//!
//! Where to start reading: `cluster` (every change is a command of the core's `step`;
//! this queues it, group-commits it to the store, publishes and wakes long-polls), then
//! `api` (the router; each handler parses a request into a command, calls
//! `Cluster::apply`, renders the answer), then `RunningManager::start` below (how the
//! pieces start and stop), `orchestrator` and `store_keeper` (the two loops).

pub mod api;
pub mod cluster;
mod config;
pub mod events;
pub mod metrics;
mod orchestrator;
mod store_keeper;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mycluster_background::Loop;
use mycluster_core::Limits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::ApiConfig;
pub use cluster::{Cluster, StoreHealth};
pub use config::ConfigError;
pub use mycluster_http::ServerLimits;
use mycluster_http::{Plain, Transport};
pub use mycluster_store::Create;

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub name: String,
    /// `embedded` or a store URL.
    pub store: String,
    /// Whether a store that holds nothing yet starts a new cluster.
    pub create: Create,
    pub limits: Limits,
    pub api: ApiConfig,
    pub server: ServerLimits,
    /// How often the orchestrator reconciles everything.
    pub reconcile_period: Duration,
    /// HTTPS (and plain HTTP only from this host); `None`: plain HTTP for everyone
    /// (`--insecure-no-tls`, and tests on loopback).
    pub tls: Option<TlsSettings>,
    /// A second address serving plain HTTP to anyone, beside TLS (`--local-listen`): for
    /// a port only this host reaches (setup publishes it on the host's 127.0.0.1).
    pub local_listen: Option<String>,
}

/// The manager's TLS: where the cluster CA lives and what its certificate names.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Where the cluster CA is kept, made there on first start (`<data-dir>/tls`).
    pub dir: PathBuf,
    /// The names and addresses clients reach the manager by (`--advertise-name`, and
    /// this host's name: see `mycluster manager`), beside localhost, 127.0.0.1, ::1 and
    /// the listen address. Only
    /// `curl --cacert` checks them: the cluster's own clients pin the CA instead.
    pub names: Vec<String>,
}

impl TlsSettings {
    /// Every name the certificate is made for, without repeats.
    fn certificate_names(&self, listen: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        for addr in listen {
            if let Ok(addr) = addr.parse::<SocketAddr>() {
                if !addr.ip().is_unspecified() {
                    names.push(addr.ip().to_string());
                }
            }
        }
        names.extend(self.names.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
        names
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] mycluster_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] mycluster_tls::TlsError),
    #[error("stopped before the store answered")]
    Stopped,
}

/// Opens the store and loads the state. A store that is unreachable (Redis down) is
/// waited for, with backoff and a log line per try; any other error (a damaged file,
/// another manager holding the cluster, a store that may lose data) ends the start.
/// `None` if stopped while waiting.
async fn open_store(
    config: &ManagerConfig,
    stop: &CancellationToken,
) -> Result<Option<Cluster>, ManagerError> {
    let opened = Loop::new("waiting for the store", STORE_RETRY, stop.clone())
        .max_backoff(STORE_RETRY_CAP)
        .retry(move || async move {
            let options = mycluster_store::OpenOptions {
                cluster: config.name.clone(),
                create: config.create,
                holder: mycluster_store::Holder::this_process("manager"),
            };
            let attempt = async {
                let store =
                    mycluster_store::open(&config.store, &config.data_dir, &options).await?;
                tracing::info!("store: {}", store.describe());
                Cluster::load(config.name.clone(), config.limits.clone(), store).await
            };
            match attempt.await {
                Ok(cluster) => Ok(Ok(cluster)),
                // Only an unreachable store is waited for; the rest ends the start.
                Err(mycluster_store::StoreError::Unavailable(why)) => Err(why),
                Err(other) => Ok(Err(other)),
            }
        })
        .await;
    match opened {
        None => Ok(None),
        Some(opened) => Ok(Some(opened?)),
    }
}

/// The first wait for an unreachable store, doubled at each next failure up to
/// `STORE_RETRY_CAP`: a manager whose store comes back starts within seconds.
const STORE_RETRY: Duration = Duration::from_millis(500);
const STORE_RETRY_CAP: Duration = Duration::from_secs(5);

/// What a plain HTTP request from another host is told on the main port (TLS only there:
/// see `mycluster_http::Plain`).
const PLAIN_REFUSED: &str = "this port speaks HTTPS: use https:// (plain HTTP is served only to clients on the manager's own host); `mycluster token --curl` prints a working curl line";

/// A manager that is listening: its address, and a handle to wait for its end.
pub struct RunningManager {
    pub addr: SocketAddr,
    /// The `--local-listen` address, if any.
    pub local_addr: Option<SocketAddr>,
    /// The cluster CA's public half, when serving TLS.
    pub ca: Option<api::CaPublic>,
    pub cluster: Arc<Cluster>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), ManagerError>>,
    orchestrator: tokio::task::JoinHandle<()>,
    store_keeper: tokio::task::JoinHandle<()>,
}

impl RunningManager {
    /// Checks the configuration, opens the store, loads the state, binds the listener
    /// and starts serving.
    pub async fn start(
        config: ManagerConfig,
        stop: CancellationToken,
    ) -> Result<RunningManager, ManagerError> {
        // Whoever built the configuration (flags, `dev`, a bench, a test): the same checks.
        config.check()?;
        let mut cluster = match open_store(&config, &stop).await? {
            Some(cluster) => cluster,
            None => return Err(ManagerError::Stopped),
        };
        cluster.set_heartbeat_rate(config.api.max_heartbeats_per_second);
        cluster.events().set_capacity(config.api.event_history);
        let cluster = Arc::new(cluster);
        let snapshot = cluster.snapshot();
        tracing::info!(
            "cluster {}: {} services, {} tasks, {} workers loaded (index {})",
            config.name,
            snapshot.state.services.len(),
            snapshot.state.tasks.len(),
            snapshot.state.workers.len(),
            snapshot.index
        );
        let bind = |listen: String| async move {
            TcpListener::bind(&listen)
                .await
                .map_err(|source| ManagerError::Listen {
                    addr: listen.clone(),
                    source,
                })
        };
        let listener = bind(config.listen.clone()).await?;
        let addr = listener.local_addr().map_err(ManagerError::Serve)?;
        let local = match &config.local_listen {
            Some(listen) => Some(bind(listen.clone()).await?),
            None => None,
        };
        let local_addr = match &local {
            Some(l) => Some(l.local_addr().map_err(ManagerError::Serve)?),
            None => None,
        };
        if config.api.auth.is_off() {
            tracing::warn!(
                "authentication is OFF (--insecure-no-auth): anyone who can reach {addr} controls this cluster"
            );
        }
        let mut api_config = config.api.clone();
        let tls = match &config.tls {
            Some(tls) => {
                let (ca, created) = mycluster_tls::ClusterCa::load_or_create(&tls.dir)?;
                let listening: Vec<&str> =
                    [Some(config.listen.as_str()), config.local_listen.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect();
                let names = tls.certificate_names(&listening);
                let server_config = ca.server_config("MyCluster manager", &names)?;
                tracing::info!(
                    "TLS: cluster CA sha256 {} ({} {}), certificate for {}",
                    ca.pin(),
                    if created { "made now in" } else { "kept in" },
                    tls.dir.display(),
                    names.join(", ")
                );
                api_config.ca = Some(api::CaPublic {
                    pin: ca.pin(),
                    pem: ca.cert_pem().into(),
                });
                Some(mycluster_tls::TlsAcceptor::from(server_config))
            }
            None => {
                tracing::warn!(
                    "TLS is OFF (--insecure-no-tls): tokens cross the network in the clear to {addr}"
                );
                None
            }
        };
        let ca = api_config.ca.clone();
        let app = api::router(api::AppState::new(
            cluster.clone(),
            api_config,
            stop.clone(),
        ));
        let server_stop = stop.clone();
        let limits = config.server.clone();
        let transport = |plain| Transport {
            tls: tls.clone(),
            plain: if tls.is_some() { plain } else { Plain::Anyone },
        };
        let main_transport = transport(Plain::LoopbackPeers {
            refusal: PLAIN_REFUSED,
        });
        let local_transport = transport(Plain::Anyone);
        let server = tokio::spawn(async move {
            let local = async {
                if let Some(local) = local {
                    let limits = limits.clone();
                    mycluster_http::serve(
                        local,
                        app.clone(),
                        &limits,
                        local_transport,
                        server_stop.clone(),
                    )
                    .await;
                }
            };
            let main = mycluster_http::serve(
                listener,
                app.clone(),
                &limits,
                main_transport,
                server_stop.clone(),
            );
            tokio::join!(main, local);
            Ok(())
        });
        let orchestrator = tokio::spawn(orchestrator::run(
            cluster.clone(),
            config.reconcile_period,
            stop.clone(),
        ));
        let store_keeper = tokio::spawn(store_keeper::run(cluster.clone(), stop.clone()));
        Ok(RunningManager {
            addr,
            local_addr,
            ca,
            cluster,
            stop,
            server,
            orchestrator,
            store_keeper,
        })
    }

    /// Waits until the manager has stopped (its stop token was cancelled).
    pub async fn wait(self) -> Result<(), ManagerError> {
        let served = self
            .server
            .await
            .unwrap_or_else(|e| Err(ManagerError::Serve(std::io::Error::other(e))));
        self.stop.cancel();
        let _ = self.orchestrator.await;
        let _ = self.store_keeper.await;
        // The next manager of this cluster need not wait for the lease to run out.
        self.cluster.close_store().await;
        served
    }
}
