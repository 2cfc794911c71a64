//! Several hosts: a `setup` cluster, plus one more agent in a container of its own on a
//! Docker network of its own — another host, as far as the network goes — joined with
//! `mycluster join` through the manager's TLS port as published on the Docker host. It
//! registers (its own port published on the Docker host and given as `--advertise`, as
//! behind a NAT), runs replicas whose logs the manager reads from it over TLS, and when
//! it is killed they are replaced on the others.
//! From that network, only HTTPS answers: plain HTTP to the TLS port gets the 400 and
//! no data, HTTPS checked against the saved CA works, and the local port is not there.
//! Everything is labelled with the cluster and removed at the end, even on failure.

mod common;

use std::process::Command;

use common::docker::{docker, engine_or_skip, Teardown};
use common::eventually;
use common::setup_env::SetupEnv;
use serde_json::{json, Value};

/// `docker ARGS`: whether it succeeded, and what it printed (stdout, then stderr).
fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new("docker").args(args).output().expect("docker");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + String::from_utf8_lossy(&output.stderr).as_ref();
    (output.status.success(), text)
}

/// Running replicas per worker, and each worker's status, from the state document.
fn placement(state: &Value) -> Vec<(String, String, u64)> {
    state["cluster.workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            let running = w["serviceInstances"]
                .as_array()
                .map(|instances| {
                    instances
                        .iter()
                        .filter_map(|i| i["numOfRunningContainers"].as_u64())
                        .sum()
                })
                .unwrap_or(0);
            (
                w["worker"].as_str().unwrap_or_default().to_string(),
                w["status"].as_str().unwrap_or_default().to_string(),
                running,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_another_network_joins_over_tls_runs_replicas_and_fails_over() {
    if !engine_or_skip("an_agent_on_another_network_joins_over_tls") {
        return;
    }
    let cluster = format!("mh{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let api = env.setup(&cluster, 2, &[]);

    let settings: Value = serde_json::from_str(
        &std::fs::read_to_string(
            env.config
                .path()
                .join("clusters")
                .join(format!("{cluster}.json")),
        )
        .expect("settings"),
    )
    .expect("settings are JSON");
    let port = settings["port"].as_u64().expect("port").to_string();
    let tls_port = settings["tls_port"].as_u64().expect("tls port").to_string();
    let image = settings["image"].as_str().expect("image").to_string();
    let pin = settings["ca_sha256"]
        .as_str()
        .expect("the CA's digest")
        .to_string();
    assert_eq!(pin.len(), 64, "{pin}");

    // The join token as an operator copies it: `mycluster token --join` (a bare secret
    // from a CLI that predates MCJT1 tokens is given the CA's digest here).
    let join = env
        .ok(&["token", "--join", "-n", &cluster])
        .trim()
        .to_string();
    let join = match join.starts_with("MCJT1-") {
        true => join,
        false => format!("MCJT1-{pin}-{join}"),
    };
    let api_token = env.ok(&["token", "-n", &cluster]).trim().to_string();
    let ca = env
        .ok(&["token", "--ca", "-n", &cluster])
        .trim()
        .to_string();
    assert!(
        std::fs::read_to_string(&ca).is_ok_and(|pem| pem.contains("BEGIN CERTIFICATE")),
        "{ca}"
    );

    // Another "host": a network of its own; the Docker host is its gateway.
    let network = format!("{cluster}_remote");
    let label = format!("mycluster.cluster={cluster}");
    let (ok, text) = run(&["network", "create", "--label", &label, &network]);
    assert!(ok, "{text}");
    let gateway = docker(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
        &network,
    ]);
    assert!(!gateway.is_empty(), "no gateway for {network}");
    let remote = format!("{cluster}_remote_1");
    let agent_port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let manager = format!("https://{gateway}:{tls_port}");
    let (ok, text) = run(&[
        "run",
        "-d",
        "--name",
        &remote,
        "--label",
        &label,
        "--network",
        &network,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-p",
        &format!("{agent_port}:7000"),
        "-e",
        &format!("MYCLUSTER_JOIN_TOKEN={join}"),
        &image,
        "join",
        "--manager",
        &manager,
        "--name",
        &remote,
        "--driver",
        "docker",
        "--data-dir",
        "/data",
        // Its port published on the Docker host, as a host behind a NAT would: the
        // manager (its logs) and the monitor (its probes) reach it there.
        "--advertise",
        &format!("{gateway}:{agent_port}"),
    ]);
    assert!(ok, "docker run of the joining agent: {text}");
    eventually("the joined agent to be ready", || async {
        let state = api.ok("/api/v1/state").await;
        placement(&state)
            .iter()
            .any(|(w, status, _)| *w == remote && status == "ready")
            .then_some(())
    })
    .await;
    let (_, log) = run(&["logs", &remote]);
    assert!(log.contains("answers over TLS"), "{log}");

    // Replicas run on it too: 6 spread over 3 workers.
    let service = json!({"service": "web", "image": "mycluster/hello-world", "replicas": 6});
    let reply = api.post("/api/v1/service", &service).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    eventually("6 replicas running, some on the joined agent", || async {
        let placed = placement(&api.ok("/api/v1/state").await);
        let total: u64 = placed.iter().map(|(_, _, n)| n).sum();
        let remote_runs = placed.iter().any(|(w, _, n)| *w == remote && *n > 0);
        (total == 6 && remote_runs).then_some(())
    })
    .await;

    // Its replicas' logs come through the manager, which reads them from the joined
    // agent over TLS, pinned to the CA that agent registered.
    let from_joined = format!("@{remote} | hello: ");
    eventually(
        "the joined agent's replica lines in the service's logs",
        || async {
            let output = env.mycluster(&["logs", "web", "--tail", "5"]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            (output.status.success() && text.contains(&from_joined)).then_some(())
        },
    )
    .await;

    // From that network: the TLS port speaks HTTPS only, and the local port is not there.
    let from_remote = |args: &[&str]| {
        let mut all = vec![
            "run",
            "--rm",
            "--label",
            &label,
            "--network",
            &network,
            "-e",
        ];
        let token_env = format!("MYCLUSTER_TOKEN={api_token}");
        let mount = format!("{ca}:/ca.pem:ro");
        all.extend([token_env.as_str(), "-v", mount.as_str(), image.as_str()]);
        all.extend_from_slice(args);
        run(&all)
    };
    let plain = format!("http://{gateway}:{tls_port}");
    let (ok, text) = from_remote(&["--manager", &plain, "workers"]);
    assert!(!ok, "plain HTTP to the TLS port answered:\n{text}");
    assert!(text.contains("https"), "{text}");
    assert!(!text.contains(&remote), "plain HTTP got data:\n{text}");
    let (ok, text) = from_remote(&["--manager", &manager, "--cacert", "/ca.pem", "workers"]);
    assert!(ok && text.contains(&remote), "HTTPS with --cacert:\n{text}");
    let local = format!("http://{gateway}:{port}");
    let (ok, text) = from_remote(&["--manager", &local, "workers"]);
    assert!(!ok, "the local port answered another network:\n{text}");
    assert!(text.contains("cannot reach the manager"), "{text}");
    // curl --cacert checks names: the Docker host's name is in the certificate.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let curl = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &ca,
            "--resolve",
            &format!("{host}:{tls_port}:{gateway}"),
            "-H",
            &format!("Authorization: Bearer {api_token}"),
            &format!("https://{host}:{tls_port}/api/v1/stats"),
        ])
        .output();
    if let Ok(curl) = curl {
        let out = String::from_utf8_lossy(&curl.stdout).into_owned()
            + String::from_utf8_lossy(&curl.stderr).as_ref();
        assert!(
            curl.status.success() && out.contains("workers.failures"),
            "{out}"
        );
    }

    // The joined host dies: its replicas are replaced on the others.
    let (ok, text) = run(&["kill", &remote]);
    assert!(ok, "{text}");
    eventually(
        "the joined agent down and 6 replicas on the others",
        || async {
            let placed = placement(&api.ok("/api/v1/state").await);
            let down = placed
                .iter()
                .any(|(w, status, _)| *w == remote && status == "down");
            let elsewhere: u64 = placed
                .iter()
                .filter(|(w, _, _)| *w != remote)
                .map(|(_, _, n)| n)
                .sum();
            (down && elsewhere == 6).then_some(())
        },
    )
    .await;
}
