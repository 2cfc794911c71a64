//! The command line: every subcommand and flag, with the environment variables that can
//! set them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::admin_args::{PolicyArgs, VolumeCommand, WorkerCommand};
pub use crate::service_args::{ServiceCommand, WaitArgs};

#[derive(Parser)]
#[command(
    name = "mycluster",
    version,
    about = "A lightweight container orchestrator: one binary for the manager, the workers and the CLI.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// The manager's API address [default: the cluster set up last, else
    /// http://localhost:5000].
    #[arg(long, global = true, env = "MYCLUSTER_MANAGER")]
    pub manager: Option<String>,
    /// A file holding the API token [default: $MYCLUSTER_TOKEN, else the token saved by
    /// `setup`/`dev` for that manager].
    #[arg(long, global = true, env = "MYCLUSTER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the raw JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Trust an https:// manager certified by the CA with this SHA-256 (hex, as in a
    /// join token) [default: the CA saved for that manager; a join token's own].
    #[arg(long, global = true, env = "MYCLUSTER_CA_SHA256", value_name = "HEX")]
    pub ca_sha256: Option<String>,
    /// Trust an https:// manager certified by the CA in this PEM file (`mycluster token
    /// --ca` prints the saved one's path).
    #[arg(long, global = true, env = "MYCLUSTER_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the manager: the REST API, the state store and the scheduler.
    Manager(ManagerArgs),
    /// Run a worker's agent: it runs the tasks the manager assigns to this worker.
    Agent(AgentArgs),
    /// Run the monitor: find dead workers and have their services relocated.
    Monitor(MonitorArgs),
    /// Run a whole cluster in this process: a manager, a monitor, N workers and an
    /// ingress serving the published ports.
    Dev(DevArgs),
    /// Run an ingress: listen on every port the cluster's services publish and spread
    /// each new connection over the service's running, healthy replicas.
    Ingress(IngressArgs),
    /// Serve "Hello World" over HTTP: the demo workload (like crccheck/hello-world).
    Hello(HelloArgs),
    /// Print the addresses a name resolves to, one per line: run in a workload on the
    /// cluster network to check discovery (`docker exec <container> /mycluster resolve
    /// web` lists the replicas of service `web`). Exits 1 when the name does not resolve.
    Resolve {
        /// The name to look up: a service's name, or any host name.
        name: String,
    },
    /// Set up a cluster on this Docker host: a manager, a monitor and N workers.
    Setup(SetupArgs),
    /// Start, stop, list or remove the containers of a cluster set up here.
    Manage(ManageArgs),
    /// Work with state stores.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Inspect, drain, activate, label or remove a worker.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// List or remove the volumes the cluster made for services' slots.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Measure the scheduler, the control plane at scale, the API and the footprint.
    Bench(BenchArgs),
    /// Build images on the local Docker engine.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create, inspect, scale and remove services.
    #[command(subcommand)]
    Service(Box<ServiceCommand>),
    /// Print a service's logs: every replica's lines, each prefixed
    /// `<service>.<slot>@<worker> | `.
    Logs(crate::logs::LogsArgs),
    /// Show the cluster state: workers and what runs on them, and the services.
    State,
    /// Show the cluster statistics.
    Stats,
    /// List the workers.
    Workers,
    /// Print the cluster's events (services, tasks, workers, rollouts), or follow them
    /// (-f), resuming by index.
    Events(crate::events::EventsArgs),
    /// List tasks (replicas) with their desired and observed state.
    Tasks {
        /// Only the tasks of this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Print the API token of a cluster set up here (for curl:
    /// `-H "Authorization: Bearer $(mycluster token)"`).
    Token {
        /// The cluster [default: the one set up last].
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// The join token (for agents) instead: the manager's when it answers
        /// (`MCJT1-<CA digest>-<secret>` when it serves TLS), else the saved one.
        #[arg(long)]
        join: bool,
        /// The path of the cluster CA's certificate saved beside its settings (fetched
        /// from the manager first if missing), for `curl --cacert`.
        #[arg(long, conflicts_with_all = ["join", "curl"])]
        ca: bool,
        /// Ready curl lines: on this host (plain HTTP on the local port), and from other
        /// hosts (HTTPS on the TLS port, checked against the saved CA).
        #[arg(long, conflicts_with = "join")]
        curl: bool,
        /// Replace the join token's secret first (the old one is refused from then on;
        /// registered workers keep working) and print the new one.
        #[arg(long, requires = "join")]
        rotate: bool,
    },
    /// Join this host to a cluster as a worker: check the join token and the Docker
    /// engine, check the manager through TLS pinned to the token's CA, then run the agent
    /// (or print a systemd unit that does).
    Join(crate::join::JoinArgs),
    /// Internal: the supervisor of one process-driver task, started by its agent, which
    /// writes the task on its stdin.
    #[command(hide = true)]
    Supervise,
}

