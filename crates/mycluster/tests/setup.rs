//! The original README, step by step, against `cluster/setupCluster.sh` and
//! `manageCluster.sh` on the real Docker engine (offline): set up 4 workers, see them in
//! `docker ps`, query stats and state, POST hello-world ×3, reach a replica on port 8000,
//! `docker stop` a worker and read the monitor's log, then stop, up, ps and rm — after
//! which nothing of the cluster is left, even when the test fails half-way.

mod common;
#[path = "../../store/tests/support/redis_server.rs"]
mod redis_server;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::docker::{container_ip, docker, engine_or_skip, Teardown};
use common::{eventually, Api, BIN};
use serde_json::{json, Value};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../cluster")
        .join(name)
}

struct Env {
    config: tempfile::TempDir,
    /// `embedded` or `redis`.
    store: &'static str,
}

impl Env {
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        let output = Command::new(program)
            .args(args)
            .env("MYCLUSTER_BIN", BIN)
            .env("MYCLUSTER_CONFIG_DIR", self.config.path())
            .env("MYCLUSTER_PORT", "0")
            .env("MYCLUSTER_TLS_PORT", "0")
            .env("MYCLUSTER_SETUP_STORE", self.store)
            .env_remove("MYCLUSTER_MANAGER")
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{} {args:?} failed:\n{}\n{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn manager_url(&self, cluster: &str) -> String {
        let path = self
            .config
            .path()
            .join("clusters")
            .join(format!("{cluster}.json"));
        let settings: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        format!("http://127.0.0.1:{}", settings["port"])
    }

    /// The CLI as an operator runs it after setup: the cluster and its token found in
    /// the saved settings. Returns whether it succeeded, and what it printed.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new(BIN)
            .args(args)
            .env("MYCLUSTER_CONFIG_DIR", self.config.path())
            .env_remove("MYCLUSTER_MANAGER")
            .env_remove("MYCLUSTER_TOKEN")
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    }

