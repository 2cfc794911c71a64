//! What MyCluster costs to run: the binary's size, and the resident memory of an idle
//! manager and of an idle agent.

use std::time::Duration;

use crate::error::BenchError;
use crate::figure::{report, Figure};
use crate::manager::{rss_mib, this_executable, ManagerProcess};

pub async fn run() -> Result<Vec<Figure>, BenchError> {
    let mut figures = Vec::new();
    let exe = this_executable()?;
    let size = std::fs::metadata(&exe)?.len() as f64 / (1024.0 * 1024.0);
    figures.push(report(
        "binary size",
        format!("{size:.1} MiB"),
        exe.display().to_string(),
    ));

    let manager = ManagerProcess::start(&[])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, _) = rss_mib(manager.pid());
    figures.push(report(
        "manager idle RSS",
        format!("{rss:.1} MiB"),
        "empty cluster, 2 s after start",
    ));

    let mut agent = manager.spawn_agent(&["--name", "bench-worker", "--driver", "sim"])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, _) = rss_mib(agent.id());
    let _ = agent.kill();
    let _ = agent.wait();
    figures.push(report(
        "agent idle RSS",
        format!("{rss:.1} MiB"),
        "sim driver, registered, 3 s after start",
    ));
    Ok(figures)
}

pub fn total_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
