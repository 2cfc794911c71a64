//! Failover time: a worker's agent is killed (with its workloads, as a lost node) until
//! every one of its replicas runs elsewhere, as reported by the manager. Real manager,
//! monitor and agents; `--driver process` or `docker`. Prints each run, then the median
//! and p99.
//!
//! cargo bench -p mycluster-bench --bench failover -- [--driver process|docker] [--runs 20]
//!
//! It drives the `mycluster` binary through the harness of its tests
//! (`crates/mycluster/tests/common`), which finds it by the path this crate's build
//! script gives it; it builds that binary first, with this bench's profile.

#[path = "../../mycluster/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::docker::{running, test_image, Cleanup};
use common::{Agent, Api, Manager, Monitor, BIN};
use serde_json::{json, Value};

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];
const REPLICAS: usize = 3;

#[tokio::main]
async fn main() {
    build_mycluster();
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let driver = flag("--driver").unwrap_or_else(|| "process".into());
    let runs: usize = flag("--runs").and_then(|r| r.parse().ok()).unwrap_or(20);
    let cluster = format!("failoverbench{}", std::process::id());
    let _cleanup = Cleanup::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_named(dir.path(), &cluster);
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);

    let image = (driver == "docker").then(test_image);
    let start_agent = |worker: &str| -> Agent {
        match driver.as_str() {
            "docker" => {
                let node = format!("{cluster}_node_{worker}");
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", &node])
                    .output();
                let status = std::process::Command::new("docker")
                    .args([
                        "run",
                        "-d",
                        "--name",
                        &node,
                        "--label",
                        &format!("mycluster.cluster={cluster}"),
                    ])
                    .arg(image.unwrap())
                    .output()
                    .expect("docker run");
                assert!(status.status.success());
                Agent::start(&manager.url, worker, "docker", &["--pid-container", &node])
            }
            _ => Agent::start(&manager.url, worker, "process", &[]),
        }
    };
    let mut agents: BTreeMap<String, Agent> = WORKERS
        .iter()
        .map(|w| (w.to_string(), start_agent(w)))
        .collect();
    wait_until(&api, "all workers ready", |_, workers| {
        workers.iter().filter(|w| w["status"] == "ready").count() == WORKERS.len()
    })
    .await;
    let body = match &image {
        Some(image) => json!({"service": "web", "image": image, "replicas": REPLICAS}),
        None => {
            json!({"service": "web", "command": [BIN, "hello", "--port", "0"], "replicas": REPLICAS})
        }
    };
    assert_eq!(api.post("/api/v1/service", &body).await.status, 201);

    let mut times = Vec::new();
    for run in 1..=runs {
        let (tasks, _) = wait_until(&api, "replicas running", |tasks, workers| {
            running_on(tasks).len() == REPLICAS
                && workers.iter().filter(|w| w["status"] == "ready").count() == WORKERS.len()
        })
        .await;
        // The busiest worker hosts at least one replica.
        let victim = running_on(&tasks).into_iter().next().unwrap();
        let started = Instant::now();
        agents.remove(&victim).unwrap().kill9();
        if driver == "docker" {
            let node = format!("{cluster}_node_{victim}");
            let _ = std::process::Command::new("docker")
                .args(["kill", &node])
                .output();
        }
        wait_until(&api, "replicas running elsewhere", |tasks, _| {
            let on = running_on(tasks);
            on.len() == REPLICAS && !on.contains(&victim)
        })
        .await;
        let took = started.elapsed();
        println!(
            "run {run:2}: {victim} lost, its replicas running elsewhere after {:.3} s",
            took.as_secs_f64()
        );
        times.push(took);
        agents.insert(victim.clone(), start_agent(&victim));
        // Let the returning worker settle before the next loss.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "failover ({driver} driver, {runs} runs): median {:.3} s, p99 {:.3} s, min {:.3} s, max {:.3} s",
        pct(0.5).as_secs_f64(),
        pct(0.99).as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
    assert!(running(&cluster).len() <= WORKERS.len() + REPLICAS);
}

/// Builds the binary under test (`BIN`): cargo builds only this package's targets for
/// `cargo bench -p mycluster-bench`, and a stale binary would measure old code. Cargo
/// sets $CARGO for the benches it runs; without it, BIN is taken as it is.
fn build_mycluster() {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let dir = std::path::Path::new(BIN)
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned());
    // The profile whose output lands in that directory.
    let profile = match dir.as_deref() {
        Some("release") => "bench",
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let built = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--profile", profile])
        .args(["-p", "mycluster", "--bin", "mycluster"])
        .status();
    assert!(
        built.as_ref().is_ok_and(|s| s.success()),
        "cannot build {BIN}: {built:?}"
    );
}

/// The workers of running tasks, one entry per task.
fn running_on(tasks: &Value) -> Vec<String> {
    tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running")
        .map(|t| t["worker"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn wait_until(
    api: &Api,
    what: &str,
    done: impl Fn(&Value, &[Value]) -> bool,
) -> (Value, Vec<Value>) {
    let started = Instant::now();
    loop {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let workers = api
            .ok("/api/v1/workers")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done(&tasks, &workers) {
            return (tasks, workers);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
