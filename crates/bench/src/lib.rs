//! `mycluster bench [--quick]`: measures the scheduler, the control plane at scale (sim
//! driver), the API under load, the footprint and convergence side by side with Docker
//! Swarm, on this machine, and prints each figure with what produced it. Every part is
//! bounded in time and stops by itself; it asserts nothing about speed.

mod api;
mod footprint;
mod manager;
mod sched;
mod sim;
mod swarm;

use std::time::Duration;

use crate::cli::BenchArgs;

/// One measured figure, printed as it comes.
pub struct Figure {
    pub name: String,
    pub value: String,
    pub detail: String,
}

pub fn report(name: &str, value: impl Into<String>, detail: impl Into<String>) -> Figure {
    let figure = Figure {
        name: name.to_string(),
        value: value.into(),
        detail: detail.into(),
    };
    println!(
        "{:<44} {:>22}   {}",
        figure.name, figure.value, figure.detail
    );
    figure
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(crate::cli::BenchPart::Agents { from, count }) = args.part {
        let manager =
            std::env::var("MYCLUSTER_MANAGER").unwrap_or_else(|_| "http://localhost:5000".into());
        return sim::host_agents(&manager, from, count).await;
    }
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
    println!("{} figures", figures.len());
    Ok(())
}

/// Today's date (UTC), for the record.
fn chrono_free_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    crate::output::unix_time(secs)
}
