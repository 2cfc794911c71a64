//! `mycluster setup`: what a cluster should be — its name, workers, store, port and
//! tokens — decided from the options and what was saved before, then brought up (see
//! `up`).

use std::time::Duration;

use mycluster_core::lease::DEFAULT_LEASE;

use crate::converge::{free_port, free_port_but, DEFAULT_TLS_PORT};
use crate::error::SetupError;
use crate::secret::generate;
use crate::settings::{load_settings, Settings};
use crate::up::bring_up;

/// Where the manager keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A file in the manager's data volume.
    Embedded,
    /// A Redis container, as in the original.
    Redis,
}

impl StoreKind {
    /// The name saved in the settings.
    fn name(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Redis => "redis",
        }
    }
}

/// What `mycluster setup` was asked for.
#[derive(Clone, Debug)]
pub struct SetupOptions {
    /// Containers are <name>_manager_1, <name>_worker_1, ...
    pub name: String,
    pub workers: u32,
    pub store: StoreKind,
    /// With the Redis store: its image (none: built from this host's redis-server).
    pub redis_image: Option<String>,
    /// The host port for the API (none: the saved one, else 5000; 0: a free one).
    pub port: Option<u16>,
    /// The host port other hosts reach the API on over TLS (none: the saved one, else
    /// 5443; 0: a free one).
    pub tls_port: Option<u16>,
    /// The manager's `--rebalance`: every service's spread is evened out on its own
    /// when a worker joins or comes back.
    pub rebalance: bool,
    /// The manager's `--allow-bind`: host directories services may bind-mount from.
    pub allow_bind: Vec<String>,
    /// The manager's `--lease`: how long a cut-off worker keeps its `on_disconnect:
    /// "stop"` tasks (passed on only when it is not the default).
    pub lease: Duration,
    /// A read-only token for `GET /metrics` (the manager's `--metrics-token-file`), read
    /// from its file by the caller; none: the one saved before, if any.
    pub metrics_token: Option<String>,
}

/// Cluster names become Docker names (`<name>_manager_1`): shorter than the core's rule
/// for cluster names, and without '.'.
pub(crate) fn validate_name(name: &str) -> Result<(), SetupError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        return Err(SetupError::InvalidName(name.to_string()));
    }
    Ok(())
}

/// The lease as saved in the settings: none when it is the default (the manager is
/// then given no `--lease`).
fn saved_lease(lease: Duration) -> Option<u64> {
    (lease != DEFAULT_LEASE).then(|| u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
}

/// Sets up the cluster (or brings one set up before to what the options say), saying
/// what it found and did on stdout.
pub async fn setup(args: SetupOptions) -> Result<(), SetupError> {
    validate_name(&args.name)?;
    if args.workers == 0 || args.workers > 100 {
        return Err(SetupError::Workers);
    }
    let previous = load_settings(&args.name);
    // A cluster keeps its port when set up again; 0 asks for a free one, chosen now and
    // saved (the engine would choose another at each start of the manager container,
    // and the CLI would lose it).
    let kept = previous.as_ref().map(|p| p.port).filter(|p| *p != 0);
    let chosen_before = previous.as_ref().is_some_and(|p| p.port_chosen);
    let (port, port_chosen) = match (args.port, kept) {
        (Some(0), Some(kept)) | (None, Some(kept)) => (kept, chosen_before),
        (Some(0), None) => (free_port()?, true),
        (Some(port), _) => (port, false),
        (None, None) => (5000, false),
    };
    let kept_tls = previous.as_ref().map(|p| p.tls_port).filter(|p| *p != 0);
    let tls_chosen_before = previous.as_ref().is_some_and(|p| p.tls_port_chosen);
    let (tls_port, tls_port_chosen) = match (args.tls_port, kept_tls) {
        (Some(0), Some(kept)) | (None, Some(kept)) => (kept, tls_chosen_before),
        (Some(0), None) => (free_port_but(port)?, true),
        (Some(given), _) => (given, false),
        (None, None) => (DEFAULT_TLS_PORT, false),
    };
    if tls_port == port {
        return Err(SetupError::SamePorts(port));
    }
    if let Some(previous) = &previous {
        if previous.store != args.store.name() {
            return Err(SetupError::StoreMoved {
                name: args.name.clone(),
                store: previous.store.clone(),
            });
        }
    }
    let settings = Settings {
        name: args.name.clone(),
        workers: args.workers,
        store: args.store.name().into(),
        port,
        port_chosen,
        tls_port,
        tls_port_chosen,
        image: String::new(),
        redis_image: args.redis_image.clone(),
        // A cluster keeps its tokens when set up again.
        token: Some(
            previous
                .as_ref()
                .and_then(|p| p.token.clone())
                .unwrap_or_else(generate),
        ),
        join_token: Some(
            previous
                .as_ref()
                .and_then(|p| p.join_token.clone())
                .unwrap_or_else(generate),
        ),
        dev: false,
        // Set up again, a cluster takes the policies it is given now (none: the default).
        rebalance: args.rebalance,
        allow_bind: args.allow_bind.clone(),
        lease_ms: saved_lease(args.lease),
        metrics_token: args
            .metrics_token
            .clone()
            .or_else(|| previous.as_ref().and_then(|p| p.metrics_token.clone())),
        // Learnt from the manager once it runs (its CA is made on its first start).
        ca_sha256: previous.as_ref().and_then(|p| p.ca_sha256.clone()),
    };
    if let Some(metrics) = &settings.metrics_token {
        if Some(metrics) == settings.token.as_ref() || Some(metrics) == settings.join_token.as_ref()
        {
            return Err(SetupError::MetricsToken);
        }
    }
    bring_up(settings).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_fit_docker_names() {
        for good in ["test", "my-cluster_2", "A1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a.b", "a b", "a:b", &"x".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_lease_other_than_the_default_is_saved() {
        assert_eq!(saved_lease(DEFAULT_LEASE), None);
        assert_eq!(saved_lease(Duration::from_secs(7)), Some(7_000));
    }
}
