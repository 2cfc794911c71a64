//! The worker scenario on the real Docker engine: a locally built `FROM scratch` image
//! (no registry is reachable), real agents on the docker driver, containers spread,
//! replaced, scaled, adopted across an agent restart, and nothing orphaned.

mod common;

use std::collections::BTreeMap;

use common::docker::{docker, engine_or_skip, running, test_image, Cleanup};
use common::{eventually, ready_workers, Agent, Api, Manager};
use serde_json::json;

/// Waits until `n` of the cluster's containers run and the manager reports `n` running.
async fn settle(api: &Api, cluster: &str, n: usize) -> Vec<(String, String)> {
    eventually(&format!("{n} running containers"), || async {
        let containers = running(cluster);
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let reported = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (containers.len() == n && reported == n).then_some(containers)
    })
    .await
}

fn per_worker(containers: &[(String, String)]) -> Vec<usize> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, worker) in containers {
        *counts.entry(worker.as_str()).or_default() += 1;
    }
    counts.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_run_as_containers_and_survive_agent_restarts() {
    if !engine_or_skip("services_run_as_containers_and_survive_agent_restarts") {
        return;
    }
    let image = test_image();
    let cluster = format!("dockertest{}", std::process::id());
    let _cleanup = Cleanup::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_named(dir.path(), &cluster);
    let api = manager.api();
    let mut agents: Vec<Agent> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| Agent::start(&manager.url, name, "docker", &[]))
        .collect();
    ready_workers(&api, 3).await;

    let body = json!({"service": "web", "image": image, "replicas": 5});
    assert_eq!(api.post("/api/v1/service", &body).await.status, 201);
    let containers = settle(&api, &cluster, 5).await;
    assert_eq!(per_worker(&containers), [2, 2, 1]);
    for (name, _) in &containers {
        assert!(
            name.starts_with("web."),
            "containers are named <service>.<slot>.<id>: {name}"
        );
        let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", name]);
        for key in [
            "mycluster.cluster",
            "mycluster.service",
            "mycluster.task",
            "mycluster.worker",
        ] {
            assert!(labels.contains(key), "{name} lacks {key}: {labels}");
        }
    }

    // A killed container is reported and replaced.
    let (victim, _) = containers[0].clone();
    docker(&["kill", &victim]);
    eventually("the replacement", || async {
        let now = running(&cluster);
        (now.len() == 5 && now.iter().all(|(n, _)| *n != victim)).then_some(())
    })
    .await;
    settle(&api, &cluster, 5).await;

    // Scale to 2, then 3.
    api.send_json("PATCH", "/api/v1/service/web", &json!({"replicas": 2}))
        .await;
    settle(&api, &cluster, 2).await;
    api.send_json("PATCH", "/api/v1/service/web", &json!({"replicas": 3}))
        .await;
    let before = settle(&api, &cluster, 3).await;

    // Kill w1's agent; meanwhile a stray container of ours appears on w1 (a task the
    // manager never heard of). The restarted agent adopts w1's real containers — same
    // ids, nothing restarted — and removes the stray.
    let ids_before = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=mycluster.cluster={cluster}"),
    ]);
    agents.remove(0).kill9();
    let stray = format!("{cluster}-stray");
    docker(&[
        "run",
        "-d",
        "--name",
        &stray,
        "--label",
        &format!("mycluster.cluster={cluster}"),
        "--label",
        "mycluster.worker=w1",
        "--label",
        "mycluster.task=not-a-task",
        "--label",
        "mycluster.service=web",
        image,
    ]);
    agents.insert(0, Agent::start(&manager.url, "w1", "docker", &[]));
    eventually("the stray to be removed", || async {
        running(&cluster)
            .iter()
            .all(|(n, _)| *n != stray)
            .then_some(())
    })
    .await;
    let after = settle(&api, &cluster, 3).await;
    let ids_after = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=mycluster.cluster={cluster}"),
    ]);
    assert_eq!(ids_before.lines().count(), 3);
    let mut a: Vec<&str> = ids_before.lines().collect();
    let mut b: Vec<&str> = ids_after.lines().collect();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "the restarted agent adopted its containers: {before:?} -> {after:?}"
    );

    // Delete: every container goes.
    assert_eq!(
        api.raw("DELETE", "/api/v1/service/web", None, None)
            .await
            .status,
        200
    );
    eventually("no containers left", || async {
        running(&cluster).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_its_task_saying_so() {
    if !engine_or_skip("an_image_that_cannot_be_pulled_fails_its_task_saying_so") {
        return;
    }
    let cluster = format!("dockerpull{}", std::process::id());
    let _cleanup = Cleanup::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_named(dir.path(), &cluster);
    let api = manager.api();
    let _agent = Agent::start(&manager.url, "w1", "docker", &[]);
    ready_workers(&api, 1).await;
    let body = json!({"service": "web", "image": "mycluster-test/does-not-exist:1", "replicas": 1});
    assert_eq!(api.post("/api/v1/service?wait=0", &body).await.status, 201);
    let failed = eventually("the task to fail", || async {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["state"] == "failed")
            .cloned()
    })
    .await;
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("mycluster-test/does-not-exist:1"), "{error}");
    assert!(error.contains("could not be pulled"), "{error}");
}

/// A worker node as `setup` makes one: workloads join the node container's PID
/// namespace, so stopping the node kills them, as losing a machine would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_docker_worker_is_found_and_replaced_elsewhere() {
    if !engine_or_skip("a_dead_docker_worker_is_found_and_replaced_elsewhere") {
        return;
    }
    let image = test_image();
    let cluster = format!("dockerloss{}", std::process::id());
    let _cleanup = Cleanup::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_named(dir.path(), &cluster);
    let api = manager.api();
    let _monitor = common::Monitor::start(&manager.url);
    let mut agents = BTreeMap::new();
    for worker in ["w1", "w2", "w3", "w4"] {
        let node = format!("{cluster}_node_{worker}");
        docker(&[
            "run",
            "-d",
            "--name",
            &node,
            "--label",
            &format!("mycluster.cluster={cluster}"),
            image,
        ]);
        agents.insert(
            worker,
            Agent::start(&manager.url, worker, "docker", &["--pid-container", &node]),
        );
    }
    ready_workers(&api, 4).await;
    let workloads = |cluster: &str| -> Vec<(String, String)> {
        running(cluster)
            .into_iter()
            .filter(|(_, worker)| !worker.is_empty())
            .collect()
    };
    let body = json!({"service": "web", "image": image, "replicas": 3});
    assert_eq!(api.post("/api/v1/service", &body).await.status, 201);
    let before = eventually("3 workloads", || async {
        let w = workloads(&cluster);
        (w.len() == 3).then_some(w)
    })
    .await;
    let victim = before[0].1.clone();

    // The node dies: its agent, and (through the shared PID namespace) its workloads.
    agents.remove(victim.as_str()).unwrap().kill9();
    docker(&["stop", "-t", "1", &format!("{cluster}_node_{victim}")]);
    let after = eventually("3 workloads elsewhere", || async {
        let w = workloads(&cluster);
        let reported = api.ok("/api/v1/tasks?service=web").await;
        let running = reported
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (w.len() == 3 && running == 3 && w.iter().all(|(_, worker)| *worker != victim)).then_some(w)
    })
    .await;
    assert!(after.iter().any(|(_, w)| w == "w4"), "{after:?}");
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["workers.failures"], 1);
    assert_eq!(stats["containers.relocated"], 1);
}
