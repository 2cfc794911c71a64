//! The cluster at a glance, in the original's words: `GET /api/v1/state` (also the
//! answer to `POST /api/v1/service`) and `GET /api/v1/stats`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ServiceDoc;
use crate::{ClusterState, Counters, TaskState, WorkerStatus};

/// `GET /api/v1/state`, and the answer to `POST /api/v1/service`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct StateDoc {
    #[serde(rename = "cluster.name")]
    pub name: String,
    #[serde(rename = "cluster.numOfWorkers")]
    pub num_workers: usize,
    #[serde(rename = "cluster.workers")]
    pub workers: Vec<WorkerInstances>,
    #[serde(rename = "cluster.servicesDef")]
    pub services: Vec<ServiceDoc>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct WorkerInstances {
    pub worker: String,
    #[serde(rename = "serviceInstances")]
    pub instances: Vec<ServiceInstance>,
    /// Beyond the original: ready, down or draining.
    pub status: WorkerStatus,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct ServiceInstance {
    /// Null for a service that runs only a command.
    pub image: Option<String>,
    #[serde(rename = "numOfRunningContainers")]
    pub running: usize,
    /// Beyond the original: which service, since two may share an image.
    pub service: String,
}

impl StateDoc {
    pub fn new(name: &str, state: &ClusterState) -> StateDoc {
        let workers = state
            .workers
            .values()
            .map(|worker| {
                // Only what agents report running counts, as `docker ps` did in the original.
                let mut running: BTreeMap<&str, ServiceInstance> = BTreeMap::new();
                for task in state
                    .tasks_on_worker(&worker.name)
                    .filter(|t| t.state == TaskState::Running)
                {
                    running
                        .entry(task.service.as_str())
                        .or_insert_with(|| ServiceInstance {
                            image: task.image.clone(),
                            running: 0,
                            service: task.service.clone(),
                        })
                        .running += 1;
                }
                WorkerInstances {
                    worker: worker.name.clone(),
                    instances: running.into_values().collect(),
                    status: worker.status,
                }
            })
            .collect();
        StateDoc {
            name: name.to_string(),
            num_workers: state.workers.len(),
            workers,
            services: state.services.values().map(ServiceDoc::new).collect(),
        }
    }
}

/// `GET /api/v1/stats`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct StatsDoc {
    #[serde(rename = "cluster.upTime")]
    pub uptime: String,
    #[serde(rename = "services.totalOfRequests")]
    pub total_requests: u64,
    #[serde(rename = "services.totalOfContainers")]
    pub total_containers: u64,
    #[serde(rename = "workers.failures")]
    pub worker_failures: u64,
    #[serde(rename = "containers.relocated")]
    pub containers_relocated: u64,
}

impl StatsDoc {
    pub fn new(uptime: Duration, counters: &Counters) -> StatsDoc {
        StatsDoc {
            uptime: format_uptime(uptime),
            total_requests: counters.total_requests,
            total_containers: counters.total_containers,
            worker_failures: counters.worker_failures,
            containers_relocated: counters.containers_relocated,
        }
    }
}

/// `H:MM:SS.ffffff`, as Python's `str(timedelta)` printed it in the original (hours are
/// not folded into days).
pub fn format_uptime(uptime: Duration) -> String {
    let secs = uptime.as_secs();
    format!(
        "{}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        uptime.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::format_uptime;
    use std::time::Duration;

    #[test]
    fn uptime_reads_like_pythons_timedelta() {
        assert_eq!(
            format_uptime(Duration::from_micros(225_060_206)),
            "0:03:45.060206"
        );
        assert_eq!(format_uptime(Duration::ZERO), "0:00:00.000000");
        assert_eq!(
            format_uptime(Duration::from_secs(27 * 3600 + 1)),
            "27:00:01.000000"
        );
    }
}
