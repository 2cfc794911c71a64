//! What an agent measures of its worker, served by `GET /metrics` on its health port in
//! the Prometheus text format: its containers by state (as of its last sync pass), how
//! long its starts take, its health checks' results, and its lease's age.
//!
//! One registry per agent, never a global recorder: `mycluster dev` and the tests run
//! several agents in one process.

use std::time::Duration;

use mycluster_core::wire::Driver;
use mycluster_runtime::{Container, ContainerState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what `render` writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The container states, as labels.
const STATES: [&str; 3] = ["created", "running", "exited"];

pub struct AgentMetrics {
    registry: Registry,
    containers: Family<StateLabel, Gauge>,
    start_seconds: Histogram,
    health_checks: Family<ResultLabel, Counter>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics(…)")
    }
}

impl AgentMetrics {
    pub fn new(worker: &str, driver: Driver) -> AgentMetrics {
        let mut registry = Registry::with_prefix("mycluster_agent");
        let containers = Family::<StateLabel, Gauge>::default();
        // Zeros included, from the start: a scrape before the first pass lists them.
        for state in STATES {
            drop(containers.get_or_create(&StateLabel { state }));
        }
        // A process starts in milliseconds; an image pull may take minutes.
        let start_seconds = Histogram::new([
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        ]);
        let health_checks = Family::<ResultLabel, Counter>::default();
        for result in ["ok", "failed"] {
            drop(health_checks.get_or_create(&ResultLabel { result }));
        }
        registry.register(
            "containers",
            "This worker's containers (or processes) by state, as of the agent's last sync pass",
            containers.clone(),
        );
        registry.register(
            "container_start_seconds",
            "From the agent's start call to its container running (successful starts)",
            start_seconds.clone(),
        );
        registry.register(
            "health_checks",
            "Health check probes run, by result",
            health_checks.clone(),
        );
        registry.register(
            "build",
            "The agent's version, worker and driver",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("worker", worker.to_string()),
                ("driver", driver.to_string()),
            ]),
        );
        AgentMetrics {
            registry,
            containers,
            start_seconds,
            health_checks,
        }
    }

    /// The containers a sync pass found.
    pub fn containers_seen(&self, containers: &[Container]) {
        let mut counts = [0i64; 3];
        for container in containers {
            let slot = match container.state {
                ContainerState::Created => 0,
                ContainerState::Running => 1,
                ContainerState::Exited { .. } => 2,
            };
            counts[slot] += 1;
        }
        for (state, n) in STATES.into_iter().zip(counts) {
            self.containers.get_or_create(&StateLabel { state }).set(n);
        }
    }

    /// A container was started (and runs) in `took`.
    pub fn observe_start(&self, took: Duration) {
        self.start_seconds.observe(took.as_secs_f64());
    }

    /// A health check probe passed (`ok`) or failed.
    pub fn health_check(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.health_checks
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The whole exposition; `lease` is the lease's age and length, once it was renewed.
    pub fn render(&self, lease: Option<(Duration, Duration)>) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        let mut now = Registry::with_prefix("mycluster_agent");
        now.register_collector(Box::new(Lease(lease)));
        prometheus_text::encode(&mut text, &now)?;
        Ok(text)
    }
}

/// The lease as of the scrape (nothing before the first renewal).
#[derive(Debug)]
struct Lease(Option<(Duration, Duration)>);

impl Collector for Lease {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((age, length)) = self.0 else {
            return Ok(());
        };
        let metric = encoder.encode_descriptor(
            "lease_age_seconds",
            "Seconds since the manager last renewed this worker's lease (a heartbeat it acknowledged)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(age.as_secs_f64()).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "lease_seconds",
            "The lease's length: past it without a renewal, the worker's `stop` tasks are stopped",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(length.as_secs_f64()).encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, state: ContainerState) -> Container {
        Container {
            task_id: id.into(),
            id: id.into(),
            name: id.into(),
            state,
        }
    }

    #[test]
    fn the_text_names_every_metric_with_its_labels() {
        let metrics = AgentMetrics::new("w1", Driver::Process);
        metrics.containers_seen(&[
            container("a", ContainerState::Running),
            container("b", ContainerState::Running),
            container(
                "c",
                ContainerState::Exited {
                    code: 1,
                    error: None,
                },
            ),
        ]);
        metrics.observe_start(Duration::from_millis(30));
        metrics.health_check(true);
        metrics.health_check(true);
        metrics.health_check(false);
        let text = metrics
            .render(Some((Duration::from_millis(500), Duration::from_secs(5))))
            .unwrap();
        let want = [
            "mycluster_agent_containers{state=\"created\"} 0",
            "mycluster_agent_containers{state=\"running\"} 2",
            "mycluster_agent_containers{state=\"exited\"} 1",
            "# TYPE mycluster_agent_container_start_seconds histogram",
            "mycluster_agent_container_start_seconds_count 1",
            "mycluster_agent_health_checks_total{result=\"ok\"} 2",
            "mycluster_agent_health_checks_total{result=\"failed\"} 1",
            "mycluster_agent_lease_age_seconds 0.5",
            "mycluster_agent_lease_seconds 5",
            "mycluster_agent_build_info{version=\"",
        ];
        for line in want {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "no line starting {line:?} in:\n{text}"
            );
        }
        assert!(text.contains("worker=\"w1\"") && text.contains("driver=\"process\""));
        let before_renewal = metrics.render(None).unwrap();
        assert!(!before_renewal.contains("lease_age"), "{before_renewal}");
    }
}
