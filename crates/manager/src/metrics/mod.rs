//! What the manager measures of itself, served by `GET /metrics` in the Prometheus text
//! format (names prefixed `mycluster_`).
//!
//! Two kinds of figures. What happens over time (API requests and their latency, store
//! commits and their batch sizes, how long tasks take to start) is recorded as it
//! happens into this manager's own `Registry`: one per `Cluster`, never a global
//! recorder, since tests run several managers in one process. What the state *is*
//! (workers by status, tasks by state, replicas per service, the stats counters) is read
//! off the snapshot at scrape time (`figures`), so it always equals what the API says.

pub mod figures;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use mycluster_core::{Change, ClusterState, TaskState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use figures::{Figures, WORKER_STATUSES};

/// The `Content-Type` of what `render` writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every metric's name starts with this (and `_`).
pub const PREFIX: &str = "mycluster";

/// The label of requests that matched no route: never the raw path, which may hold
/// anything a client sent (one series per typo would grow without end).
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The manager's recorded metrics and the registry that writes them.
pub struct Metrics {
    registry: Registry,
    commit_seconds: Histogram,
    commit_batch: Histogram,
    task_start_seconds: Histogram,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(…)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// From a millisecond (a heartbeat, a read) to a minute (a long-poll's whole wait).
fn request_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        // 0.5 ms .. 8 s: an fsync on a quiet disk to a Redis store far away.
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        // 1 .. 16384 changes: one command alone, or a burst of them in one commit.
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        // A process starts in milliseconds; an image pull may take minutes.
        let task_start_seconds = Histogram::new([
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]);
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds: Histograms<RouteLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register(
            "store_commit_duration_seconds",
            "Time to write one group commit to the store (successful commits)",
            commit_seconds.clone(),
        );
        registry.register(
            "store_commit_batch_size",
            "Changes written by one group commit",
            commit_batch.clone(),
        );
        registry.register(
            "task_start_seconds",
            "From a task's creation to its agent reporting it running",
            task_start_seconds.clone(),
        );
        registry.register(
            "api_requests",
            "API requests answered, by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Time to answer an API request (long-polls included), by route pattern and method",
            request_seconds.clone(),
        );
        registry.register(
            "build",
            "The manager's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            commit_seconds,
            commit_batch,
            task_start_seconds,
            requests,
            request_seconds,
        }
    }

    /// A group commit of `changes` changes was written in `took`.
    pub fn observe_commit(&self, took: Duration, changes: usize) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_batch.observe(changes as f64);
    }

    /// A commit was published: every task it moved to running has started, and took
    /// from its creation to its agent's report.
    pub fn observe_published(&self, before: &ClusterState, changes: &[Change]) {
        // The changes are as made, a task possibly written several times: each is
        // observed once, when it first becomes running.
        let mut observed = std::collections::HashSet::new();
        for change in changes {
            let Change::PutTask(task) = change else {
                continue;
            };
            if task.state != TaskState::Running
                || before
                    .tasks
                    .get(&task.id)
                    .is_some_and(|old| old.state == TaskState::Running)
                || !observed.insert(task.id.as_str())
            {
                continue;
            }
            let running_at = task.started_at.unwrap_or(task.updated_at);
            let millis = running_at.saturating_sub(task.created_at);
            self.task_start_seconds.observe(millis as f64 / 1000.0);
        }
    }

    /// An API request was answered. `route` is the matched pattern (`UNMATCHED` when no
    /// route matched).
    pub fn observe_request(
        &self,
        route: &str,
        method: &Method,
        status: StatusCode,
        took: Duration,
    ) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method,
                status: status.as_u16(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                method,
            })
            .observe(took.as_secs_f64());
    }

    /// The whole exposition: what was recorded, then `scraped` (the state's figures and
    /// the long-polls open now).
    pub fn render(&self, scraped: Scraped) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        let mut now = Registry::with_prefix(PREFIX);
        now.register_collector(Box::new(scraped));
        prometheus_text::encode(&mut text, &now)?;
        Ok(text)
    }
}

