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
#[derive(Args, Clone, Debug, Default)]
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
}

/// The manager's limits with these policies (the other limits at their defaults).
impl From<&PolicyArgs> for mycluster_core::Limits {
    fn from(policy: &PolicyArgs) -> mycluster_core::Limits {
        mycluster_core::Limits {
            allow_bind: policy.allow_bind.clone(),
            rebalance: policy.rebalance,
            ..mycluster_core::Limits::default()
        }
    }
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
