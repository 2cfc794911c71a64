//! `mycluster agent` (one worker) and `mycluster dev` (a manager, N workers, the monitor
//! and an ingress in one process).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mycluster_agent::AgentConfig;
use mycluster_client::{Client, ClientError};
use mycluster_core::service::{Bytes, Cpus};
use mycluster_core::Limits;
use mycluster_ingress::IngressConfig;
use mycluster_manager::{ApiConfig, ManagerConfig, RunningManager, ServerLimits};
use mycluster_monitor::MonitorConfig;
use mycluster_runtime::{
    ContainerRuntime, DockerOptions, DockerRuntime, Identity, LogFiles, ProcessRuntime, SimRuntime,
    Supervisor,
};
use mycluster_setup::images::{ensure_demo, ORIGINAL_DEMO_IMAGE};
use mycluster_setup::secret::private_dir;
use mycluster_setup::settings;
use mycluster_setup::tokens::{agent_token, client_token};
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, DevArgs, Driver, Global, MonitorArgs};
use crate::manager::stop_on_signal;

/// What a worker offers to tasks' reservations, when not what its host has.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CapacityArgs {
    /// The CPUs this worker offers to tasks' reservations, e.g. 2 or 0.5 [default: the
    /// host's: its Docker engine's, or this machine's].
    #[arg(long, value_name = "N", env = "MYCLUSTER_CAPACITY_CPUS")]
    pub capacity_cpus: Option<String>,
    /// The memory it offers, e.g. 8G or 512M [default: the host's].
    #[arg(long, value_name = "SIZE", env = "MYCLUSTER_CAPACITY_MEMORY")]
    pub capacity_memory: Option<String>,
}

impl CapacityArgs {
    fn cpus(&self) -> anyhow::Result<Option<Cpus>> {
        let Some(text) = &self.capacity_cpus else {
            return Ok(None);
        };
        let number: f64 = text.trim().parse().map_err(|_| {
            anyhow::anyhow!("--capacity-cpus {text}: must be a number of CPUs (e.g. 2 or 0.5)")
        })?;
        // The core's rules for a number of CPUs, and its words.
        serde_json::from_value::<Cpus>(serde_json::Value::from(number))
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--capacity-cpus {text}: {e}"))
    }

    fn memory(&self) -> anyhow::Result<Option<Bytes>> {
        self.capacity_memory
            .as_deref()
            .map(|text| Bytes::parse(text).map_err(|e| anyhow::anyhow!("--capacity-memory: {e}")))
            .transpose()
    }
}

/// Where and how much of its tasks' output a process-driver worker keeps.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// The agent's own directory: the worker's credential is kept in <dir>/credential
    /// (mode 0600), and the process driver keeps its tasks' logs in <dir>/logs/<task
    /// id>/ [default: $HOME/.local/share/mycluster/agents/<cluster>/<name>; without
    /// $HOME, /var/lib/mycluster/agents/<cluster>/<name> for the credential].
    #[arg(long, env = "MYCLUSTER_AGENT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// The largest log file of one stream (stdout, stderr) of a task, e.g. 1M or 512K
    /// (process driver).
    #[arg(
        long,
        env = "MYCLUSTER_LOG_MAX_SIZE",
        default_value = "1M",
        value_name = "SIZE"
    )]
    pub log_max_size: String,
    /// How many files each stream of a task keeps: the current one and the rotated ones
    /// (process driver).
    #[arg(
        long,
        env = "MYCLUSTER_LOG_FILES",
        default_value_t = 2,
        value_name = "N"
    )]
    pub log_files: u32,
}

impl LogArgs {
    /// The agent's directory: --data-dir, else one under $HOME (`None` without it).
    fn dir(&self, identity: &Identity) -> Option<std::path::PathBuf> {
        self.data_dir.clone().or_else(|| {
            std::env::var_os("HOME").map(|home| {
                std::path::PathBuf::from(home)
                    .join(".local/share/mycluster/agents")
                    .join(&identity.cluster)
                    .join(&identity.worker)
            })
        })
    }

    /// Where the worker's credential is kept: in the agent's directory, else (no $HOME:
    /// a container started from a scratch image, as `setup`'s workers are) under
    /// /var/lib, so a restarted container still speaks for its worker.
    fn credential_file(&self, identity: &Identity) -> std::path::PathBuf {
        self.dir(identity)
            .unwrap_or_else(|| {
                std::path::PathBuf::from("/var/lib/mycluster/agents")
                    .join(&identity.cluster)
                    .join(&identity.worker)
            })
            .join("credential")
    }