impl Global {
    /// The manager to talk to: the flag or environment, else the cluster set up last on
    /// this machine, else the default address.
    /// The CA an https:// manager must be certified by: --ca-sha256, --cacert, else the
    /// one saved for that manager by `setup` (or `mycluster token --ca`).
    pub fn pin(&self) -> anyhow::Result<Option<mycluster_tls::Pin>> {
        if let Some(hex) = &self.ca_sha256 {
            return Ok(Some(
                mycluster_tls::Pin::parse(hex).map_err(|e| anyhow::anyhow!("--ca-sha256: {e}"))?,
            ));
        }
        if let Some(path) = &self.cacert {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--cacert {}: {e}", path.display()))?;
            let pin = mycluster_tls::Pin::of_pem(&pem, &path.display().to_string())
                .map_err(|e| anyhow::anyhow!("--cacert: {e}"))?;
            return Ok(Some(pin));
        }
        Ok(mycluster_setup::settings::saved_for(&self.manager_url())
            .and_then(|s| s.ca_sha256)
            .and_then(|hex| mycluster_tls::Pin::parse(&hex).ok()))
    }

    pub fn manager_url(&self) -> String {
        match &self.manager {
            Some(url) => url.clone(),
            None => mycluster_setup::settings::current()
                .map(|s| s.manager_url())
                .unwrap_or_else(|| "http://localhost:5000".into()),
        }
    }
}

impl Command {
    /// Whether this is a client of the API (it prints and ends), not a long-running role.
    pub fn is_client(&self) -> bool {
        matches!(
            self,
            Command::Service(_)
                | Command::Worker(_)
                | Command::Volume(_)
                | Command::Store(StoreCommand::Reseed)
                | Command::State
                | Command::Stats
                | Command::Workers
                | Command::Tasks { .. }
                | Command::Events(_)
                | Command::Logs(_)
        )
    }
}

