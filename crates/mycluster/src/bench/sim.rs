//! The control plane at scale: many real agent loops (in this process, on the sim
//! driver) against a real manager process over HTTP. Measures the time until every
//! replica is reported running, the manager's peak memory, and — after 10% of the
//! workers die — the time until every replica runs again (with the real monitor).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mycluster_agent::AgentConfig;
use mycluster_client::Client;
use mycluster_monitor::MonitorConfig;
use mycluster_runtime::{Identity, SimRuntime};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::manager::{rss_mib, ManagerProcess};
use super::{report, Figure};

/// Replicas per service: the manager's default limit.
const PER_SERVICE: usize = 1_000;

pub async fn run(
    quick: bool,
    workers: Option<usize>,
    replicas: Option<usize>,
) -> anyhow::Result<Vec<Figure>> {
    let workers = workers.unwrap_or(if quick { 50 } else { 10_000 });
    let replicas = replicas.unwrap_or(if quick { 5_000 } else { 1_000_000 });
    let deadline = if quick {
        Duration::from_secs(90)
    } else {
        Duration::from_secs(1200)
    };
    raise_open_files();
    let manager = ManagerProcess::start(&[])?;
    let client = Client::new(&manager.url, Duration::from_secs(120))?;
    let scale = format!("{workers} sim workers, {replicas} replicas");

    let mut agents = Vec::with_capacity(workers);
    for i in 0..workers {
        let name = format!("sim{i:05}");
        let stop = CancellationToken::new();
        let config = AgentConfig {
            listen: "127.0.0.1:0".into(),
            ..AgentConfig::new(&manager.url, &name)
        };
        let runtime = Arc::new(SimRuntime::new(Identity {
            cluster: "bench".into(),
            worker: name,
        }));
        agents.push((
            stop.clone(),
            tokio::spawn(mycluster_agent::run(config, runtime, stop)),
        ));
    }
    let joined = Instant::now();
    wait(&client, deadline, |ready, _| ready == workers)
        .await
        .with_context(|| format!("{workers} agents did not all register"))?;
    let mut figures = vec![report(
        "sim: workers registered",
        format!("{:.1} s", joined.elapsed().as_secs_f64()),
        scale.clone(),
    )];

    let started = Instant::now();
    let services = replicas.div_ceil(PER_SERVICE);
    for s in 0..services {
        let n = PER_SERVICE.min(replicas - s * PER_SERVICE);
        let body = json!({"service": format!("svc-{s:04}"), "image": "mycluster/hello-world", "replicas": n});
        client
            .request::<serde_json::Value>(
                reqwest::Method::POST,
                "/api/v1/service?wait=0",
                Some(&body),
            )
            .await?;
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
        MonitorConfig::new(&manager.url),
        monitor_stop.clone(),
    ));
    let dead = (workers / 10).max(1);
    let killed = Instant::now();
    for (stop, _) in agents.iter().take(dead) {
        stop.cancel();
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
    for (stop, handle) in agents {
        stop.cancel();
        let _ = handle.await;
    }
    Ok(figures)
}

/// Polls the workers until `done(ready workers, running replicas)`, or the deadline.
async fn wait(
    client: &Client,
    deadline: Duration,
    done: impl Fn(usize, usize) -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = (0, 0);
    loop {
        if let Ok(workers) = client.workers().await {
            let ready = workers.iter().filter(|w| w.status == "ready").count();
            let running = workers.iter().map(|w| w.running).sum();
            last = (ready, running);
            if done(ready, running) {
                return Ok(());
            }
        }
        if started.elapsed() > deadline {
            anyhow::bail!(
                "not within {} s (last seen: {} ready workers, {} running)",
                deadline.as_secs(),
                last.0,
                last.1
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Thousands of agents need thousands of sockets: lift the soft limit to the hard one.
fn raise_open_files() {
    // SAFETY: getrlimit/setrlimit on a stack value.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
