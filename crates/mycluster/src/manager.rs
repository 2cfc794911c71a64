//! `mycluster manager`: runs the manager until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mycluster_core::Limits;
use mycluster_manager::api::auth::Auth;
use mycluster_manager::{ApiConfig, Create, ManagerConfig, RunningManager, ServerLimits};
use mycluster_setup::secret::private_dir;
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, ManagerArgs};

pub async fn run(global: &Global, args: ManagerArgs) -> anyhow::Result<()> {
    crate::logging::init("manager");
    raise_open_files();
    // Seconds that are no duration at all (negative, NaN, too large) become zero, which
    // the config's check refuses with that flag's message, in the flags' order.
    let seconds = |value: f64| Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO);
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(&args.name));
    let mut config = ManagerConfig {
        listen: args.listen,
        data_dir,
        name: args.name,
        store: args.store,
        // Both decided below from the data dir, once the flags are known good: a bad
        // flag must not create the data dir or generate tokens.
        create: Create::No,
        limits: Limits {
            max_replicas: args.max_replicas,
            max_services: args.max_services,
            max_total_replicas: args.max_total_replicas,
            allow_bind: args.policy.allow_bind.clone(),
            rebalance: args.policy.rebalance,
            lease: args.policy.lease,
            max_workers: args.max_workers,
        },
        api: ApiConfig {
            auth: Auth::Off,
            max_body_bytes: args.max_body_bytes,
            max_header_bytes: args.max_header_bytes,
            request_timeout: seconds(args.request_timeout),
            max_wait: seconds(args.max_wait),
            long_polls_per_client: args.long_polls_per_client,
            max_heartbeats_per_second: args.max_heartbeats_per_second,
            event_history: args.event_history,
            ..ApiConfig::default()
        },
        server: ServerLimits {
            max_connections: args.max_connections,
            max_head_bytes: (args.max_header_bytes * 4).max(64 * 1024),
            ..ServerLimits::default()
        },
        reconcile_period: Duration::from_secs(1),
        tls: None,
        local_listen: args.tls.local_listen.clone(),
    };
    config.tls = args.tls.settings(&config.data_dir);
    config.check()?;
    private_dir(&config.data_dir)?;
    // Before any secret is generated: whether this data dir knew the cluster already.
    config.create = create_mode(&config.data_dir, &config.store, &config.name, args.init);
    (config.api.auth, _) = crate::auth::manager_auth(
        args.insecure_no_auth,
        global.token_file.as_deref(),
        args.join_token_file.as_deref(),
        &config.data_dir,
    )?;
    config.api.metrics_token =
        crate::auth::metrics_token(args.metrics_token_file.as_deref(), &config.api.auth)?;
    let stop = CancellationToken::new();
    let manager = RunningManager::start(config.clone(), stop.clone())
        .await
        .context("the manager could not start")?;
    record_store(&config.data_dir, &config.store, &config.name);
    // On a loopback address every client is on this host: plain HTTP serves them all.
    let scheme = if manager.ca.is_some() && !manager.addr.ip().is_loopback() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        "MyCluster manager for cluster {} listening on {scheme}://{}",
        config.name,
        manager.addr
    );
    if let Some(ca) = &manager.ca {
        tracing::info!(
            "TLS on {}: plain HTTP only from this host{}; cluster CA sha256 {}; `mycluster token --join` prints the join token",
            manager.addr,
            manager
                .local_addr
                .map(|a| format!(" (and from anyone on {a})"))
                .unwrap_or_default(),
            ca.pin
        );
    }
    tokio::spawn(stop_on_signal(stop));
    manager.wait().await?;
    tracing::info!("manager stopped");
    Ok(())
}

/// Thousands of agents need thousands of sockets (in the manager, and in a benchmark's
/// agent hosts): raise the hard limit when allowed (root), and the soft one to it.
pub fn raise_open_files() {
    // SAFETY: getrlimit/setrlimit on a stack value.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: 262_144,
            rlim_max: limit.rlim_max.max(262_144),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Where the data dir records which store the cluster lives in.
const STORE_RECORD: &str = "store";

/// Whether the manager may start a new, empty cluster when its store holds nothing. Not
/// if the data dir says the cluster existed — it holds the cluster's tokens (embedded
/// store), or the record that the cluster lived in this very store (any store) — unless
/// the operator said `--init`: a store found empty there is lost data, and starting
/// afresh on it would hide the loss.
fn create_mode(data_dir: &Path, store: &str, name: &str, init: bool) -> Create {
    if init {
        return Create::Init;
    }
    let recorded = std::fs::read_to_string(data_dir.join(STORE_RECORD))
        .is_ok_and(|text| text.trim() == store_record(store, name));
    let secrets = [crate::auth::API_TOKEN_FILE, crate::auth::JOIN_TOKEN_FILE]
        .iter()
        .any(|f| data_dir.join(f).exists());
    let embedded = matches!(store, "" | "embedded");
    if recorded || (embedded && secrets) {
        Create::No
    } else {
        Create::IfMissing
    }
}

fn store_record(store: &str, name: &str) -> String {
    format!("{name} {store}")
}

/// Notes in the data dir that the cluster lives in this store (see `create_mode`).
fn record_store(data_dir: &Path, store: &str, name: &str) {
    let path = data_dir.join(STORE_RECORD);
    let text = store_record(store, name);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == text) {
        return;
    }
    if let Err(e) = std::fs::write(&path, format!("{text}\n")) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// `$HOME/.local/share/mycluster/<name>`, or `/var/lib/mycluster/<name>` without a home.
fn default_data_dir(name: &str) -> PathBuf {
    let base = match (std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")) {
        (Some(xdg), _) if !xdg.is_empty() => PathBuf::from(xdg),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".local/share"),
        _ => PathBuf::from("/var/lib"),
    };
    base.join("mycluster").join(name)
}

/// Cancels `stop` at the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn stop_on_signal(stop: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = terminate => tracing::info!("terminated, stopping"),
    }
    stop.cancel();
}