#[derive(Args, Clone, Debug)]
pub struct ManagerArgs {
    /// Address to serve the API on.
    #[arg(long, env = "MYCLUSTER_LISTEN", default_value = "0.0.0.0:5000")]
    pub listen: String,
    /// Where the embedded store keeps its file
    /// [default: $HOME/.local/share/mycluster/<name>].
    #[arg(long, env = "MYCLUSTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The cluster's name.
    #[arg(long, env = "MYCLUSTER_NAME", default_value = "myCluster")]
    pub name: String,
    /// The state store: `embedded` (a file in the data dir), or
    /// `redis://host:port[/db]`.
    #[arg(long, env = "MYCLUSTER_STORE", default_value = "embedded")]
    pub store: String,
    /// Start an empty cluster even though the data dir says this cluster existed (it
    /// holds the cluster's tokens, or the record of its store) but its store is missing
    /// or empty. Without it such a start is refused: an empty store there is lost data.
    /// A store that holds the cluster is opened as it is: --init never erases one.
    #[arg(long)]
    pub init: bool,
    /// The most replicas a service may ask for.
    #[arg(long, env = "MYCLUSTER_MAX_REPLICAS", default_value_t = 1000)]
    pub max_replicas: u32,
    /// The largest request body accepted, in bytes.
    #[arg(long, env = "MYCLUSTER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// The most services the cluster holds.
    #[arg(long, env = "MYCLUSTER_MAX_SERVICES", default_value_t = 10_000)]
    pub max_services: usize,
    /// The most replicas of all services together.
    #[arg(
        long,
        env = "MYCLUSTER_MAX_TOTAL_REPLICAS",
        default_value_t = 1_000_000
    )]
    pub max_total_replicas: u64,
    /// The largest request line and headers accepted, in bytes.
    #[arg(long, env = "MYCLUSTER_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Seconds a request may take (beyond the wait it asked for) before it gets 503 (408
    /// if what is slow is the client sending its body).
    #[arg(long, env = "MYCLUSTER_REQUEST_TIMEOUT", default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Seconds an agent's long-poll, or a POST's `?wait=`, may wait at most.
    #[arg(long, env = "MYCLUSTER_MAX_WAIT", default_value_t = 60.0)]
    pub max_wait: f64,
    /// Long-polls one client address may have waiting at once (more get 429).
    #[arg(long, env = "MYCLUSTER_LONG_POLLS_PER_CLIENT", default_value_t = 64)]
    pub long_polls_per_client: usize,
    /// Open connections at once (more wait to be accepted).
    #[arg(long, env = "MYCLUSTER_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// Heartbeats all agents together may send per second. Agents beat every second
    /// until the cluster outgrows this, then each is asked to beat less often (10,000
    /// workers at 1000/s: every 10 s), and the monitor waits two intervals before it
    /// suspects a worker.
    #[arg(
        long,
        env = "MYCLUSTER_MAX_HEARTBEATS_PER_SECOND",
        default_value_t = mycluster_manager::ApiConfig::default().max_heartbeats_per_second
    )]
    pub max_heartbeats_per_second: u32,
    /// Events kept for `GET /api/v1/events` (`mycluster events`); a client further
    /// behind is told to read the state again.
    #[arg(
        long,
        env = "MYCLUSTER_EVENT_HISTORY",
        default_value_t = mycluster_manager::events::DEFAULT_HISTORY
    )]
    pub event_history: usize,
    /// A file holding the agents' join token [default: $MYCLUSTER_JOIN_TOKEN, else one
    /// generated into the data dir]. The API token comes from $MYCLUSTER_TOKEN or
    /// --token-file, else is generated into the data dir.
    #[arg(long, env = "MYCLUSTER_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// A file holding a read-only metrics token: it reads GET /metrics and nothing else
    /// (for Prometheus). The API token reads /metrics too.
    #[arg(long, env = "MYCLUSTER_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve the API without any token: anyone who reaches the port controls the
    /// cluster. For local experiments only.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// The most workers the cluster takes: a registration of a new name past it is
    /// refused (409) [default: no bound].
    #[arg(long, env = "MYCLUSTER_MAX_WORKERS")]
    pub max_workers: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// How the manager serves TLS (see README "TLS").
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// A name or address clients reach the manager by, for its certificate (repeatable;
    /// localhost, 127.0.0.1, ::1 and this host's name are always in it). Only `curl
    /// --cacert` checks names: agents and the CLI pin the cluster's CA instead.
    #[arg(
        long = "advertise-name",
        value_name = "NAME",
        env = "MYCLUSTER_ADVERTISE_NAMES",
        value_delimiter = ','
    )]
    pub advertise_names: Vec<String>,
    /// Where the cluster CA is kept, made there on first start [default: <data-dir>/tls].
    #[arg(long, env = "MYCLUSTER_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Also serve on this address, with plain HTTP allowed for anyone (and TLS): for a
    /// port only this host reaches — setup publishes it on the host's 127.0.0.1. Never
    /// an address other hosts reach.
    #[arg(long, env = "MYCLUSTER_LOCAL_LISTEN", value_name = "ADDR")]
    pub local_listen: Option<String>,
    /// Serve plain HTTP to everyone, no TLS: tokens cross the network in the clear. For
    /// experiments on a network you trust only.
    #[arg(long)]
    pub insecure_no_tls: bool,
}

