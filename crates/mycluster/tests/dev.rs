//! `mycluster dev --workers 4` followed by the original README's commands, word for word:
//! stats, state, POST a 3-replica `crccheck/hello-world`, GET it — on the real Docker
//! engine, offline. Then Ctrl-C removes everything it started.

mod common;

use std::process::Command;
use std::time::Duration;

use common::dev::Dev;
use common::docker::{container_ip, containers, engine_or_skip, running, Cleanup};
use common::{Api, BIN, DEADLINE};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_walkthrough_against_mycluster_dev() {
    if !engine_or_skip("the_original_walkthrough_against_mycluster_dev") {
        return;
    }
    let cluster = format!("devtest{}", std::process::id());
    let _cleanup = Cleanup::new(&cluster);
    let config = tempfile::tempdir().unwrap();
    // Declared after the cleanup, so dropped first: a dev still running would recreate
    // the containers the cleanup removes.
    let mut dev = Dev::start(
        config.path(),
        &[
            "--workers",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--name",
            &cluster,
        ],
    );
    let url = dev.url.clone();
    // `mycluster token`: the token dev generated and saved (mode 0600) for the CLI.
    let token = Command::new(BIN)
        .arg("token")
        .env("MYCLUSTER_CONFIG_DIR", config.path())
        .output()
        .expect("mycluster token");
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
    assert_eq!(
        Api::with_token(&url, None)
            .get("/api/v1/state")
            .await
            .status,
        401
    );
    let api = Api::with_token(&url, Some(&token));
    common::eventually("4 workers", || async {
        let state = api.ok("/api/v1/state").await;
        (state["cluster.numOfWorkers"] == 4).then_some(())
    })
    .await;

    // curl ... /api/v1/stats
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["services.totalOfRequests"], 0);
    assert!(stats["cluster.upTime"]
        .as_str()
        .unwrap()
        .starts_with("0:00:"));

    // curl ... /api/v1/state
    let state = api.ok("/api/v1/state").await;
    assert_eq!(state["cluster.name"], cluster.as_str());
    let workers = state["cluster.workers"].as_array().unwrap();
    for (i, worker) in workers.iter().enumerate() {
        assert_eq!(worker["worker"], format!("{cluster}_worker_{}", i + 1));
        assert_eq!(worker["serviceInstances"], serde_json::json!([]));
    }
    assert_eq!(state["cluster.servicesDef"], serde_json::json!([]));

    // curl -H "Content-Type: application/json" -X POST -d '{...}' .../api/v1/service
    let reply = api
        .raw(
            "POST",
            "/api/v1/service",
            Some("application/json"),
            Some(common::ORIGINAL_POST.to_vec()),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    // As on the page: one running container on each of three workers, none on the fourth.
    let instances: Vec<Value> = reply.body["cluster.workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["serviceInstances"].clone())
        .collect();
    for instances in &instances[..3] {
        assert_eq!(
            instances[0]["image"], "crccheck/hello-world",
            "{}",
            reply.body
        );
        assert_eq!(instances[0]["numOfRunningContainers"], 1, "{}", reply.body);
    }
    assert_eq!(instances[3], serde_json::json!([]));
    let defs = &reply.body["cluster.servicesDef"][0];
    assert_eq!(defs["service"], "hello-world");
    assert_eq!(defs["replicas"], 3);

    // curl ... /api/v1/service/hello-world
    let service = api.ok("/api/v1/service/hello-world").await;
    let mut keys: Vec<&String> = service.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["image", "last_updated", "replicas", "service"]);
    assert_eq!(service["image"], "crccheck/hello-world");

    // A replica answers "Hello World" on port 8000.
    let (name, _) = running(&cluster)[0].clone();
    let ip = container_ip(&name);
    let hello = common::eventually("the replica to answer", || {
        let url = format!("http://{ip}:8000/");
        async move {
            let response = mycluster_client::reqwest_builder()
                .build()
                .unwrap()
                .get(&url)
                .send()
                .await
                .ok()?;
            response.text().await.ok()
        }
    })
    .await;
    assert!(hello.contains("Hello World"), "{hello}");

    // Ctrl-C: dev stops and removes its containers.
    let _ = Command::new("kill")
        .args(["-INT", &dev.child.id().to_string()])
        .status();
    let started = std::time::Instant::now();
    while dev.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "dev did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        containers(&cluster).is_empty(),
        "dev left containers behind"
    );
}
