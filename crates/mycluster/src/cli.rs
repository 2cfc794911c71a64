//! The command line: every subcommand and flag, with the environment variables that can
//! set them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// The manager's API address.
    #[arg(
        long,
        global = true,
        env = "MYCLUSTER_MANAGER",
        default_value = "http://localhost:5000"
    )]
    pub manager: String,
    /// Print the raw JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the manager: the REST API, the state store and the scheduler.
    Manager(ManagerArgs),
    /// Create, inspect, scale and remove services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Show the cluster state: workers and what runs on them, and the services.
    State,
    /// Show the cluster statistics.
    Stats,
    /// List the workers.
    Workers,
    /// List tasks (replicas) with their desired and observed state.
    Tasks {
        /// Only the tasks of this service.
        #[arg(long)]
        service: Option<String>,
    },
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
    /// The state store: `embedded` (a file in the data dir).
    #[arg(long, env = "MYCLUSTER_STORE", default_value = "embedded")]
    pub store: String,
    /// The most replicas a service may ask for.
    #[arg(long, env = "MYCLUSTER_MAX_REPLICAS", default_value_t = 1000)]
    pub max_replicas: u32,
    /// The largest request body accepted, in bytes.
    #[arg(long, env = "MYCLUSTER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Create a service (or update the one with that name). Give an image (docker
    /// workers), a command after `--` (process workers), or both.
    Create {
        name: String,
        #[arg(long)]
        image: Option<String>,
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// An environment variable NAME=VALUE (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// The command to run, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// List the services.
    Ls,
    /// Show one service.
    Get { name: String },
    /// Change a service's number of replicas.
    Scale { name: String, replicas: u32 },
    /// Change a service's image (its tasks are replaced).
    Update {
        name: String,
        #[arg(long)]
        image: String,
    },
    /// Remove a service and stop its containers.
    Rm { name: String },
}