impl TlsArgs {
    /// The manager's TLS settings (`None`: --insecure-no-tls).
    pub fn settings(&self, data_dir: &std::path::Path) -> Option<mycluster_manager::TlsSettings> {
        (!self.insecure_no_tls).then(|| mycluster_manager::TlsSettings {
            dir: self.tls_dir.clone().unwrap_or_else(|| data_dir.join("tls")),
            // The host's own name only if ASCII (rcgen refuses others, and the manager
            // would not start); names given by --advertise-name are checked as given.
            names: mycluster_agent::hostname()
                .filter(|n| n.is_ascii())
                .into_iter()
                .chain(self.advertise_names.iter().map(|n| n.trim().to_string()))
                .filter(|n| !n.is_empty())
                .collect(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// Containers on the Docker Engine (unix socket, or DOCKER_HOST).
    Docker,
    /// The service's command as a process tree, under a supervisor that ends the whole
    /// tree when the task stops or its agent dies.
    Process,
    /// In-memory containers that start at once: for scale tests only.
    Sim,
}

#[derive(Args, Clone, Debug)]
pub struct AgentArgs {
    /// This worker's name (unique in the cluster).
    #[arg(long, env = "MYCLUSTER_WORKER")]
    pub name: String,
    /// The container runtime to drive.
    #[arg(long, value_enum, env = "MYCLUSTER_DRIVER", default_value = "docker")]
    pub driver: Driver,
    /// The cluster's name [default: asked of the manager].
    #[arg(long, env = "MYCLUSTER_NAME")]
    pub cluster: Option<String>,
    /// Where the agent's port listens: its health (the monitor probes it), metrics, and
    /// its tasks' logs (the manager reads them over TLS).
    #[arg(long, env = "MYCLUSTER_AGENT_LISTEN", default_value = "0.0.0.0:7000")]
    pub listen: String,
    /// The host:port at which the monitor and the manager reach the agent's port
    /// [default: this host's name and the port].
    #[arg(long, env = "MYCLUSTER_ADVERTISE")]
    pub advertise: Option<String>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// The most tasks this worker takes.
    #[arg(long)]
    pub capacity: Option<u32>,
    #[command(flatten)]
    pub offers: crate::agent::CapacityArgs,
    #[command(flatten)]
    pub logs: crate::agent::LogArgs,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 1.0)]
    pub heartbeat: f64,
    /// Seconds to keep trying while the manager refuses this agent because another live
    /// agent runs under the same --name (a crashed or stopped predecessor frees the name
    /// once silent for 3 s); then the agent exits with the manager's message.
    #[arg(long, env = "MYCLUSTER_TAKEOVER_WAIT", default_value_t = 30.0)]
    pub takeover_wait: f64,
    /// Run workload containers in this container's PID namespace (docker driver), so they
    /// die with it.
    #[arg(long, env = "MYCLUSTER_PID_CONTAINER")]
    pub pid_container: Option<String>,
    /// Attach workload containers to this Docker network (docker driver).
    #[arg(long, env = "MYCLUSTER_NETWORK")]
    pub network: Option<String>,
    /// A file holding the join token [default: $MYCLUSTER_JOIN_TOKEN, else
    /// $MYCLUSTER_TOKEN].
    #[arg(long, env = "MYCLUSTER_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Talk to the manager over one cleartext HTTP/2 connection (instead of HTTP/1.1).
    #[arg(long, env = "MYCLUSTER_HTTP2")]
    pub http2: bool,
    /// Also keep this `setup` cluster's control plane (its manager, monitor, ingress and
    /// redis containers) on this host's Docker engine: one that dies without `docker
    /// stop` (e.g. `docker kill`) is started again. `setup` gives it to each worker.
    #[arg(long, value_name = "CLUSTER")]
    pub keep_cluster: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct MonitorArgs {
    /// Seconds between checks of the workers.
    #[arg(long, env = "MYCLUSTER_MONITOR_INTERVAL", default_value_t = 0.25)]
    pub interval: f64,
    /// Seconds of missed heartbeats after which a worker is probed (and, if its health
    /// endpoint does not answer, declared dead); at least two of the worker's heartbeat
    /// intervals in a cluster whose agents beat less often than every second.
    #[arg(long, env = "MYCLUSTER_DEAD_AFTER", default_value_t = 2.0)]
    pub dead_after: f64,
    /// Seconds the probe of a silent worker's health endpoint may take (for a worker
    /// asked to beat less often than every second: a quarter of its interval, up to 5).
    #[arg(long, env = "MYCLUSTER_PROBE_TIMEOUT", default_value_t = 0.5)]
    pub probe_timeout: f64,
}

#[derive(Args, Clone, Debug)]
pub struct DevArgs {
    /// How many workers.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// The workers' runtime [default: docker when the engine answers, else process].
    #[arg(long, value_enum)]
    pub driver: Option<Driver>,
    /// Address to serve the API on.
    #[arg(long, default_value = "0.0.0.0:5000")]
    pub listen: String,
    /// The cluster's name; workers are <name>_worker_1..N.
    #[arg(long, default_value = "myCluster")]
    pub name: String,
    /// Keep the state here [default: a temporary dir, removed at exit].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve the API without any token (for local experiments only).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// A file holding a read-only metrics token: it reads GET /metrics and nothing else
    /// (for Prometheus). The API token reads /metrics too.
    #[arg(long, env = "MYCLUSTER_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Do not serve the published ports on this host (no ingress in the process).
    #[arg(long)]
    pub no_ingress: bool,
    /// Events kept for `GET /api/v1/events` (`mycluster events`).
    #[arg(long, default_value_t = mycluster_manager::events::DEFAULT_HISTORY)]
    pub event_history: usize,
    /// The most workers the cluster takes: a registration of a new name past it is
    /// refused (409) [default: no bound].
    #[arg(long)]
    pub max_workers: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Args, Clone, Debug)]
#[command(
    after_help = "The manager comes from --manager (or $MYCLUSTER_MANAGER). The token is \
the cluster's join token ($MYCLUSTER_JOIN_TOKEN or --join-token-file, as an agent's), else \
the API token ($MYCLUSTER_TOKEN, --token-file, or the one saved for that manager)."
)]
pub struct IngressArgs {
    /// The address to bind each published port on.
    #[arg(
        long,
        env = "MYCLUSTER_INGRESS_LISTEN_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub listen_address: std::net::IpAddr,
    /// How long a replica has to accept a connection before the next one is tried
    /// (e.g. 250ms, 1s).
    #[arg(
        long,
        env = "MYCLUSTER_INGRESS_CONNECT_TIMEOUT",
        default_value = "250ms",
        value_parser = crate::ingress::duration
    )]
    pub connect_timeout: std::time::Duration,
    /// How long a replica that did not take a connection is tried only after the others
    /// (0: never).
    #[arg(
        long,
        env = "MYCLUSTER_INGRESS_COOLING",
        default_value = "3s",
        value_parser = crate::ingress::duration
    )]
    pub cooling: std::time::Duration,
    /// A file holding the join token [default: $MYCLUSTER_JOIN_TOKEN].
    #[arg(long, env = "MYCLUSTER_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