/// A method as a label: the standard ones by name, anything else as `other` (a client
/// may send any token as a method; each must not become a series of its own).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// What one scrape reads at its moment.
#[derive(Debug)]
pub struct Scraped {
    pub figures: Figures,
    pub long_polls_open: usize,
    pub uptime: Duration,
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = &self.figures;
        gauges(
            &mut encoder,
            "workers",
            "Workers by status",
            "status",
            WORKER_STATUSES
                .iter()
                .map(|s| s.as_str())
                .zip(f.workers.iter().copied()),
        )?;
        gauge(
            &mut encoder,
            "agents_connected",
            "Workers whose agent was heard from within its liveness window",
            f.agents_connected,
        )?;
        gauges(
            &mut encoder,
            "tasks",
            "Tasks the manager holds, by observed state (as GET /api/v1/tasks lists them)",
            "state",
            TaskState::ALL
                .iter()
                .map(|s| s.as_str())
                .zip(f.tasks.iter().copied()),
        )?;
        gauges(
            &mut encoder,
            "service_replicas_desired",
            "Replicas each service asks for",
            "service",
            f.services.iter().map(|s| (s.name.as_str(), s.desired)),
        )?;
        gauges(
            &mut encoder,
            "service_replicas_running",
            "Replicas of each service wanted running and reported running",
            "service",
            f.services.iter().map(|s| (s.name.as_str(), s.running)),
        )?;
        gauges(
            &mut encoder,
            "service_replicas_healthy",
            "Running replicas of each service that are healthy",
            "service",
            f.services.iter().map(|s| (s.name.as_str(), s.healthy)),
        )?;
        let c = &f.counters;
        counter(
            &mut encoder,
            "containers_relocated",
            "Tasks replaced because their worker died (containers.relocated in /api/v1/stats)",
            c.containers_relocated,
        )?;
        counter(
            &mut encoder,
            "worker_failures",
            "Workers declared down (workers.failures in /api/v1/stats)",
            c.worker_failures,
        )?;
        counter(
            &mut encoder,
            "service_requests",
            "Accepted service create and update requests (services.totalOfRequests in /api/v1/stats)",
            c.total_requests,
        )?;
        counter(
            &mut encoder,
            "containers_started",
            "Containers agents reported started (services.totalOfContainers in /api/v1/stats)",
            c.total_containers,
        )?;
        gauge(
            &mut encoder,
            "long_polls_open",
            "Long-polls and streams (agents' task lists, ingresses' routes, events, logs) open now",
            self.long_polls_open as u64,
        )?;
        let mut up = encoder.encode_descriptor(
            "uptime_seconds",
            "Seconds since this manager started",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.uptime.as_secs_f64()).encode(up.encode_family(&NoLabels)?)?;
        Ok(())
    }
}

#[derive(Debug)]
struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(
        &self,
        _: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(clamp(value)).encode(metric)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One gauge per value of `label`.
fn gauges<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstGauge::new(clamp(n)).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycluster_core::Counters;

    fn scraped() -> Scraped {
        Scraped {
            figures: Figures {
                workers: [2, 1, 0],
                agents_connected: 2,
                tasks: [1, 0, 0, 3, 0, 0, 1, 0],
                services: vec![figures::ServiceFigures {
                    name: "web".into(),
                    desired: 3,
                    running: 3,
                    healthy: 2,
                }],
                counters: Counters {
                    total_requests: 4,
                    total_containers: 5,
                    worker_failures: 1,
                    containers_relocated: 2,
                },
            },
            long_polls_open: 7,
            uptime: Duration::from_secs(3),
        }
    }

    #[test]
    fn the_text_names_every_metric_with_its_labels() {
        let metrics = Metrics::new();
        metrics.observe_request(
            "/api/v1/service/{name}",
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(3),
        );
        metrics.observe_request(
            UNMATCHED,
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        metrics.observe_commit(Duration::from_millis(2), 5);
        let text = metrics.render(scraped()).unwrap();
        let want = [
            "# TYPE mycluster_workers gauge",
            "mycluster_workers{status=\"ready\"} 2",
            "mycluster_workers{status=\"down\"} 1",
            "mycluster_workers{status=\"draining\"} 0",
            "mycluster_agents_connected 2",
            "mycluster_tasks{state=\"pending\"} 1",
            "mycluster_tasks{state=\"assigned\"} 0",
            "mycluster_tasks{state=\"running\"} 3",
            "mycluster_tasks{state=\"lost\"} 1",
            "mycluster_tasks{state=\"shutdown\"} 0",
            "mycluster_service_replicas_desired{service=\"web\"} 3",
            "mycluster_service_replicas_running{service=\"web\"} 3",
            "mycluster_service_replicas_healthy{service=\"web\"} 2",
            "# TYPE mycluster_containers_relocated_total counter",
            "mycluster_containers_relocated_total 2",
            "mycluster_worker_failures_total 1",
            "mycluster_service_requests_total 4",
            "mycluster_containers_started_total 5",
            "mycluster_long_polls_open 7",
            "mycluster_uptime_seconds 3",
            "mycluster_api_requests_total{route=\"/api/v1/service/{name}\",method=\"GET\",status=\"200\"} 1",
            "mycluster_api_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1",
            "mycluster_api_request_duration_seconds_count{route=\"/api/v1/service/{name}\",method=\"GET\"} 1",
            "# TYPE mycluster_api_request_duration_seconds histogram",
            "mycluster_store_commit_duration_seconds_count 1",
            "mycluster_store_commit_batch_size_sum 5",
            "mycluster_task_start_seconds_count 0",
            "mycluster_build_info{version=\"",
        ];
        for line in want {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "no line starting {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "the 0.0.4 text has no EOF marker");
    }
}
