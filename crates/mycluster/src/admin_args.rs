//! The flags of the operator's commands for workers and volumes (`mycluster worker ...`,
//! `mycluster volume ...`), and the cluster policies (`--rebalance`, `--allow-bind`)
//! that `manager`, `setup` and `dev` take alike.

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum WorkerCommand {
    /// List a worker's containers (what `docker -H <worker> ps` showed in the original).
    Ps { worker: String },
    /// Empty a worker for maintenance: it takes no new task, and its tasks move
    /// elsewhere one slot at a time, each replacement healthy before the old task stops
    /// (never below `replicas`). It stays drained until `worker activate`.
    Drain { worker: String },
    /// Let a drained worker take tasks again (`service rebalance` moves some back).
    Activate { worker: String },
    /// Forget a worker that is down, or drained and empty.
    Rm { worker: String },
    /// Set (KEY=VALUE) or remove (KEY-) a worker's labels, over the ones its agent
    /// registers with; they outlive its agent's restarts. E.g. `worker label w1 disk=ssd
    /// zone-`.
    Label {
        worker: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        changes: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// List the volumes made for services' slots (`<service>-<source>-<slot>`).
    Ls,
    /// Remove volumes (their data is lost): the agents of their host remove each once no
    /// task uses it. A volume a service still mounts is refused.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// The cluster's policies that `manager`, `setup` and `dev` take alike.
#[derive(Args, Clone, Debug)]
pub struct PolicyArgs {
    /// Even out every service's spread on its own when a worker joins or comes back:
    /// one replica of a service at a time, start-first (as `mycluster service
    /// rebalance`). Off by default.
    #[arg(long, env = "MYCLUSTER_REBALANCE")]
    pub rebalance: bool,
    /// A host directory under which services may bind-mount paths (`--volume
    /// /dir/x:/x`); repeatable. Without it, bind mounts are refused.
    #[arg(long = "allow-bind", value_name = "PATH", value_parser = absolute_dir)]
    pub allow_bind: Vec<String>,
    /// How long a worker cut off from the manager keeps its `on_disconnect: "stop"`
    /// tasks: its agent stops them once its heartbeats have gone unanswered this long,
    /// and the manager replaces them only after the lease, their stop grace period and
    /// 1 s more (2s to 1h).
    #[arg(long, env = "MYCLUSTER_LEASE", value_name = "DURATION", default_value = "5s", value_parser = lease)]
    pub lease: std::time::Duration,
}

impl Default for PolicyArgs {
    fn default() -> Self {
        PolicyArgs {
            rebalance: false,
            allow_bind: Vec::new(),
            lease: mycluster_core::lease::DEFAULT_LEASE,
        }
    }
}

/// The manager's limits with these policies (the other limits at their defaults).
impl From<&PolicyArgs> for mycluster_core::Limits {
    fn from(policy: &PolicyArgs) -> mycluster_core::Limits {
        mycluster_core::Limits {
            allow_bind: policy.allow_bind.clone(),
            rebalance: policy.rebalance,
            lease: policy.lease,
            ..mycluster_core::Limits::default()
        }
    }
}

/// A lease (`--lease`): a duration from `lease::MIN_LEASE` to `lease::MAX_LEASE`.
fn lease(text: &str) -> Result<std::time::Duration, String> {
    use mycluster_core::lease::{MAX_LEASE, MIN_LEASE};
    let span = mycluster_core::span::Span::parse(text)?;
    let lease = std::time::Duration::from_millis(span.millis());
    if lease < MIN_LEASE || lease > MAX_LEASE {
        return Err(format!(
            "must be from {} to {}, got {text}",
            mycluster_core::span::Span(MIN_LEASE.as_millis() as u64),
            mycluster_core::span::Span(MAX_LEASE.as_millis() as u64)
        ));
    }
    Ok(lease)
}

/// An absolute directory without `.`/`..` parts (`--allow-bind`).
fn absolute_dir(text: &str) -> Result<String, String> {
    let ok = text.starts_with('/')
        && !text.contains(['\0', ':'])
        && text.split('/').all(|p| p != "." && p != "..");
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "'{}' must be an absolute path without '.', '..' or ':'",
            text.escape_debug()
        ))
    }
}