    /// The log files of worker `identity`, checked; `None` when there is no directory to
    /// keep them in (no --data-dir and no $HOME): output is then discarded.
    fn files(&self, identity: &Identity) -> anyhow::Result<Option<LogFiles>> {
        let max_bytes = Bytes::parse(&self.log_max_size)
            .map_err(|e| anyhow::anyhow!("--log-max-size: {e}"))?
            .0;
        let Some(dir) = self.dir(identity) else {
            tracing::warn!("no --data-dir and no $HOME: process-driver tasks' output is discarded");
            return Ok(None);
        };
        let files = LogFiles {
            max_bytes,
            files: self.log_files,
            ..LogFiles::new(dir.join("logs"))
        };
        files.check().map_err(anyhow::Error::msg)?;
        Ok(Some(files))
    }
}

pub async fn run(global: &Global, args: AgentArgs) -> anyhow::Result<()> {
    crate::logging::init("agent");
    let token = agent_token(args.join_token_file.as_deref())?;
    serve(&global.manager_url(), global.pin()?, token, args).await
}

/// Runs the agent of `args` until a signal stops it, with the manager's address, the CA
/// it must be certified by (a join token's own when none) and the token decided by the
/// caller (`mycluster agent`'s flags, or `mycluster join`'s).
pub async fn serve(
    manager: &str,
    pin: Option<mycluster_tls::Pin>,
    token: Option<String>,
    args: AgentArgs,
) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .with_context(|| format!("--label {label}: use KEY=VALUE"))?;
        labels.insert(key.to_string(), value.to_string());
    }
    // Seconds that are no duration at all (negative, NaN, too large) become values the
    // config's check refuses with that flag's message.
    let mut config = AgentConfig {
        listen: args.listen,
        advertise: args.advertise,
        labels,
        capacity: args.capacity,
        capacity_cpus: args.offers.cpus()?,
        capacity_memory: args.offers.memory()?,
        heartbeat: Duration::try_from_secs_f64(args.heartbeat).unwrap_or(Duration::ZERO),
        takeover_wait: Duration::try_from_secs_f64(args.takeover_wait).unwrap_or(Duration::MAX),
        http2: args.http2,
        ..AgentConfig::new(manager, &args.name)
    };
    config.check()?;
    config.token = token;
    config.pin = pin;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let cluster = match args.cluster.clone() {
        Some(cluster) => cluster,
        None => match ask_cluster_name(&config, &stop).await? {
            Some(cluster) => cluster,
            None => return Ok(()),
        },
    };
    let identity = Identity {
        cluster,
        worker: args.name.clone(),
    };
    let docker = DockerOptions {
        pid_container: args.pid_container.clone(),
        network: args.network.clone(),
        ..DockerOptions::default()
    };
    let logs = match args.driver {
        Driver::Process => args.logs.files(&identity)?,
        _ => None,
    };
    config.credential_file = Some(args.logs.credential_file(&identity));
    let runtime = make_runtime(args.driver, identity, docker, logs).await?;
    // The keeper lives as long as the agent: a stopped worker keeps nothing.
    let keeper = args
        .keep_cluster
        .clone()
        .map(|cluster| tokio::spawn(mycluster_setup::keeper::keep(cluster, stop.clone())));
    let ran = mycluster_agent::run(config, runtime, stop.clone()).await;
    stop.cancel();
    if let Some(keeper) = keeper {
        if let Err(e) = keeper.await {
            tracing::error!("the keeper panicked: {e}");
        }
    }
    ran?;
    Ok(())
}

