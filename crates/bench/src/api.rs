//! The API under load: `GET /api/v1/state` and `/api/v1/stats` of a manager holding 100
//! workers and 1,000 services, driven by `wrk` (Debian's package) with 2 threads and 32
//! connections.

use std::process::Command;
use std::time::Duration;

use mycluster_core::wire::{Driver, Registration, ServiceRequest, StateDoc};

use crate::error::BenchError;
use crate::figure::{report, Figure};
use crate::manager::ManagerProcess;

pub async fn run(quick: bool) -> Result<Vec<Figure>, BenchError> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err(BenchError::Failed(
            "the API benchmark needs wrk (apt-get install wrk)".into(),
        ));
    }
    let (workers, services) = if quick { (10, 100) } else { (100, 1_000) };
    let seconds = if quick { 2 } else { 10 };
    let manager = ManagerProcess::start(&[])?;
    let client = manager.client(Duration::from_secs(30))?;
    for w in 0..workers {
        let registration = Registration {
            name: format!("w{w:03}"),
            address: "127.0.0.1:9".into(),
            labels: Default::default(),
            capacity: None,
            driver: Driver::Sim.into(),
            instance: String::new(),
            resources: Default::default(),
            host: String::new(),
        };
        client.register(&registration).await?;
    }
    for s in 0..services {
        let body = ServiceRequest {
            service: format!("svc-{s:04}"),
            image: Some("mycluster/hello-world".into()),
            replicas: 1,
            command: None,
            env: None,
            healthcheck: None,
            update: None,
            ports: None,
            stop_grace_period: None,
            proxy_protocol: None,
            ..ServiceRequest::default()
        };
        client
            .request_with::<_, StateDoc>(reqwest::Method::POST, "/api/v1/service?wait=0", &body)
            .await?;
    }
    let mut figures = Vec::new();
    for path in ["/api/v1/state", "/api/v1/stats"] {
        let output = Command::new("wrk")
            .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency"])
            .args(["-H", &format!("Authorization: Bearer {}", manager.token)])
            .arg(format!("{}{path}", manager.url))
            .output()
            .map_err(|e| BenchError::context("cannot run wrk", e))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let rps = field(&text, "Requests/sec:").unwrap_or_default();
        let p50 = latency(&text, "50%").unwrap_or_default();
        let p99 = latency(&text, "99%").unwrap_or_default();
        figures.push(report(
            &format!("GET {path}"),
            format!("{rps} req/s"),
            format!("p50 {p50}, p99 {p99}; {workers} workers, {services} services; wrk -t2 -c32 -d{seconds}s"),
        ));
    }
    Ok(figures)
}

pub(crate) fn field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(|v| v.trim().to_string())
}

pub(crate) fn latency(text: &str, percentile: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(percentile))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
}
