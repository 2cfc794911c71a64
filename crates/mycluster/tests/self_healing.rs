//! The cluster heals itself (issue 18): on a `setup` cluster of 4 workers on the real
//! Docker engine, with a service of 4 replicas,
//! - `docker kill NAME_manager_1` (which the engine's restart policy counts as an
//!   operator's stop): the workers' keepers start it again, the agents and the monitor
//!   find it at the same name, and the API works: a new service is created and runs;
//! - `docker kill NAME_monitor_1`: back the same way, and failover still works;
//! - `docker stop NAME_worker_1`: it stays stopped (a lost machine, the original's
//!   failover demonstration: no keeper and no restart policy brings it back), and its
//!   replicas run elsewhere.
//!
//! Also: every role container has the restart policy `unless-stopped`, workloads none,
//! and `setup --lease` reaches the manager's command. Everything the cluster made is
//! removed by label, even when the test fails.

mod common;

use std::time::{Duration, Instant};

use common::docker::{docker, engine_or_skip, Teardown};
use common::setup_env::SetupEnv;
use common::{eventually, Api};
use serde_json::Value;

const REPLICAS: usize = 4;

/// How long a stopped worker is watched to stay stopped.
const STAYS_STOPPED: Duration = Duration::from_secs(10);

/// `docker inspect --format FORMAT NAME`.
fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, name])
}

/// Whether the manager answers the API (without panicking while it is down).
async fn answers(url: &str, token: &str) -> bool {
    let client = mycluster_client::reqwest_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    client
        .get(format!("{url}/api/v1/workers"))
        .bearer_auth(token)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The running tasks of `service` (running and wanted running), by worker.
async fn running_on(api: &Api, service: &str) -> Option<Vec<String>> {
    let tasks = api.ok(&format!("/api/v1/tasks?service={service}")).await;
    Some(
        tasks
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
            .filter_map(|t| t["worker"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// Waits until `service` has exactly `replicas` running tasks, none on `not_on`.
async fn runs(api: &Api, service: &str, replicas: usize, not_on: Option<&str>) {
    eventually(
        &format!("{replicas} replicas of {service} running (none on {not_on:?})"),
        || async {
            let on = running_on(api, service).await?;
            (on.len() == replicas && not_on.is_none_or(|w| !on.iter().any(|o| o == w)))
                .then_some(())
        },
    )
    .await;
}

/// `docker kill`s a control-plane container and waits until it runs again (started by
/// a keeper: nothing else starts it); when it was killed.
async fn kill_and_see_it_back(name: &str) -> Instant {
    let started_before = inspect(name, "{{.State.StartedAt}}");
    let killed = Instant::now();
    docker(&["kill", name]);
    eventually(&format!("{name} running again"), || async {
        let now = inspect(name, "{{.State.Status}} {{.State.StartedAt}}");
        (now.starts_with("running ") && !now.ends_with(&started_before)).then_some(())
    })
    .await;
    eprintln!(
        "{name} running again {:?} after docker kill",
        killed.elapsed()
    );
    killed
}

/// Whether some worker's keeper says it started `name` again.
fn a_keeper_started(cluster: &str, name: &str) -> bool {
    (1..=4).any(|i| {
        let output = std::process::Command::new("docker")
            .args(["logs", &format!("{cluster}_worker_{i}")])
            .output()
            .expect("docker logs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        text.contains(&format!(
            "keeper: {name} died without `docker stop`: starting it again"
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_control_plane_comes_back_and_a_stopped_worker_stays_stopped() {
    if !engine_or_skip("killed_control_plane_comes_back_and_a_stopped_worker_stays_stopped") {
        return;
    }
    let cluster = format!("heal{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let api = env.setup(&cluster, 4, &["--lease", "7s"]);
    let token = env.ok(&["token", "-n", &cluster]).trim().to_string();
    let manager = format!("{cluster}_manager_1");
    let monitor = format!("{cluster}_monitor_1");
    let worker = format!("{cluster}_worker_1");

    // The policies setup gave: every role container restarts unless stopped; the manager
    // got the lease it was given.
    for role in [
        "manager_1",
        "monitor_1",
        "ingress_1",
        "worker_1",
        "worker_4",
    ] {
        let name = format!("{cluster}_{role}");
        assert_eq!(
            inspect(&name, "{{.HostConfig.RestartPolicy.Name}}"),
            "unless-stopped",
            "{name}"
        );
    }
    let command = inspect(&manager, "{{json .Config.Cmd}}");
    assert!(command.contains(r#""--lease","7s""#), "{command}");
    assert!(
        inspect(&worker, "{{json .Config.Cmd}}")
            .contains(&format!(r#""--keep-cluster","{cluster}""#)),
        "the workers keep the control plane"
    );

    env.ok(&[
        "service",
        "create",
        "web",
        "--image",
        "mycluster/hello-world",
        "--replicas",
        &REPLICAS.to_string(),
    ]);
    runs(&api, "web", REPLICAS, None).await;
    // Workloads run once: no restart policy.
    let workloads = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=mycluster.cluster={cluster}"),
        "--filter",
        "label=mycluster.role=workload",
    ]);
    let first = workloads.lines().next().expect("a workload container");
    let policy = inspect(first, "{{.HostConfig.RestartPolicy.Name}}");
    assert!(
        policy.is_empty() || policy == "no",
        "a workload restarts: {policy}"
    );

    // docker kill of the manager: back by itself, and the cluster works.
    let killed = kill_and_see_it_back(&manager).await;
    assert!(a_keeper_started(&cluster, &manager), "no keeper said it");
    eventually("the API answering again", || async {
        answers(&api.url, &token).await.then_some(())
    })
    .await;
    eprintln!("the API answers {:?} after docker kill", killed.elapsed());
    env.ok(&[
        "service",
        "create",
        "after",
        "--image",
        "mycluster/hello-world",
        "--replicas",
        "2",
    ]);
    runs(&api, "after", 2, None).await;
    runs(&api, "web", REPLICAS, None).await;

    // docker kill of the monitor: back by itself.
    kill_and_see_it_back(&monitor).await;
    assert!(a_keeper_started(&cluster, &monitor), "no keeper said it");

    // docker stop of a worker: a lost machine. The monitor (the one just started again)
    // declares it down and its replicas run elsewhere; it stays stopped.
    let stopped = Instant::now();
    docker(&["stop", &worker]);
    eventually(&format!("{worker} down"), || async {
        let workers: Value = api.ok("/api/v1/workers").await;
        workers
            .as_array()?
            .iter()
            .any(|w| w["worker"] == worker.as_str() && w["status"] == "down")
            .then_some(())
    })
    .await;
    runs(&api, "web", REPLICAS, Some(&worker)).await;
    runs(&api, "after", 2, Some(&worker)).await;
    eprintln!(
        "replicas of {worker} running elsewhere {:?} after docker stop",
        stopped.elapsed()
    );
    while stopped.elapsed() < STAYS_STOPPED {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        inspect(&worker, "{{.State.Status}}"),
        "exited",
        "a stopped worker must stay stopped"
    );
    let monitor_log = std::process::Command::new("docker")
        .args(["logs", &monitor])
        .output()
        .expect("docker logs");
    let monitor_log = String::from_utf8_lossy(&monitor_log.stderr).into_owned()
        + &String::from_utf8_lossy(&monitor_log.stdout);
    assert!(
        monitor_log.contains(&format!(
            "Worker {worker} was not found... relocating its services"
        )),
        "{monitor_log}"
    );
}
