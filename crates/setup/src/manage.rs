//! `mycluster manage`: start, stop, list or remove the containers of a cluster set up on
//! this host. `stop` is a `docker stop` of each: the restart policy `unless-stopped` and
//! the keepers (see `keeper`) leave a stopped container stopped, so the cluster stays
//! down, across engine restarts too, until `up`.

use std::time::Duration;

use crate::error::SetupError;
use crate::host::ClusterHost;
use crate::ps::print_ps;
use crate::settings::{current, forget, load_settings};
use crate::setup::validate_name;
use crate::up::bring_up;

/// How many times `rm` lists and removes the cluster's containers before it leaves the
/// rest to the network and volume removal (which then says what is still in use).
const RM_ROUNDS: usize = 5;

/// What `manage` does to a cluster's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Does `command` to cluster `name` (default: the one set up last), saying what it did
/// on stdout.
pub async fn manage(command: ManageCommand, name: Option<String>) -> Result<(), SetupError> {
    let name = match name {
        Some(name) => name,
        None => current()
            .map(|s| s.name)
            .ok_or(SetupError::NothingToManage)?,
    };
    validate_name(&name)?;
    let host = ClusterHost::connect().await?;
    let containers = host.containers(&name).await?;
    match command {
        ManageCommand::Ps => {
            if containers.is_empty() {
                println!("Cluster '{name}' has no containers");
            } else {
                print_ps(&containers);
            }
        }
        ManageCommand::Stop => {
            // The ingress first, so no connection is sent to a replica being stopped; the
            // monitor next, so it does not relocate work from workers being stopped; the
            // manager last, so agents can report until the end.
            let order = [
                "ingress", "monitor", "worker", "workload", "manager", "redis",
            ];
            for role in order {
                for c in containers
                    .iter()
                    .filter(|c| c.role == role && c.state == "running")
                {
                    host.stop(&c.name, Duration::from_secs(5)).await?;
                    println!("Stopped {}", c.name);
                }
            }
            println!("Cluster '{name}' stopped; `mycluster manage --command up` starts it again");
        }
        ManageCommand::Up => {
            let settings =
                load_settings(&name).ok_or_else(|| SetupError::NotSetUp(name.clone()))?;
            bring_up(settings).await?;
        }
        ManageCommand::Rm => {
            // A worker still running while the others go may start a container after the
            // list was read: list again until nothing of the cluster is left.
            let mut containers = containers;
            for _ in 0..RM_ROUNDS {
                if containers.is_empty() {
                    break;
                }
                for c in &containers {
                    host.remove(&c.name).await?;
                    println!("Removed {}", c.name);
                }
                containers = host.containers(&name).await?;
            }
            for what in host.remove_networks_and_volumes(&name).await? {
                println!("Removed {what}");
            }
            forget(&name);
            println!("Cluster '{name}' removed");
        }
    }
    Ok(())
}