/// The cluster's name, from the manager (retrying until it answers); `None` if stopped
/// first.
async fn ask_cluster_name(
    config: &AgentConfig,
    stop: &CancellationToken,
) -> anyhow::Result<Option<String>> {
    // The token too: a join token names the CA an https:// manager must be certified by.
    let client = &Client::new(&config.manager, Duration::from_secs(10))?
        .with_pin(config.pin)?
        .with_token(config.token.clone());
    let cluster = mycluster_background::retry(
        "waiting for the manager",
        stop.clone(),
        Duration::from_millis(500),
        move || async move {
            match client.health().await {
                Ok(health) => Ok(Ok(health.cluster)),
                // Not a manager that is down: asking again cannot help.
                Err(
                    e @ (ClientError::Untrusted { .. }
                    | ClientError::NoTrust(_)
                    | ClientError::Cleartext(_)),
                ) => Ok(Err(e)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    cluster.transpose().map_err(anyhow::Error::from)
}

async fn make_runtime(
    driver: Driver,
    identity: Identity,
    docker: DockerOptions,
    logs: Option<LogFiles>,
) -> anyhow::Result<Arc<dyn ContainerRuntime>> {
    Ok(match driver {
        Driver::Docker => Arc::new(DockerRuntime::connect(identity, docker).await?),
        // Each task under `mycluster supervise` of this very build; its output kept
        // where `logs` says.
        Driver::Process => {
            let runtime = ProcessRuntime::new(identity, Supervisor::this_executable(["supervise"]));
            Arc::new(match logs {
                Some(logs) => runtime.with_logs(logs),
                None => runtime,
            })
        }
        Driver::Sim => Arc::new(SimRuntime::new(identity)),
    })
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    crate::logging::init("dev");
    if args.workers == 0 || args.workers > 1000 {
        bail!("--workers must be between 1 and 1000");
    }
    mycluster_core::commands::validate_cluster_name(&args.name)?;
    let driver = match args.driver {
        Some(driver) => driver,
        None if DockerRuntime::available().await => Driver::Docker,
        None => {
            tracing::info!("no Docker engine answers: using the process driver");
            Driver::Process
        }
    };
    if driver == Driver::Docker {
        // Offline, the original README's image cannot be pulled: stand in for it.
        let done = ensure_demo(false, &[ORIGINAL_DEMO_IMAGE.to_string()])
            .await
            .context("cannot prepare the demo image")?;
        for line in done {
            tracing::info!("{line}");
        }
    }
    let temporary = match &args.data_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("mycluster-dev-")
                .tempdir()?,
        ),
    };
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| temporary.as_ref().map(|t| t.path().to_path_buf()))
        .context("no data dir")?;
    private_dir(&data_dir)?;
    let (auth, secrets) = crate::auth::manager_auth(args.insecure_no_auth, None, None, &data_dir)?;
    let metrics_token = crate::auth::metrics_token(args.metrics_token_file.as_deref(), &auth)?;
    let data_dir_shown = data_dir.display().to_string();
    let data_dir_path = data_dir.clone();
    let stop = CancellationToken::new();
    let manager = RunningManager::start(
        ManagerConfig {
            listen: args.listen.clone(),
            data_dir,
            name: args.name.clone(),
            store: "embedded".into(),
            // A dev cluster is for experiments: a store removed by hand starts afresh.
            create: mycluster_manager::Create::IfMissing,
            limits: Limits {
                max_workers: args.max_workers,
                ..Limits::from(&args.policy)
            },
            api: ApiConfig {
                auth,
                // Every agent of a dev cluster comes from this one address.
                long_polls_per_client: ApiConfig::default().long_polls_per_client
                    + args.workers as usize,
                event_history: args.event_history,
                metrics_token,
                ..ApiConfig::default()
            },
            server: ServerLimits::default(),
            reconcile_period: Duration::from_secs(1),
            tls: args.tls.settings(&data_dir_path),
            local_listen: args.tls.local_listen.clone(),
        },
        stop.clone(),
    )
    .await
    .context("the manager could not start")?;
    let port = manager.addr.port();
    let local = format!("http://127.0.0.1:{port}");

    let mut agents = Vec::new();
    for i in 1..=args.workers {
        let name = format!("{}_worker_{i}", args.name);
        let identity = Identity {
            cluster: args.name.clone(),
            worker: name.clone(),
        };
        // A process worker's logs in the dev cluster's data dir (removed with it when
        // temporary).
        let logs = LogFiles::new(data_dir_path.join("workers").join(&name).join("logs"));
        let runtime = make_runtime(driver, identity, DockerOptions::default(), Some(logs)).await?;
        let config = AgentConfig {
            listen: "127.0.0.1:0".into(),
            remove_on_stop: true,
            // The manager stops with its agents, which remove their containers: nothing
            // to leave, and no manager to tell.
            leave_on_stop: false,
            token: secrets.as_ref().map(|s| s.join.clone()),
            credential_file: Some(data_dir_path.join("workers").join(&name).join("credential")),
            ..AgentConfig::new(&local, &name)
        };
        config.check()?;
        agents.push(tokio::spawn(mycluster_agent::run(
            config,
            runtime,
            stop.clone(),
        )));
    }

    let monitor_config = MonitorConfig {
        token: secrets.as_ref().map(|s| s.api.clone()),
        ..MonitorConfig::new(&local)
    };
    monitor_config.check()?;
    let monitor = tokio::spawn(mycluster_monitor::run(monitor_config, stop.clone()));

    // The published ports, served on this host as `setup`'s ingress container does, with
    // the agents' token.
    let ingress = match args.no_ingress {
        true => None,
        false => {
            let config = IngressConfig {
                token: secrets.as_ref().map(|s| s.join.clone()),
                ..IngressConfig::new(&local)
            };
            config.check()?;
            Some(tokio::spawn(mycluster_ingress::run(config, stop.clone())))
        }
    };

    let shown = format!("http://localhost:{port}");
    // So the CLI (and `mycluster token`) find this cluster and its token.
    let saved = settings::save_dev(&args.name, port, secrets.as_ref())?;
    let auth_header = match secrets {
        Some(_) => "-H \"Authorization: Bearer $(mycluster token)\" ",
        None => "",
    };
    let auth_line = match (&secrets, saved) {
        (Some(_), true) => "Token: `mycluster token` prints it (the CLI finds it by itself)".to_string(),
        (Some(_), false) => format!(
            "Token: in {}/api-token (a cluster set up with this name keeps its own settings)",
            data_dir_shown
        ),
        (None, _) => "NO AUTHENTICATION (--insecure-no-auth): anyone who reaches the port controls this cluster".to_string(),
    };
    let driver_name = match driver {
        Driver::Docker => "docker",
        Driver::Process => "process",
        Driver::Sim => "sim",
    };
    // The process driver gives each task a port of its own, in $PORT (which `hello`
    // reads): three replicas share one host.
    let example = match driver {
        Driver::Process => "--publish 8080:8000 -- mycluster hello",
        _ => "--publish 8080:8000 --image crccheck/hello-world",
    };
    let ports_line = match ingress {
        Some(_) => "Published ports: served on this host by the built-in ingress (curl localhost:8080 below)",
        None => "Published ports: not served (--no-ingress)",
    };
    println!(
        "MyCluster dev cluster '{name}': a manager and {workers} workers ({driver_name} driver)\n\
         API: {shown}\n{auth_line}\n{ports_line}\n\
         Try:\n  curl {auth_header}-H \"Content-Type: application/json\" -X GET {shown}/api/v1/state\n\
         \x20 mycluster service create hello --replicas 3 {example}\n\
         \x20 curl -i localhost:8080\n\
         Stop with Ctrl-C (its containers are removed).",
        name = args.name,
        workers = args.workers,
    );
    tokio::spawn(stop_on_signal(stop.clone()));
    for agent in agents {
        match agent.await {
            Ok(Ok(())) => {}
            // Also an agent superseded by another under its name (not in a dev cluster
            // unless something outside it registered one of its names).
            Ok(Err(e)) => tracing::error!("an agent failed: {e}"),
            Err(e) => tracing::error!("an agent panicked: {e}"),
        }
    }
    stop.cancel();
    if let Ok(Err(e)) = monitor.await {
        tracing::error!("the monitor failed: {e}");
    }
    if let Some(ingress) = ingress {
        match ingress.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("the ingress failed: {e}"),
            Err(e) => tracing::error!("the ingress panicked: {e}"),
        }
    }
    manager.wait().await?;
    if temporary.is_some() && saved {
        // Its state and token die with the temporary dir.
        settings::forget(&args.name);
    }
    drop(temporary);
    Ok(())
}