pub struct HelloArgs {
    /// Port to serve on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,
    /// Exit after this many seconds (for crash tests).
    #[arg(long)]
    pub exit_after: Option<f64>,
    /// The exit code when --exit-after ends it.
    #[arg(long, default_value_t = 0)]
    pub exit_code: i32,
    /// Expect a PROXY protocol v2 header at the start of each connection (a service with
    /// "proxy_protocol": true, behind the ingress), and answer with the client's address
    /// it gives in an `X-Client-Address` header.
    #[arg(long)]
    pub proxy_protocol: bool,
    /// Allocate and touch this much memory at start (e.g. 256M), then serve as usual:
    /// under a lower memory limit the kernel kills it (to show OOM handling).
    #[arg(long, value_name = "SIZE")]
    pub allocate: Option<String>,
    /// At start, add one to the counter in this file (0 when missing) and write it back,
    /// synced; `GET /state` answers the counter (to show a volume keeping a replica's
    /// data for its replacement).
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A file in the manager's data volume.
    Embedded,
    /// A Redis container, as in the original.
    Redis,
}

#[derive(Args, Clone, Debug)]
pub struct SetupArgs {
    /// The cluster's name: containers are <name>_manager_1, <name>_worker_1, ...
    #[arg(long, short = 'n', default_value = "myCluster")]
    pub name: String,
    /// How many workers.
    #[arg(long, short = 's', default_value_t = 3)]
    pub workers: u32,
    /// Where the manager keeps its state: a file in its volume, or a Redis container
    /// (<name>_redis_1) as in the original.
    #[arg(
        long,
        value_enum,
        env = "MYCLUSTER_SETUP_STORE",
        default_value = "embedded"
    )]
    pub store: StoreKind,
    /// With --store redis: the Redis image [default: built from this host's redis-server,
    /// since no registry may be reachable].
    #[arg(long)]
    pub redis_image: Option<String>,
    /// The host port for the API [default: the cluster's port if it was set up before,
    /// else 5000; 0 picks a free one]. The port is saved and kept across restarts.
    #[arg(long, env = "MYCLUSTER_PORT")]
    pub port: Option<u16>,
    /// The host port other hosts reach the API on, over TLS only, on every address of
    /// this host [default: the cluster's if it was set up before, else 5443; 0 picks a
    /// free one]. (--port is published on this host's 127.0.0.1 only.) Saved and kept.
    #[arg(long, env = "MYCLUSTER_TLS_PORT")]
    pub tls_port: Option<u16>,
    /// A file holding a read-only metrics token for the manager: it reads GET /metrics
    /// and nothing else (for Prometheus). Kept with the cluster's settings; set up again
    /// without it, the cluster keeps the one it has.
    #[arg(long, env = "MYCLUSTER_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ManageCommand {
    /// Start the cluster's containers (creating any that are missing).
    Up,
    /// Stop them; the state stays.
    Stop,
    /// Remove every container, network and volume of the cluster.
    Rm,
    /// List the cluster's containers.
    Ps,
}

