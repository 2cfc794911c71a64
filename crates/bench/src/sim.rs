//! The control plane at scale: many real agent loops (in this process, on the sim
//! driver) against a real manager process over HTTP. Measures the time until every
//! replica is reported running, the manager's peak memory, and — after 10% of the
//! workers die — the time until every replica runs again (with the real monitor).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycluster_agent::AgentConfig;
use mycluster_background::pace;
use mycluster_client::Client;
use mycluster_core::wire::{ServiceRequest, WorkerStatus};
use mycluster_monitor::MonitorConfig;
use mycluster_runtime::{Identity, SimRuntime};
use mycluster_setup::secret::JOIN_TOKEN_ENV;
use mycluster_setup::tokens::agent_token;
use tokio_util::sync::CancellationToken;

use crate::error::BenchError;
use crate::figure::{report, Figure};
use crate::manager::{rss_mib, this_executable, ManagerProcess};

/// Replicas per service: the manager's default limit.
const PER_SERVICE: usize = 1_000;

/// Services submitted at once.
const CONCURRENT_SUBMITS: usize = 8;

/// The most agents one process hosts.
const AGENTS_PER_HOST: usize = 1_000;

/// A `mycluster bench agents` process running sim agents; killed when dropped.
struct AgentHost(std::process::Child);

impl AgentHost {
    fn start(
        manager: &str,
        join_token: &str,
        from: usize,
        count: usize,
    ) -> Result<AgentHost, BenchError> {
        let exe = this_executable()?;
        let mut command = std::process::Command::new(exe);
        let child = crate::manager::die_with_parent(&mut command)
            .args([
                "bench",
                "agents",
                "--from",
                &from.to_string(),
                "--count",
                &count.to_string(),
            ])
            .env("MYCLUSTER_MANAGER", manager)
            .env(JOIN_TOKEN_ENV, join_token)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| BenchError::context("cannot start an agent host", e))?;
        Ok(AgentHost(child))
    }
}

