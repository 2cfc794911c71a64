//! MyCluster's benchmarks. `mycluster bench [--quick]` (the `run` function here)
//! measures the scheduler, what saying a commit's events costs, the control plane at scale (sim driver), the API under load,
//! the footprint, convergence and rolling updates side by side with Docker Swarm, requests
//! through the ingress against a replica and Swarm's routing mesh, on this machine, and
//! prints each figure with what produced it. Every part is bounded in time and stops by
//! itself; it asserts nothing about speed. `benches/failover.rs` (`cargo bench -p
//! mycluster-bench --bench failover`) times failover with real processes (its partition is
//! `mycluster-relay`: a TCP relay that can be cut).
//!
//! `liveness` (a killed container until its slot runs again, on a `setup` cluster and on
//! Swarm) runs only when asked for by name (`--only liveness`): it sets up a cluster of
//! containers and takes about five minutes.
//!
//! Start reading at `run`, then one part per module: `sched`, `events`, `footprint`, `api`, `sim`,
//! `swarm`, `rollout`, `ingress` (with `wrk`, which runs the load), `liveness`; `figure` prints what they measure, and `manager` starts the manager (and
//! agent) processes they measure. The parts run inside the `mycluster` binary: they start
//! managers, agents and agent hosts as `mycluster` subcommands of the running executable.

mod api;
mod error;
mod events;
mod figure;
mod footprint;
mod ingress;
mod liveness;
mod manager;
mod rollout;
mod sched;
mod sim;
mod swarm;
mod wrk;

use std::time::Duration;

pub use error::BenchError;
pub use sim::host_agents;

/// What `mycluster bench` was asked to measure.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// A small version of every benchmark (under 3 minutes).
    pub quick: bool,
    /// Only these parts: sched, footprint, api, sim, swarm, rollout, ingress (none: all
    /// of these), and liveness (only when named).
    pub only: Vec<String>,
    /// Simulated workers for the sim part [default: 10000, quick 50].
    pub workers: Option<usize>,
    /// Replicas for the sim part [default: 1000000, quick 5000].
    pub replicas: Option<usize>,
}

/// Runs the parts asked for, printing each figure as it comes.
pub async fn run(args: &BenchOptions) -> Result<(), BenchError> {
    let quick = args.quick;
    let only = |part: &str| args.only.is_empty() || args.only.iter().any(|o| o == part);
    println!(
        "mycluster bench{} on {} cores, {} MiB: {}",
        if quick { " --quick" } else { "" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        footprint::total_memory_mib(),
        chrono_free_date()
    );
    let mut figures = Vec::new();
    if only("sched") {
        figures.extend(sched::run(quick));
    }
    if only("events") {
        figures.extend(events::run(quick));
    }
    if only("footprint") {
        figures.extend(footprint::run().await?);
    }
    if only("api") {
        figures.extend(api::run(quick).await?);
    }
    if only("sim") {
        figures.extend(sim::run(quick, args.workers, args.replicas).await?);
    }
    if only("swarm") {
        figures.extend(swarm::run(quick).await);
    }
    if only("rollout") {
        figures.extend(rollout::run(quick).await);
    }
    if only("ingress") {
        figures.extend(ingress::run(quick).await);
    }
    if args.only.iter().any(|o| o == "liveness") {
        figures.extend(liveness::run(quick).await);
    }
    println!("{} figures", figures.len());
    Ok(())
}

/// Today's date (UTC), for the record.
fn chrono_free_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    mycluster_core::time::unix_time(secs)
}