#[derive(Args, Clone, Debug)]
pub struct ManageArgs {
    #[arg(long, short = 'c', value_enum)]
    pub command: ManageCommand,
    /// The cluster [default: the one set up last].
    #[arg(long, short = 'n')]
    pub name: Option<String>,
}

impl SetupArgs {
    /// What the setup crate is asked to do.
    /// What to set up; the metrics token read from its file (`Err`: why it cannot be).
    pub fn options(self) -> anyhow::Result<mycluster_setup::SetupOptions> {
        let metrics_token = match &self.metrics_token_file {
            Some(path) => {
                let text = mycluster_setup::secret::read_secret(path)?;
                let token =
                    mycluster_manager::api::auth::Token::parse(&text, &path.display().to_string())
                        .map_err(anyhow::Error::msg)?;
                Some(token.as_str().to_string())
            }
            None => None,
        };
        Ok(mycluster_setup::SetupOptions {
            name: self.name,
            workers: self.workers,
            store: match self.store {
                StoreKind::Embedded => mycluster_setup::StoreKind::Embedded,
                StoreKind::Redis => mycluster_setup::StoreKind::Redis,
            },
            redis_image: self.redis_image,
            port: self.port,
            tls_port: self.tls_port,
            rebalance: self.policy.rebalance,
            allow_bind: self.policy.allow_bind,
            lease: self.policy.lease,
            metrics_token,
        })
    }
}

impl ManageCommand {
    /// The same command, as the setup crate names it.
    pub fn to_setup(self) -> mycluster_setup::ManageCommand {
        match self {
            ManageCommand::Up => mycluster_setup::ManageCommand::Up,
            ManageCommand::Stop => mycluster_setup::ManageCommand::Stop,
            ManageCommand::Rm => mycluster_setup::ManageCommand::Rm,
            ManageCommand::Ps => mycluster_setup::ManageCommand::Ps,
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// A small version of every benchmark (under 3 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Only these parts: sched, events, footprint, api, sim, swarm, rollout, ingress (repeatable);
    /// liveness runs only when named.
    #[arg(long)]
    pub only: Vec<String>,
    /// Simulated workers for the sim part [default: 10000, --quick 50].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Replicas for the sim part [default: 1000000, --quick 5000].
    #[arg(long)]
    pub replicas: Option<usize>,
    #[command(subcommand)]
    pub part: Option<BenchPart>,
}

impl BenchArgs {
    /// What the bench crate is asked to measure.
    pub fn options(&self) -> mycluster_bench::BenchOptions {
        mycluster_bench::BenchOptions {
            quick: self.quick,
            only: self.only.clone(),
            workers: self.workers,
            replicas: self.replicas,
        }
    }
}

#[derive(Subcommand, Clone, Debug)]
pub enum BenchPart {
    /// (internal) Host sim agents for the sim benchmark until killed.
    #[command(hide = true)]
    Agents {
        #[arg(long)]
        from: usize,
        #[arg(long)]
        count: usize,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy a cluster's whole state from one store to another (stop its manager first).
    Copy(StoreCopyArgs),
    /// Write the running manager's state back into its store. For a store that lost the
    /// manager's history (emptied, evicted, restored from an older copy): the manager
    /// then refuses changes (503) until an operator either runs this, or restarts the
    /// manager to take the store as it is.
    Reseed,
}

#[derive(Args, Clone, Debug)]
pub struct StoreCopyArgs {
    /// The source: embedded:<data dir> or redis://host:port[/db].
    #[arg(long)]
    pub from: String,
    /// The target: embedded:<data dir> or redis://host:port[/db].
    #[arg(long)]
    pub to: String,
    /// The cluster's name.
    #[arg(long, default_value = "myCluster")]
    pub name: String,
    /// Overwrite a target that already holds this cluster.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build `mycluster/hello-world` (FROM scratch + this binary): "Hello World" on port 8000.
    Demo {
        /// Also name it this (e.g. crccheck/hello-world), if that name is not taken.
        #[arg(long = "as", value_name = "IMAGE")]
        aliases: Vec<String>,
        /// Build it even if it exists.
        #[arg(long)]
        rebuild: bool,
    },
}
