//! The API under load: `GET /api/v1/state` and `/api/v1/stats` of a manager holding 100
//! workers and 1,000 services, driven by `wrk` (Debian's package) with 2 threads and 32
//! connections, over TLS and in plain HTTP against the same process (it serves both on
//! one port, plain to loopback peers), side by side in alternating rounds; with
//! keep-alive (wrk's TLS handshakes happen once per connection, before the clock matters)
//! and with a new connection per request (`Connection: close`: a TLS handshake per
//! request). Then the CLI as a person runs it: `mycluster stats`, one call after another,
//! each a new process whose TLS handshake is a full one (nothing to resume from).
//! wrk's new TLS connections are mostly *resumed* ones: it reuses each connection's SSL
//! object (`SSL_clear`), which keeps the session, and the manager (rustls) issues TLS 1.3
//! tickets; a capture (tshark, 2026-11-26) found a pre_shared_key in 912 of 916 server
//! hellos. So wrk's "new conns" figure is a resumed handshake (still an ECDHE, no
//! certificate); the CLI's is a full one.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mycluster_core::wire::{Driver, Registration, ServiceRequest, StateDoc};
use mycluster_setup::secret::TOKEN_ENV;

use crate::error::BenchError;
use crate::figure::{report, Figure};
use crate::manager::{this_executable, ManagerProcess, Scheme};
use crate::wrk::{self, Connections};

pub async fn run(quick: bool) -> Result<Vec<Figure>, BenchError> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err(BenchError::Failed(
            "the API benchmark needs wrk (apt-get install wrk)".into(),
        ));
    }
    let (workers, services) = if quick { (10, 100) } else { (100, 1_000) };
    // Quick (CI: the bench must run, not measure): one round a side.
    let (seconds, rounds) = if quick { (1, 1) } else { (10, 4) };
    let setting = format!(
        "{workers} workers, {services} services; {rounds} rounds alternating sides, each wrk -t2 -c32 -d{seconds}s"
    );
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
            agent_ca_sha256: None,
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
    let headers = [format!("Authorization: Bearer {}", manager.token)];
    let at = socket_address(&manager.url)?;
    for path in ["/api/v1/state", "/api/v1/stats"] {
        for connections in [Connections::KeepAlive, Connections::Close] {
            let mut runs: HashMap<Scheme, Vec<wrk::Run>> = HashMap::new();
            for round in 0..rounds {
                for scheme in Scheme::alternating(round) {
                    // Quick runs measure nothing worth a minute's wait for the ports.
                    if connections == Connections::Close && !quick {
                        wrk::drain(at).await;
                    }
                    let url = format!("{}{path}", manager.url_for(scheme)?);
                    let run = wrk::run(&url, seconds, connections, &headers).await?;
                    runs.entry(scheme).or_default().push(run);
                }
            }
            figures.extend(side_by_side(path, connections, &runs, &setting));
        }
    }
    figures.extend(cli_calls(&manager, rounds, if quick { 5 } else { 50 })?);
    Ok(figures)
}

/// What a person at a terminal waits for: `mycluster stats --json` (a new process, a new
/// connection and, over https, a full TLS handshake checking the CA's digest), run one
/// after another, `calls` times a side in each of `rounds` alternating rounds.
fn cli_calls(
    manager: &ManagerProcess,
    rounds: usize,
    calls: usize,
) -> Result<Vec<Figure>, BenchError> {
    let exe = this_executable()?;
    let mut times: HashMap<Scheme, Vec<Duration>> = HashMap::new();
    for round in 0..rounds {
        for scheme in Scheme::alternating(round) {
            let mut command = Command::new(&exe);
            command
                .args(["stats", "--json"])
                .env("MYCLUSTER_MANAGER", manager.url_for(scheme)?)
                .env(TOKEN_ENV, &manager.token)
                .env_remove("MYCLUSTER_CA_SHA256")
                .env_remove("MYCLUSTER_CACERT")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let (Scheme::Https, Some(pin)) = (scheme, &manager.ca_sha256) {
                command.env("MYCLUSTER_CA_SHA256", pin);
            }
            for _ in 0..calls {
                let started = Instant::now();
                let status = command
                    .status()
                    .map_err(|e| BenchError::context("cannot run `mycluster stats`", e))?;
                let took = started.elapsed();
                if !status.success() {
                    return Err(BenchError::Failed(format!(
                        "`mycluster stats` over {} failed ({status})",
                        scheme.name()
                    )));
                }
                times.entry(scheme).or_default().push(took);
            }
        }
    }
    let mut figures = Vec::new();
    let mut medians = HashMap::new();
    for scheme in [Scheme::Http, Scheme::Https] {
        let mut all = times.remove(&scheme).unwrap_or_default();
        all.sort();
        let at = |p: f64| {
            let rank = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len().max(1));
            all.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let (median, p99) = (at(0.5), at(0.99));
        figures.push(report(
            &format!("`mycluster stats` over {}", scheme.name()),
            format!("{median:.2} ms"),
            format!(
                "median wall time of {} calls one after another (a new process and connection each), p99 {p99:.2} ms; {rounds} rounds alternating sides",
                all.len()
            ),
        ));
        medians.insert(scheme, median);
    }
    if let (Some(plain), Some(tls)) = (medians.get(&Scheme::Http), medians.get(&Scheme::Https)) {
        figures.push(report(
            "`mycluster stats`: https − http",
            format!("{:+.2} ms", tls - plain),
            "difference of the medians: the CLI's TLS handshake (pinned CA) and encryption",
        ));
    }
    Ok(figures)
}

/// The figures of one endpoint and one way of connecting: each side's median run, and
/// the TLS side's share of the plain side's requests/s.
fn side_by_side(
    path: &str,
    connections: Connections,
    runs: &HashMap<Scheme, Vec<wrk::Run>>,
    setting: &str,
) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut medians = HashMap::new();
    for scheme in [Scheme::Http, Scheme::Https] {
        let Some(all) = runs.get(&scheme) else {
            continue;
        };
        let Some(mid) = wrk::median(all) else {
            continue;
        };
        let each: Vec<String> = all.iter().map(|r| format!("{:.0}", r.rps)).collect();
        let errors: u64 = all.iter().map(|r| r.errors).sum();
        figures.push(report(
            &format!("GET {path} {} {}", scheme.name(), connections.describe()),
            format!("{:.0} req/s", mid.rps),
            format!(
                "median run: p50 {}, p99 {}; runs {} req/s; {errors} errors; {setting}{}",
                mid.p50,
                mid.p99,
                each.join(" "),
                match connections {
                    Connections::KeepAlive => "",
                    Connections::Close => " -H 'Connection: close'",
                }
            ),
        ));
        medians.insert(scheme, mid);
    }
    if let (Some(plain), Some(tls)) = (medians.get(&Scheme::Http), medians.get(&Scheme::Https)) {
        if plain.rps > 0.0 {
            figures.push(report(
                &format!("GET {path} https/http {}", connections.describe()),
                format!("{:.2}x req/s", tls.rps / plain.rps),
                format!("p99 {} vs {}", tls.p99, plain.p99),
            ));
        }
    }
    figures
}

/// `127.0.0.1:PORT` of `http://127.0.0.1:PORT`.
fn socket_address(url: &str) -> Result<SocketAddrV4, BenchError> {
    url.trim_start_matches("http://")
        .parse()
        .map_err(|e| BenchError::context(format!("the manager's address {url}"), e))
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