    /// `mycluster token -n <cluster>`: what an operator pastes into curl.
    fn token(&self, cluster: &str) -> String {
        let out = self.run(Path::new(BIN), &["token", "-n", cluster]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn running_names(cluster: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "ps",
        "--filter",
        &format!("label=mycluster.cluster={cluster}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_readme_step_by_step() {
    if !engine_or_skip("the_original_readme_step_by_step") {
        return;
    }
    walkthrough("embedded").await;
}

/// The same with the original's backend: `<name>_redis_1`, its image built from this
/// host's redis-server (no registry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_readme_step_by_step_on_redis() {
    if !engine_or_skip("the_original_readme_step_by_step_on_redis")
        || !redis_server::installed("the_original_readme_step_by_step_on_redis")
    {
        return;
    }
    walkthrough("redis").await;
}

async fn walkthrough(store: &'static str) {
    let cluster = format!("e2e{store}{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = Env {
        config: tempfile::tempdir().unwrap(),
        store,
    };

    // ./setupCluster.sh -cn test -s 4
    let out = env.run(&script("setupCluster.sh"), &["-cn", &cluster, "-s", "4"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("ready, 4 workers"), "{printed}");

    // docker ps: the cluster nodes, with the original's names.
    let names = running_names(&cluster);
    for expected in [
        "manager_1",
        "monitor_1",
        "worker_1",
        "worker_2",
        "worker_3",
        "worker_4",
    ] {
        assert!(
            names.contains(&format!("{cluster}_{expected}")),
            "{names:?}"
        );
    }
    // No Docker TCP port anywhere: only the API is published.
    let ports = docker(&[
        "ps",
        "--filter",
        &format!("label=mycluster.cluster={cluster}"),
        "--format",
        "{{.Ports}}",
    ]);
    assert!(
        !ports.contains("2375") && !ports.contains("2376"),
        "{ports}"
    );

    // The API is locked: setup made a token, saved it for its owner only, and gave the
    // workers the join token, never the API token.
    let settings_file = env
        .config
        .path()
        .join("clusters")
        .join(format!("{cluster}.json"));
    let mode = std::fs::metadata(&settings_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", settings_file.display());
    let token = env.token(&cluster);
    let anonymous = Api::with_token(&env.manager_url(&cluster), None);
    assert_eq!(anonymous.get("/api/v1/stats").await.status, 401);
    assert_eq!(anonymous.get("/healthz").await.status, 200);
    let worker_env = docker(&[
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        &format!("{cluster}_worker_1"),
    ]);
    assert!(!worker_env.contains(&token), "a worker holds the API token");
    assert!(worker_env.contains("MYCLUSTER_JOIN_TOKEN="), "{worker_env}");

    // The ingress serves published ports on this host: on the host's network, following
    // the API at its local port over TLS, with the join token only (which pins the CA).
    let ingress = format!("{cluster}_ingress_1");
    let made = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}} {{json .Config.Cmd}} {{index .Config.Labels \"mycluster.role\"}}",
        &ingress,
    ]);
    let api_port = env
        .manager_url(&cluster)
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        made,
        format!(r#"host ["ingress","--manager","https://127.0.0.1:{api_port}"] ingress"#)
    );
    let ingress_env = docker(&["inspect", "--format", "{{json .Config.Env}}", &ingress]);
    assert!(
        !ingress_env.contains(&token),
        "the ingress holds the API token"
    );
    assert!(
        ingress_env.contains("MYCLUSTER_JOIN_TOKEN=MCJT1-"),
        "{ingress_env}"
    );

    // Set up with port 0 (MYCLUSTER_PORT), the manager's port survives a restart of its
    // container, and the CLI still finds it.
    let port_before = env.manager_url(&cluster);
    docker(&["restart", &format!("{cluster}_manager_1")]);
    let stats = eventually("the CLI to reach the restarted manager", || async {
        let (ok, text) = env.cli(&["stats"]);
        ok.then_some(text)
    })
    .await;
    assert!(stats.contains("workers.failures"), "{stats}");
    assert_eq!(env.manager_url(&cluster), port_before);

    let api = Api::with_token(&env.manager_url(&cluster), Some(&token));
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["workers.failures"], 0);
    let state = api.ok("/api/v1/state").await;
    assert_eq!(state["cluster.name"], cluster.as_str());
    assert_eq!(state["cluster.numOfWorkers"], 4);

    // POST hello-world with 3 replicas: three workers run one each.
    let reply = api
        .raw(
            "POST",
            "/api/v1/service",
            Some("application/json"),
            Some(common::ORIGINAL_POST.to_vec()),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let per_worker = |state: &Value| -> Vec<u64> {
        state["cluster.workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                w["serviceInstances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["numOfRunningContainers"].as_u64().unwrap())
                    .sum()
            })
            .collect()
    };
    assert_eq!(per_worker(&reply.body), [1, 1, 1, 0], "{}", reply.body);
    let service = api.ok("/api/v1/service/hello-world").await;
    assert_eq!(service["replicas"], 3);
    if store == "redis" {
        // As in the original: the service definition is JSON in Redis.
        let redis = format!("{cluster}_redis_1");
        let ip = container_ip(&redis);
        let output = Command::new("redis-cli")
            .args([
                "-h",
                &ip,
                "GET",
                &format!("mycluster:{cluster}:services.hello-world"),
            ])
            .output()
            .expect("redis-cli");
        let stored: Value = serde_json::from_slice(&output.stdout).expect("JSON in Redis");
        assert_eq!(stored["spec"]["replicas"], 3);
    }

    // A replica answers "Hello World" on port 8000.
    let tasks = api.ok("/api/v1/tasks?service=hello-world").await;
    let container = tasks[0]["container_id"].as_str().unwrap().to_string();
    let ip = container_ip(&container);
    let hello = eventually("the replica to answer", || {
        let url = format!("http://{ip}:8000/");
        async move {
            mycluster_client::reqwest_builder()
                .build()
                .unwrap()
                .get(&url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
    })
    .await;
    assert!(hello.contains("Hello World"), "{hello}");

    // What `docker -H test_worker_1 ps` showed, from inside the manager container.
    let worker = tasks[0]["worker"].as_str().unwrap().to_string();
    let listed = docker(&[
        "exec",
        &format!("{cluster}_manager_1"),
        "/mycluster",
        "worker",
        "ps",
        &worker,
    ]);
    assert!(
        listed.contains("hello-world.") && listed.contains("running"),
        "{listed}"
    );

    // docker stop of the worker holding that replica.
    docker(&["stop", &worker]);
    let workload_names = |worker: &str| {
        docker(&[
            "ps",
            "--filter",
            &format!("label=mycluster.worker={worker}"),
            "--format",
            "{{.Names}}",
        ])
    };
    eventually("the stopped worker's containers to be gone", || async {
        workload_names(&worker).is_empty().then_some(())
    })
    .await;
    let state = eventually(
        "the worker down and 3 replicas running on the others",
        || async {
            let state = api.ok("/api/v1/state").await;
            let down = state["cluster.workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["worker"] == worker.as_str() && w["status"] == "down");
            (down && per_worker(&state).iter().sum::<u64>() == 3).then_some(state)
        },
    )
    .await;
    let down: Vec<&Value> = state["cluster.workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["worker"] == worker.as_str())
        .collect();
    assert_eq!(down[0]["status"], "down");
    assert_eq!(down[0]["serviceInstances"], json!([]));
    assert_eq!(api.ok("/api/v1/stats").await["workers.failures"], 1);
    let log = docker(&["logs", &format!("{cluster}_monitor_1")]);
    let log = log
        + &String::from_utf8_lossy(
            &Command::new("docker")
                .args(["logs", &format!("{cluster}_monitor_1")])
                .output()
                .unwrap()
                .stderr,
        );
    assert!(
        log.contains(&format!(
            "Worker {worker} was not found... relocating its services"
        )),
        "{log}"
    );

    // ./manageCluster.sh -c stop, then up: the cluster comes back with its state.
    env.run(&script("manageCluster.sh"), &["-c", "stop"]);
    assert!(
        running_names(&cluster).is_empty(),
        "{:?}",
        running_names(&cluster)
    );
    env.run(&script("manageCluster.sh"), &["-c", "up"]);
    let api = Api::with_token(&env.manager_url(&cluster), Some(&env.token(&cluster)));
    eventually("hello-world back at 3 running", || async {
        let reply = api.get("/api/v1/state").await;
        (reply.status == 200 && per_worker(&reply.body).iter().sum::<u64>() == 3).then_some(())
    })
    .await;
    assert_eq!(api.ok("/api/v1/service/hello-world").await["replicas"], 3);
    let ps = env.run(&script("manageCluster.sh"), &["-c", "ps"]);
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.contains(&format!("{cluster}_manager_1")) && ps.contains("Up"),
        "{ps}"
    );

    // ./manageCluster.sh -c rm: nothing of the cluster is left.
    env.run(&script("manageCluster.sh"), &["-c", "rm"]);
    let label = format!("label=mycluster.cluster={cluster}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker(&["network", "ls", "-q", "--filter", &label]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &label]), "");
}