impl Drop for AgentHost {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mycluster bench agents --from N --count M`: runs M sim agents named simNNNNN until
/// killed (the benchmark's agent hosts; the binary raises its open files limit first).
pub async fn host_agents(manager: &str, from: usize, count: usize) -> Result<(), BenchError> {
    let token = agent_token(None)?;
    let mut handles = Vec::with_capacity(count);
    let stop = CancellationToken::new();
    for i in from..from + count {
        let name = format!("sim{i:05}");
        let config = AgentConfig {
            listen: "127.0.0.1:0".into(),
            token: token.clone(),
            // One connection per agent: 10,000 agents fit the manager's open files.
            http2: true,
            ..AgentConfig::new(manager, &name)
        };
        let runtime = Arc::new(SimRuntime::new(Identity {
            cluster: "bench".into(),
            worker: name,
        }));
        handles.push(tokio::spawn(mycluster_agent::run(
            config,
            runtime,
            stop.clone(),
        )));
    }
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}

pub async fn run(
    quick: bool,
    workers: Option<usize>,
    replicas: Option<usize>,
) -> Result<Vec<Figure>, BenchError> {
    let workers = workers.unwrap_or(if quick { 50 } else { 10_000 });
    let replicas = replicas.unwrap_or(if quick { 5_000 } else { 1_000_000 });
    let deadline = if quick {
        Duration::from_secs(90)
    } else {
        Duration::from_secs(1200)
    };
    let manager = ManagerProcess::start(&[])?;
    let client = manager.client(Duration::from_secs(120))?;
    let scale = format!("{workers} sim workers, {replicas} replicas");

    // The agents live in several processes: one process's open files do not stretch to
    // thousands of agents, and killing a whole host is how 10% of them die below.
    let hosts = workers.div_ceil(AGENTS_PER_HOST).max(10.min(workers));
    let per_host = workers.div_ceil(hosts);
    let mut agent_hosts = Vec::new();
    for h in 0..hosts {
        let from = h * per_host;
        let count = per_host.min(workers.saturating_sub(from));
        if count > 0 {
            agent_hosts.push((
                count,
                AgentHost::start(&manager.url, &manager.join_token, from, count)?,
            ));
        }
    }
    let joined = Instant::now();
    wait(&client, deadline, |ready, _| ready == workers)
        .await
        .map_err(|e| BenchError::context(format!("{workers} agents did not all register"), e))?;
    let mut figures = vec![report(
        "sim: workers registered",
        format!("{:.1} s", joined.elapsed().as_secs_f64()),
        scale.clone(),
    )];

    let started = Instant::now();
    let services = replicas.div_ceil(PER_SERVICE);
    // Submitted as a deployment tool would: several at once (concurrent writes share one
    // commit), without asking for the whole state document back.
    let mut submitting = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < services || !submitting.is_empty() {
        while next < services && submitting.len() < CONCURRENT_SUBMITS {
            let n = PER_SERVICE.min(replicas - next * PER_SERVICE);
            let body = ServiceRequest {
                service: format!("svc-{next:04}"),
                image: Some("mycluster/hello-world".into()),
                replicas: u32::try_from(n)
                    .map_err(|e| BenchError::context("replicas of one service", e))?,
                command: None,
                env: None,
                healthcheck: None,
                update: None,
                ports: None,
                stop_grace_period: None,
                proxy_protocol: None,
                ..ServiceRequest::default()
            };
            let client = client.clone();
            submitting.spawn(async move { client.submit_service(&body).await });
            next += 1;
        }
        if let Some(done) = submitting.join_next().await {
            let done = done.map_err(|e| BenchError::context("a submission panicked", e))?;
            if let Err(e) = done {
                // The manager could not keep up: say so with what it reached, instead
                // of losing the run's figures.
                let stats = client.stats().await.ok();
                let (_, peak) = rss_mib(manager.pid());
                figures.push(report(
                    "sim: request -> all replicas running",
                    "not reached",
                    format!(
                        "{scale}; a submission failed after {:.0} s: {e}; {} containers had started; manager peak RSS {peak:.0} MiB",
                        started.elapsed().as_secs_f64(),
                        stats.map_or("?".to_string(), |s| s.total_containers.to_string()),
                    ),
                ));
                return Ok(figures);
            }
        }
    }
    let accepted = started.elapsed();
    let all_running = wait(&client, deadline, |_, running| running == replicas).await;
    let took = started.elapsed();
    let (_, peak) = rss_mib(manager.pid());
    match all_running {
        Ok(()) => figures.push(report(
            "sim: request -> all replicas running",
            format!("{:.1} s", took.as_secs_f64()),
            format!(
                "{scale}; {services} services accepted in {:.1} s; {:.0} replicas/s",
                accepted.as_secs_f64(),
                replicas as f64 / took.as_secs_f64()
            ),
        )),
        Err(e) => figures.push(report(
            "sim: request -> all replicas running",
            "not reached",
            format!("{scale}: {e}"),
        )),
    }
    figures.push(report(
        "sim: manager peak RSS",
        format!("{peak:.0} MiB"),
        scale.clone(),
    ));

    // 10% of the workers die; the monitor finds them and their replicas move.
    let monitor_stop = CancellationToken::new();
    let monitor = tokio::spawn(mycluster_monitor::run(
        MonitorConfig {
            token: Some(manager.token.clone()),
            ..MonitorConfig::new(&manager.url)
        },
        monitor_stop.clone(),
    ));
    // Whole hosts die until 10% of the workers are gone.
    let mut dead = 0;
    let killed = Instant::now();
    while dead * 10 < workers {
        let Some((count, host)) = agent_hosts.pop() else {
            break;
        };
        drop(host);
        dead += count;
    }
    let recovered = wait(&client, deadline, |ready, running| {
        ready == workers - dead && running == replicas
    })
    .await;
    match recovered {
        Ok(()) => figures.push(report(
            "sim: 10% of workers killed -> all running",
            format!("{:.1} s", killed.elapsed().as_secs_f64()),
            format!("{dead} workers lost; {scale}"),
        )),
        Err(e) => figures.push(report(
            "sim: 10% of workers killed -> all running",
            "not reached",
            e.to_string(),
        )),
    }
    monitor_stop.cancel();
    let _ = monitor.await;
    drop(agent_hosts);
    Ok(figures)
}

/// Polls the workers until `done(ready workers, running replicas)`, or the deadline.
async fn wait(
    client: &Client,
    deadline: Duration,
    done: impl Fn(usize, usize) -> bool,
) -> Result<(), BenchError> {
    let started = Instant::now();
    let mut last = (0, 0);
    loop {
        let looked = Instant::now();
        if let Ok(workers) = client.workers().await {
            let ready = workers
                .iter()
                .filter(|w| w.status == WorkerStatus::Ready)
                .count();
            let running = workers.iter().map(|w| w.running).sum();
            last = (ready, running);
            if done(ready, running) {
                return Ok(());
            }
        }
        if started.elapsed() > deadline {
            return Err(BenchError::Failed(format!(
                "not within {} s (last seen: {} ready workers, {} running)",
                deadline.as_secs(),
                last.0,
                last.1
            )));
        }
        // Every 250 ms, but no more than a tenth of the time: the list of 10,000
        // workers is megabytes, and the bench must not be the manager's main load.
        let wait = pace(
            Duration::from_millis(250),
            looked.elapsed(),
            10,
            Duration::from_secs(5),
        );
        tokio::time::sleep(wait).await;
    }
}