pub async fn monitor(global: &Global, args: MonitorArgs) -> anyhow::Result<()> {
    crate::logging::init("monitor");
    // Seconds that are no duration at all (negative, NaN, too large) become zero, which
    // the config's check refuses with that flag's message.
    let seconds = |value: f64| Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO);
    let mut config = MonitorConfig {
        interval: seconds(args.interval),
        dead_after: seconds(args.dead_after),
        probe_timeout: seconds(args.probe_timeout),
        ..MonitorConfig::new(&global.manager_url())
    };
    config.check()?;
    config.token = client_token(&global.manager_url(), global.token_file.as_deref())?;
    config.pin = global.pin()?;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    mycluster_monitor::run(config, stop).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(cpus: Option<&str>, memory: Option<&str>) -> CapacityArgs {
        CapacityArgs {
            capacity_cpus: cpus.map(str::to_owned),
            capacity_memory: memory.map(str::to_owned),
        }
    }

    #[test]
    fn capacity_flags_are_read_with_the_cores_rules() {
        let read = offers(Some("2.5"), Some("8G"));
        assert_eq!(read.cpus().ok(), Some(Some(Cpus(2500))));
        assert_eq!(read.memory().ok(), Some(Some(Bytes(8 << 30))));
        assert_eq!(offers(None, None).cpus().ok(), Some(None));
        let err = |args: CapacityArgs| {
            args.cpus()
                .and_then(|_| args.memory())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(offers(Some("two"), None)).starts_with("--capacity-cpus two: must be a number"));
        assert!(err(offers(Some("0"), None)).contains("above 0"));
        assert!(
            err(offers(None, Some("lots"))).starts_with("--capacity-memory: 'lots' must be a size")
        );
    }
}
