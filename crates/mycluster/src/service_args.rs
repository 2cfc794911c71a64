//! The flags of `mycluster service ...`: what to run, the health check and update policy
//! (named as `docker service create` names them, so operators recognise them), where it
//! runs and what it needs (`placement_flags`), and how long to follow a change.

use clap::{Args, Subcommand};

pub use crate::placement_flags::PlacementArgs;

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Create a service (or update the one with that name). Give an image (docker
    /// workers), a command after `--` (process workers), or both. Waits until its
    /// replicas run (or, for an existing service, until the change is rolled out), and
    /// fails (exit 1, with why) if they cannot.
    Create {
        name: String,
        /// The image to run (docker workers).
        #[arg(long)]
        image: Option<String>,
        /// How many replicas.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// An environment variable NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        #[command(flatten)]
        health: HealthArgs,
        #[command(flatten)]
        update: UpdateArgs,
        #[command(flatten)]
        ports: PortArgs,
        #[command(flatten)]
        placement: PlacementArgs,
        #[command(flatten)]
        wait: WaitArgs,
        /// The command to run, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// List the services.
    Ls,
    /// Show one service.
    Get { name: String },
    /// Change a service's number of replicas; waits until they run.
    Scale {
        name: String,
        replicas: u32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Change a service's image, command, env, health check, update policy or ports. A
    /// new image, command, env, health check, target port or stop grace period is rolled
    /// out (see --update-*); waits until the rollout completes, and fails (exit 1, with
    /// why) if it is rolled back or paused.
    Update {
        name: String,
        /// The new image.
        #[arg(long)]
        image: Option<String>,
        /// The new environment, NAME=VALUE (repeatable; given, it replaces the whole
        /// environment).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        #[command(flatten)]
        health: HealthArgs,
        #[command(flatten)]
        update: UpdateArgs,
        #[command(flatten)]
        ports: PortArgs,
        /// Remove one port, keeping the others: the port published on PORT, or a
        /// discovery-only port whose target is PORT (repeatable).
        #[arg(long, value_name = "PORT", conflicts_with_all = ["publish", "no_publish"])]
        publish_rm: Vec<u16>,
        /// Remove every port of the service (`"ports": []`).
        #[arg(long, conflicts_with = "publish")]
        no_publish: bool,
        #[command(flatten)]
        placement: PlacementArgs,
        /// Remove one of the service's constraints (repeatable), e.g.
        /// --constraint-rm "node.labels.disk==ssd".
        #[arg(long, value_name = "EXPR")]
        constraint_rm: Vec<String>,
        /// Remove the volume mounted at TARGET (repeatable); the volume itself is kept.
        #[arg(long, value_name = "TARGET")]
        volume_rm: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
        /// The new command, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Roll the service's previous version out again (as a new version).
    Rollback {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace every task of the service with a new one of the same spec, as a rollout
    /// (with start-first, no replica is down meanwhile).
    Restart {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List the kept versions of the service's spec (the last 10), newest first.
    Versions { name: String },
    /// Show where the service's latest rollout stands.
    Rollout { name: String },
    /// List the replicas that serve a service's ports now (running and healthy: a health
    /// check passed or, without one, running for the update's monitor): where each is
    /// reached, as the ingress sees them (`GET /api/v1/service/<name>/endpoints`).
    Endpoints { name: String },
    /// List a service's tasks (replicas): where each runs, its state, and why. A task of
    /// a batch service that finished shows `complete (done)`.
    Ps { name: String },
    /// Even out the spread of a service's replicas (or of every service) over the
    /// workers that can run them: one replica at a time, start-first (its replacement
    /// healthy before it stops), never fewer than `replicas` healthy. Prints each move.
    Rebalance {
        /// The service [default: every service].
        name: Option<String>,
        /// Print the moves that would be made now, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove a service and stop its containers. Its volumes are kept (and listed)
    /// unless --volumes.
    Rm {
        name: String,
        /// Remove its volumes too (their data is lost).
        #[arg(long)]
        volumes: bool,
    },
}

#[derive(Args, Clone, Copy, Debug)]
pub struct WaitArgs {
    /// Seconds to wait for every replica to run, or for the change's rollout to complete;
    /// past it, or as soon as a replica cannot make progress or the rollout is rolled
    /// back or paused, the command exits 1 saying why. 0: do not wait.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub wait: f64,
    /// --detach (or --detach=true): return once the change is saved, without waiting.
    /// --detach=false: wait, and show the rollout's progress (redrawn in place on a
    /// terminal, a line per change otherwise). Default: false, showing the progress when
    /// stdout is a terminal; elsewhere it waits without showing it.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub detach: Option<bool>,
}

/// `--health-*`: the tasks' health check. One probe; the timing flags alone change the
/// timing of the check the service has.
#[derive(Args, Clone, Debug, Default)]
pub struct HealthArgs {
    /// Probe with an HTTP GET of PATH (default /) on the task's PORT: any 2xx or 3xx
    /// answer passes. E.g. --health-http 8000/healthz.
    #[arg(long, value_name = "PORT[/PATH]", conflicts_with_all = ["health_tcp", "health_cmd"])]
    pub health_http: Option<String>,
    /// Probe by opening a TCP connection to the task's PORT.
    #[arg(long, value_name = "PORT", conflicts_with = "health_cmd")]
    pub health_tcp: Option<u16>,
    /// Probe by running a command inside the task (split on spaces into its arguments;
    /// no shell): exit 0 passes. E.g. --health-cmd "pg_isready -q".
    #[arg(long, value_name = "CMD ARGS")]
    pub health_cmd: Option<String>,
    /// Time between probes, e.g. 5s, 500ms [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// A probe that takes longer fails [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Failures in a row that make a task unhealthy (it is then replaced) [default: 3].
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Failures in this time after a task starts do not count [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub health_start_period: Option<String>,
}

/// `--update-*`: how a change of what the tasks run is rolled out. Flags not given keep
/// the service's policy (the defaults for a new service).
#[derive(Args, Clone, Debug, Default)]
pub struct UpdateArgs {
    /// Slots replaced at once; 0: all at once [default: 1].
    #[arg(long, value_name = "N")]
    pub update_parallelism: Option<u32>,
    /// Wait after a slot's new task is healthy before the next slot starts [default: 0s].
    #[arg(long, value_name = "DURATION")]
    pub update_delay: Option<String>,
    /// start-first: a slot's new task must be healthy before its old one stops (never
    /// fewer healthy replicas than wanted); stop-first: the old one stops first (never
    /// more tasks than replicas) [default: start-first].
    #[arg(long, value_enum, value_name = "ORDER")]
    pub update_order: Option<Order>,
    /// How long a new task without a health check must run to count as healthy, and how
    /// long one with a check has (after its start period) to become healthy [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub update_monitor: Option<String>,
    /// What a failed rollout does: roll the previous version back out, pause until the
    /// next update, or continue [default: rollback].
    #[arg(long, value_enum, value_name = "ACTION")]
    pub update_failure_action: Option<OnFailure>,
    /// The share of the replicas (0 to 1) whose new tasks may fail before the failure
    /// action applies [default: 0: the first failure].
    #[arg(long, value_name = "RATIO")]
    pub update_max_failure_ratio: Option<f64>,
}

/// `--publish`, `--stop-grace-period`, `--proxy-protocol`: the spec's `ports`,
/// `stop_grace_period` and `proxy_protocol`, one flag per field. Flags not given keep
/// the service's values (a new service gets the defaults).
#[derive(Args, Clone, Debug, Default)]
pub struct PortArgs {
    /// A port of the service's tasks (repeatable): PUBLISHED:TARGET publishes TARGET on
    /// the cluster's ingress at PUBLISHED (e.g. 8080:8000, then `curl localhost:8080` on
    /// a `setup` host reaches a healthy replica); TARGET alone names it for discovery
    /// only. `/tcp` may follow. On `service update` the ports given replace the
    /// service's whole list (`ports` in the API).
    #[arg(
        long,
        value_name = "PUBLISHED:TARGET",
        value_parser = mycluster_core::service::PortSpec::parse_flag
    )]
    pub publish: Vec<mycluster_core::service::PortSpec>,
    /// How long a stopping task has, once it is out of the ingress and signalled, to
    /// finish open connections and exit before it is killed, e.g. 30s
    /// (`stop_grace_period`) [default: 10s].
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = mycluster_core::span::Span::parse
    )]
    pub stop_grace_period: Option<mycluster_core::span::Span>,
    /// --proxy-protocol (or =true): the ingress starts each connection to a replica with
    /// a PROXY protocol v2 header carrying the client's address; the service must expect
    /// it (`proxy_protocol`) [default: false].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub proxy_protocol: Option<bool>,
}

impl PortArgs {
    /// Whether any of these flags was given.
    pub fn any(&self) -> bool {
        !self.publish.is_empty()
            || self.stop_grace_period.is_some()
            || self.proxy_protocol.is_some()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// The new task starts, and is healthy, before the old one stops.
    StartFirst,
    /// The old task stops before the new one starts.
    StopFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    /// Roll the previous version out again.
    Rollback,
    /// Replace nothing more until the next update.
    Pause,
    /// Carry on regardless.
    Continue,
}

impl HealthArgs {
    /// Whether any --health-* flag was given.
    pub fn any(&self) -> bool {
        self.health_http.is_some()
            || self.health_tcp.is_some()
            || self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
    }
}

impl UpdateArgs {
    /// Whether any --update-* flag was given.
    pub fn any(&self) -> bool {
        self.update_parallelism.is_some()
            || self.update_delay.is_some()
            || self.update_order.is_some()
            || self.update_monitor.is_some()
            || self.update_failure_action.is_some()
            || self.update_max_failure_ratio.is_some()
    }
}
