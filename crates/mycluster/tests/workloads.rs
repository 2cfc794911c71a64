//! Real workloads on the topology users get — a `setup` cluster on the real Docker
//! engine, its workers driving the host's engine:
//! - each worker registers the engine's CPUs and memory as its capacity, and the engine's
//!   id as its host;
//! - a service's memory and CPU limits show in `docker inspect` of its container (with
//!   no extra swap), and a replica that allocates past its memory limit is reported
//!   `failed` with `OOM killed`;
//! - a slot's volume keeps what a replica wrote: after `docker stop` of its worker, the
//!   slot's replacement on another worker reads it back (`hello --state-file` counts
//!   its starts there); removing the service without its volumes keeps the volume, and
//!   the cluster's teardown removes it.
//!
//! Services are created by POSTing their JSON to the API, with the cluster's token.

mod common;

use std::time::Duration;

use common::docker::{docker, engine_or_skip, Teardown};
use common::setup_env::SetupEnv;
use common::{eventually, Api};
use mycluster_core::service::{Bytes, Cpus};
use mycluster_core::wire::{TaskDoc, TaskState, WorkerDoc};
use serde_json::{json, Value};

/// The demo image's entrypoint is `/mycluster`: a command is its arguments.
const DEMO: &str = "mycluster/hello-world";

async fn create(api: &Api, body: Value) {
    let reply = api.post("/api/v1/service", &body).await;
    assert_eq!(reply.status, 201, "{body}: {}", reply.body);
}

async fn tasks(api: &Api, service: &str) -> Vec<TaskDoc> {
    let listed = api.ok(&format!("/api/v1/tasks?service={service}")).await;
    serde_json::from_value(listed).expect("a task list")
}

/// The service's running task of `slot`, once there is one with an address.
async fn running(api: &Api, service: &str, slot: u32, not_on: Option<&str>) -> TaskDoc {
    eventually(&format!("{service}'s slot {slot} running"), || async {
        tasks(api, service).await.into_iter().find(|t| {
            t.slot == slot
                && t.state == TaskState::Running
                && t.address.is_some()
                && t.container_id.is_some()
                && t.worker.as_deref() != not_on
        })
    })
    .await
}

/// `GET /state` of a `hello --state-file` replica: its count, once it answers.
async fn state_of(task: &TaskDoc) -> u64 {
    let Some(address) = task.address else {
        panic!("{} has no address", task.id)
    };
    let url = format!("http://{address}:8000/state");
    let http = mycluster_client::reqwest_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    eventually(&format!("{url} to answer"), || async {
        let answer = http.get(&url).send().await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.text().await.ok()?.trim().parse().ok()
    })
    .await
}

fn volumes_of(cluster: &str) -> Vec<String> {
    docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=mycluster.cluster={cluster}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_show_in_docker_inspect_and_an_oom_kill_is_reported() {
    if !engine_or_skip("limits_show_in_docker_inspect_and_an_oom_kill_is_reported") {
        return;
    }
    let cluster = format!("limits{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let api = env.setup(&cluster, 2, &[]);

    // Every worker registered the engine's capacity and id.
    let info = docker(&["info", "--format", "{{.NCPU}} {{.MemTotal}} {{.ID}}"]);
    let workers: Vec<WorkerDoc> = eventually("2 workers registered", || async {
        let workers: Vec<WorkerDoc> =
            serde_json::from_value(api.ok("/api/v1/workers").await).expect("a worker list");
        (workers.len() == 2).then_some(workers)
    })
    .await;
    for worker in &workers {
        let said = format!(
            "{} {} {}",
            worker.resources.cpus.unwrap_or(Cpus(0)).0 / 1000,
            worker.resources.memory.unwrap_or(Bytes(0)).0,
            worker.host
        );
        assert_eq!(said, info, "{}", worker.worker);
    }

    // Limits reach the container: 64 MiB (and no swap on top), half a CPU.
    let limited = format!("lim{}", std::process::id());
    create(
        &api,
        json!({"service": limited, "image": DEMO, "replicas": 1,
            "resources": {"limits": {"memory": "64M", "cpus": 0.5}}}),
    )
    .await;
    let task = running(&api, &limited, 0, None).await;
    let container = task.container_id.expect("a container");
    let inspected = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.MemorySwap}}",
        &container,
    ]);
    assert_eq!(inspected, "67108864 500000000 67108864");

    // A replica that allocates 256 MiB under a 64 MiB limit: killed, and said so.
    let greedy = format!("oom{}", std::process::id());
    create(
        &api,
        json!({"service": greedy, "image": DEMO, "replicas": 1,
            "command": ["hello", "--allocate", "256M"],
            "resources": {"limits": {"memory": "64M"}}}),
    )
    .await;
    let killed = eventually("the greedy replica reported OOM killed", || async {
        tasks(&api, &greedy)
            .await
            .into_iter()
            .find(|t| t.state == TaskState::Failed)
    })
    .await;
    assert_eq!(killed.error.as_deref(), Some("OOM killed"), "{killed:?}");
    assert_eq!(killed.exit_code, Some(137), "{killed:?}");
    let container = killed.container_id.expect("a container");
    let oom = docker(&["inspect", "--format", "{{.State.OOMKilled}}", &container]);
    // The agent may have removed it already; if not, the engine agrees.
    assert!(oom.is_empty() || oom == "true", "{oom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slots_volume_keeps_its_data_for_the_replacement() {
    if !engine_or_skip("a_slots_volume_keeps_its_data_for_the_replacement") {
        return;
    }
    let cluster = format!("volumes{}", std::process::id());
    let teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let api = env.setup(&cluster, 3, &[]);

    let service = format!("vol{}", std::process::id());
    create(
        &api,
        json!({"service": service, "image": DEMO, "replicas": 1,
            "command": ["hello", "--state-file", "/data/count"],
            "volumes": [{"source": "data", "target": "/data"}]}),
    )
    .await;
    let first = running(&api, &service, 0, None).await;
    assert_eq!(state_of(&first).await, 1, "the first replica's first start");
    let volume = format!("{service}-data-0");
    let labels = docker(&["volume", "inspect", "--format", "{{json .Labels}}", &volume]);
    for wanted in [
        format!(r#""mycluster.cluster":"{cluster}""#),
        format!(r#""mycluster.service":"{service}""#),
        format!(r#""mycluster.volume":"{volume}""#),
        r#""mycluster.slot":"0""#.to_string(),
    ] {
        assert!(labels.contains(&wanted), "{wanted} missing in {labels}");
    }

    // Its worker stops: the slot's replacement, elsewhere, finds the volume's data.
    let worker = first.worker.clone().expect("a worker");
    docker(&["stop", &worker]);
    let second = running(&api, &service, 0, Some(&worker)).await;
    assert_ne!(second.id, first.id);
    assert_eq!(
        state_of(&second).await,
        2,
        "the replacement counted on from what the first replica wrote"
    );

    // Removed without its volumes: the volume stays.
    let reply = api
        .raw("DELETE", &format!("/api/v1/service/{service}"), None, None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("the replica stopped", || async {
        let running = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=mycluster.service={service}"),
        ]);
        running.is_empty().then_some(())
    })
    .await;
    assert!(
        volumes_of(&cluster).contains(&volume),
        "{volume} was removed with its service"
    );

    // The cluster's teardown removes it with everything else.
    drop(teardown);
    assert!(
        volumes_of(&cluster).is_empty(),
        "{:?}",
        volumes_of(&cluster)
    );
}
