//! The monitor: decides that a worker is dead — it missed heartbeats for `dead_after`
//! (as the manager recorded them) *and* its agent's health endpoint does not answer — and
//! tells the manager, which marks it down and relocates its tasks. One slow heartbeat is
//! therefore not a death. Every decision is one log line, in the original's words.

use std::collections::BTreeMap;
use std::time::Duration;

use mycluster_client::Client;
use mycluster_core::docs::WorkerDoc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub manager: String,
    /// The cluster's API token (declaring a worker down is an operator's act).
    pub token: Option<String>,
    /// How often the workers are checked.
    pub interval: Duration,
    /// Silence after which a worker is suspected (and probed).
    pub dead_after: Duration,
    /// How long the probe of a suspect's health endpoint may take.
    pub probe_timeout: Duration,
}

impl MonitorConfig {
    /// Defaults that find a dead worker within about 3 s of its last heartbeat, with
    /// heartbeats every second: 2 s of silence, a 500 ms probe, checks every 250 ms.
    pub fn new(manager: &str) -> MonitorConfig {
        MonitorConfig {
            manager: manager.to_string(),
            token: None,
            interval: Duration::from_millis(250),
            dead_after: Duration::from_secs(2),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

/// The ready workers silent for longer than `dead_after`: the ones to probe.
pub fn suspects(workers: &[WorkerDoc], dead_after: Duration) -> Vec<&WorkerDoc> {
    workers
        .iter()
        .filter(|w| w.status == "ready")
        .filter(|w| {
            w.last_heartbeat_age
                .is_some_and(|age| age > dead_after.as_secs_f64())
        })
        .collect()
}

/// Runs until `stop` is cancelled.
pub async fn run(
    config: MonitorConfig,
    stop: CancellationToken,
) -> Result<(), mycluster_client::ClientError> {
    let client =
        Client::new(&config.manager, Duration::from_secs(10))?.with_token(config.token.clone());
    let probe = reqwest::Client::builder()
        .timeout(config.probe_timeout)
        .build()
        .map_err(|e| mycluster_client::ClientError::BadUrl(e.to_string()))?;
    tracing::info!("Starting monitor agent");
    let mut last_status: BTreeMap<String, String> = BTreeMap::new();
    let mut answering: BTreeMap<String, bool> = BTreeMap::new();
    let mut manager_down = false;
    loop {
        match client.workers().await {
            Ok(workers) => {
                if manager_down {
                    tracing::info!("The manager at {} answers again", config.manager);
                    manager_down = false;
                }
                note_changes(&workers, &mut last_status);
                for worker in suspects(&workers, config.dead_after) {
                    let alive = probe_health(&probe, &worker.address).await;
                    if alive {
                        // Heartbeats are not arriving, but the agent answers: a network
                        // problem between it and the manager, not a dead worker. Say it once.
                        if !answering
                            .insert(worker.worker.clone(), true)
                            .unwrap_or(false)
                        {
                            tracing::warn!(
                                "Worker {} missed heartbeats for {:.1}s but answers its health probe: not relocating",
                                worker.worker,
                                worker.last_heartbeat_age.unwrap_or_default()
                            );
                        }
                        continue;
                    }
                    answering.remove(&worker.worker);
                    match client.declare_down(&worker.worker, config.dead_after).await {
                        Ok(answer) => {
                            tracing::error!(
                                "Worker {} was not found... relocating its services",
                                worker.worker
                            );
                            log_relocations(&worker.worker, &answer);
                            last_status.insert(worker.worker.clone(), "down".into());
                        }
                        // It beat again meanwhile: alive after all.
                        Err(e) if e.status() == Some(409) => tracing::info!("{e}"),
                        Err(e) => tracing::error!(
                            "Could not relocate the services of {}: {e}",
                            worker.worker
                        ),
                    }
                }
            }
            Err(e) => {
                if !manager_down {
                    tracing::error!("Cannot reach the manager: {e}");
                    manager_down = true;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
    tracing::info!("Stopping monitor agent");
    Ok(())
}

async fn probe_health(probe: &reqwest::Client, address: &str) -> bool {
    let url = format!("http://{address}/healthz");
    matches!(probe.get(&url).send().await, Ok(response) if response.status().is_success())
}

/// Logs workers that came back, joined, or went down by another hand.
fn note_changes(workers: &[WorkerDoc], last: &mut BTreeMap<String, String>) {
    for worker in workers {
        let before = last.insert(worker.worker.clone(), worker.status.clone());
        match (before.as_deref(), worker.status.as_str()) {
            (Some("down"), "ready") => tracing::info!("Worker {} is back and ready", worker.worker),
            (None, _) => tracing::info!("Watching worker {} ({})", worker.worker, worker.status),
            _ => {}
        }
    }
}

/// One line per replacement, naming its service and where it went.
fn log_relocations(worker: &str, answer: &Value) {
    let relocated = answer["relocated"].as_array().cloned().unwrap_or_default();
    tracing::info!("Relocating services from worker {worker}");
    let mut placed = 0;
    for task in &relocated {
        let service = task["service"].as_str().unwrap_or("?");
        let what = task["image"].as_str().unwrap_or(service);
        match task["worker"].as_str() {
            Some(to) => {
                placed += 1;
                tracing::info!(
                    "New {what} container of service {service} will be deployed to {to}"
                );
            }
            None => tracing::error!(
                "No healthy worker left for service {service}: its container stays pending ({})",
                task["message"].as_str().unwrap_or("no worker can take it")
            ),
        }
    }
    tracing::info!(
        "Total of {placed} containers relocated from {worker}{}",
        if placed < relocated.len() {
            format!(", {} waiting for a worker", relocated.len() - placed)
        } else {
            String::new()
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str, status: &str, age: Option<f64>) -> WorkerDoc {
        WorkerDoc {
            worker: name.into(),
            address: "127.0.0.1:1".into(),
            status: status.into(),
            labels: Default::default(),
            capacity: None,
            driver: "process".into(),
            tasks: 0,
            running: 0,
            last_heartbeat_age: age,
            registered_at: 0.0,
        }
    }

    #[test]
    fn only_silent_ready_workers_are_suspects() {
        let workers = [
            worker("fresh", "ready", Some(0.4)),
            worker("silent", "ready", Some(2.5)),
            worker("already-down", "down", Some(30.0)),
            worker("draining", "draining", Some(30.0)),
            worker("unknown", "ready", None),
        ];
        let names: Vec<&str> = suspects(&workers, Duration::from_secs(2))
            .into_iter()
            .map(|w| w.worker.as_str())
            .collect();
        assert_eq!(names, ["silent"]);
    }
}
