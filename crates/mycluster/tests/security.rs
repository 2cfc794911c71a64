//! The doors, against the real binary: tokens (API, join, generated, from files,
//! refused when weak), `--insecure-no-auth`, and each limit a hostile client runs into —
//! every refusal a clear JSON error, none a crash.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{cli, eventually, Agent, Api, Manager, BIN, TEST_JOIN_TOKEN, TEST_TOKEN};
use serde_json::{json, Value};

/// `mycluster manager` on a free port for cluster `name`, with no token in its
/// environment: each test gives it what it is testing.
fn bare_manager(name: &str, data_dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command
        .args([
            "manager",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("MYCLUSTER_TOKEN")
        .env_remove("MYCLUSTER_JOIN_TOKEN");
    command
}

fn error_doc(reply: &common::Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["code"], status, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn every_endpoint_but_healthz_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let anonymous = Api::with_token(&manager.url, None);
    let wrong = Api::with_token(&manager.url, Some("not-the-token-0123456789"));
    let join = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));
    let spec = json!({"service": "web", "image": "nginx", "replicas": 1});

    assert_eq!(anonymous.get("/healthz").await.status, 200);
    for (method, path) in [
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/state"),
        ("GET", "/api/v1/services"),
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/workers"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/service/web"),
        ("DELETE", "/api/v1/service/web"),
        ("POST", "/api/v1/workers/w1/down"),
        ("POST", "/api/v1/workers/_down"),
        ("GET", "/no/such/endpoint"),
    ] {
        for client in [&anonymous, &wrong] {
            let reply = client.raw(method, path, None, None).await;
            error_doc(&reply, 401);
        }
        // The join token is for agents: an operator's endpoint refuses it.
        if path != "/no/such/endpoint" {
            error_doc(&join.raw(method, path, None, None).await, 403);
        }
    }
    error_doc(&anonymous.post("/api/v1/service", &spec).await, 401);
    error_doc(&join.post("/api/v1/service", &spec).await, 403);

    // The challenge header says how to authenticate.
    let response = mycluster_client::reqwest_builder()
        .build()
        .unwrap()
        .get(format!("{}/api/v1/stats", manager.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));

    // Nothing above changed anything.
    let api = manager.api();
    assert_eq!(api.ok("/api/v1/services").await, json!([]));
    assert_eq!(api.ok("/api/v1/stats").await["services.totalOfRequests"], 0);
    assert_eq!(api.post("/api/v1/service?wait=0", &spec).await.status, 201);
}

#[tokio::test]
async fn an_agent_with_a_wrong_join_token_never_becomes_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let mut impostor = std::process::Command::new(BIN);
    impostor
        .args(["agent", "--name", "impostor", "--driver", "sim"])
        .args(["--listen", "127.0.0.1:0", "--cluster", "test"])
        .env("MYCLUSTER_MANAGER", &manager.url)
        .env("MYCLUSTER_JOIN_TOKEN", "wrong-join-token-0123456789")
        .env_remove("MYCLUSTER_TOKEN");
    let (mut impostor, log) = common::spawn_logged(impostor, |_| {});
    let refused = eventually("the impostor to be refused", || {
        let log = log.clone();
        async move {
            let text = log.lock().unwrap().join("\n");
            text.contains("cannot register").then_some(text)
        }
    })
    .await;
    assert!(
        refused.contains("401"),
        "the agent says it was refused:\n{refused}"
    );
    assert!(
        refused.contains("join token"),
        "and hints at why:\n{refused}"
    );
    // A good agent joins meanwhile, and the impostor is still not among the workers.
    let good = Agent::start(&manager.url, "good", "sim", &["--cluster", "test"]);
    common::ready_workers(&api, 1).await;
    let _ = impostor.kill();
    let _ = impostor.wait();
    let workers = api.ok("/api/v1/workers").await;
    let names: Vec<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["worker"].as_str())
        .collect();
    assert_eq!(names, ["good"]);
    drop(good);
}

#[tokio::test]
async fn tokens_are_generated_once_kept_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || common::Manager::from_command(bare_manager("gen", &data));
    let manager = start();
    let api_token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let join_token = std::fs::read_to_string(data.join("join-token")).unwrap();
    for file in ["api-token", "join-token"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert_ne!(api_token, join_token);
    assert!(api_token.len() >= 32);
    let api = Api::with_token(&manager.url, Some(api_token.trim()));
    assert_eq!(api.get("/api/v1/stats").await.status, 200);
    assert!(manager.terminate());

    let manager = start();
    assert_eq!(
        std::fs::read_to_string(data.join("api-token")).unwrap(),
        api_token,
        "a restart keeps the token"
    );
    let api = Api::with_token(&manager.url, Some(api_token.trim()));
    assert_eq!(api.get("/api/v1/stats").await.status, 200);
}

#[tokio::test]
async fn token_files_and_weak_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-a-file-0123456789abcdef\n").unwrap();
    let mut command = bare_manager("files", &dir.path().join("data"));
    command.arg("--token-file").arg(&token_file);
    let manager = common::Manager::from_command(command);
    let api = Api::with_token(&manager.url, Some("from-a-file-0123456789abcdef"));
    assert_eq!(api.get("/api/v1/stats").await.status, 200);
    // The CLI reads the same file.
    let out = std::process::Command::new(BIN)
        .args(["stats", "--json", "--token-file"])
        .arg(&token_file)
        .env("MYCLUSTER_MANAGER", &manager.url)
        .env_remove("MYCLUSTER_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Without it, one line saying what is wrong, and a non-zero exit.
    let out = std::process::Command::new(BIN)
        .args(["stats"])
        .env("MYCLUSTER_MANAGER", &manager.url)
        .env("MYCLUSTER_CONFIG_DIR", dir.path())
        .env_remove("MYCLUSTER_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("401") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );

    for (env, value, expected) in [
        ("MYCLUSTER_TOKEN", "short", "too short"),
        (
            "MYCLUSTER_JOIN_TOKEN",
            "has spaces in this token",
            "printable ASCII",
        ),
    ] {
        let out = bare_manager("weak", &dir.path().join("weak"))
            .env(env, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env}={value} was accepted");
        assert!(stderr.contains(expected), "{stderr}");
    }
    let out = bare_manager("same", &dir.path().join("same"))
        .env("MYCLUSTER_TOKEN", TEST_TOKEN)
        .env("MYCLUSTER_JOIN_TOKEN", TEST_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must differ"));
}

#[tokio::test]
async fn insecure_no_auth_serves_everyone_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = bare_manager("open", dir.path());
    command.arg("--insecure-no-auth");
    let manager = common::Manager::from_command(command);
    let anonymous = Api::with_token(&manager.url, None);
    assert_eq!(anonymous.get("/api/v1/stats").await.status, 200);
    let log = manager.log_text();
    assert!(
        log.contains("WARN") && log.contains("authentication is OFF"),
        "{log}"
    );
    assert!(!dir.path().join("api-token").exists());
}

#[tokio::test]
async fn limits_answer_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(
        dir.path(),
        &[
            "--max-services",
            "2",
            "--max-total-replicas",
            "10",
            "--request-timeout",
            "1",
            "--max-body-bytes",
            "4096",
        ],
    );
    let api = manager.api();
    let spec = |name: &str, replicas: u32| json!({"service": name, "image": "nginx", "replicas": replicas});

    // Services and replicas in all.
    assert_eq!(
        api.post("/api/v1/service?wait=0", &spec("a", 5))
            .await
            .status,
        201
    );
    assert_eq!(
        api.post("/api/v1/service?wait=0", &spec("b", 5))
            .await
            .status,
        201
    );
    error_doc(
        &api.post("/api/v1/service?wait=0", &spec("c", 0)).await,
        409,
    );
    error_doc(
        &api.post("/api/v1/service?wait=0", &spec("b", 6)).await,
        409,
    );
    error_doc(
        &api.send_json("PATCH", "/api/v1/service/a", &json!({"replicas": 6}))
            .await,
        409,
    );
    assert_eq!(
        api.post("/api/v1/service?wait=0", &spec("b", 4))
            .await
            .status,
        201
    );

    // Body size.
    let big =
        json!({"service": "big", "image": "nginx", "replicas": 1, "env": {"X": "y".repeat(8000)}});
    error_doc(&api.post("/api/v1/service", &big).await, 413);

    // Header size: a JSON answer, not a dropped connection.
    let reply = mycluster_client::reqwest_builder()
        .build()
        .unwrap()
        .get(format!("{}/api/v1/stats", manager.url))
        .bearer_auth(TEST_TOKEN)
        .header("X-Padding", "p".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 431);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], 431);

    // A body that never arrives: the request times out with 408, the manager carries on.
    let address = manager.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /api/v1/service HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = [0u8; 512];
    let n = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":408"), "{answer}");
    assert_eq!(api.get("/api/v1/stats").await.status, 200);
    assert_eq!(
        api.ok("/api/v1/services").await.as_array().unwrap().len(),
        2,
        "nothing refused was stored"
    );

    // A cluster over a lowered limit can still shrink, and change what does not add.
    assert!(manager.terminate());
    let manager = Manager::start(dir.path(), &["--max-total-replicas", "6"]);
    let api = manager.api();
    let shrink = api
        .send_json("PATCH", "/api/v1/service/a", &json!({"replicas": 4}))
        .await;
    assert_eq!(shrink.status, 200, "{}", shrink.body);
    let image = api
        .send_json("PATCH", "/api/v1/service/b", &json!({"image": "redis"}))
        .await;
    assert_eq!(image.status, 200, "{}", image.body);
    error_doc(
        &api.send_json("PATCH", "/api/v1/service/a", &json!({"replicas": 5}))
            .await,
        409,
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let address = manager.url.trim_start_matches("http://").to_string();
    // Connects and never says a word: it must not hold a connection slot for ever.
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let mut buffer = [0u8; 16];
    let read = stream.read(&mut buffer);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the manager should have closed the silent connection: {read:?}"
    );
    assert_eq!(manager.api().get("/api/v1/stats").await.status, 200);
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let reply = manager.api().get("/api/v1/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("application/json"));
    assert!(reply.body["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn long_polls_are_capped_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--long-polls-per-client", "2"]);
    let api = manager.api();
    let joining = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));
    let registration = json!({"name": "w1", "address": "127.0.0.1:9", "driver": "sim"});
    let registered = joining.post("/api/v1/workers", &registration).await;
    assert_eq!(registered.status, 201);
    // The worker's agent speaks with the credential its registration answered.
    let credential = registered.body["credential"].as_str().unwrap().to_string();
    let join = Api::with_token(&manager.url, Some(&credential));
    let at = join.ok("/api/v1/workers/w1/tasks").await["index"]
        .as_u64()
        .unwrap();
    // Three at once from this client: two may wait, the third is told to come back
    // later. (Retried should the machine be so slow that they do not overlap.)
    let poll = format!("/api/v1/workers/w1/tasks?index={at}&wait=5s");
    let refused = eventually("a third concurrent long-poll to be refused", || {
        let polls: Vec<_> = (0..3)
            .map(|_| {
                let join = join.clone();
                let poll = poll.clone();
                tokio::spawn(async move { join.get(&poll).await })
            })
            .collect();
        async move {
            let mut replies = Vec::new();
            for poll in polls {
                replies.push(poll.await.unwrap());
            }
            assert!(replies.iter().all(|r| r.status == 200 || r.status == 429));
            assert!(replies.iter().filter(|r| r.status == 200).count() >= 2);
            replies.into_iter().find(|r| r.status == 429)
        }
    })
    .await;
    error_doc(&refused, 429);
    // Other requests of the same client still go through.
    assert_eq!(api.get("/api/v1/workers").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_token_is_printed_rotated_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    // `MCJT1-<CA digest>-<secret>`: the manager serves TLS (to other hosts).
    let secret_of = |token: &str| -> (String, String) {
        let rest = token.strip_prefix("MCJT1-").expect("an MCJT1 token");
        let (digest, secret) = rest.split_once('-').expect("digest-secret");
        (digest.to_string(), secret.to_string())
    };
    let (code, out, err) = cli(&manager.url, &["token", "--join"]);
    assert_eq!(code, 0, "{err}");
    let (digest, secret) = secret_of(out.trim());
    assert_eq!(digest.len(), 64, "{out}");
    assert_eq!(secret, TEST_JOIN_TOKEN);
    let (code, out, err) = cli(&manager.url, &["token", "--join", "--rotate"]);
    assert_eq!(code, 0, "{err}");
    let printed = out.trim().to_string();
    let (same_digest, rotated) = secret_of(&printed);
    assert_eq!(same_digest, digest, "the CA stays");
    assert_eq!(rotated.len(), 64, "{out}");
    assert!(err.contains("rotated"), "{err}");
    let worker = |name: &str| json!({"name": name, "address": "127.0.0.1:9", "driver": "sim"});
    let old = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));
    assert_eq!(old.post("/api/v1/workers", &worker("w1")).await.status, 401);
    // The rotated token wins over the environment's at the next start.
    assert!(manager.terminate());
    let manager = Manager::start(dir.path(), &[]);
    let old = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));
    assert_eq!(old.post("/api/v1/workers", &worker("w1")).await.status, 401);
    let new = Api::with_token(&manager.url, Some(&rotated));
    assert_eq!(new.post("/api/v1/workers", &worker("w1")).await.status, 201);
    let (_, out, _) = cli(&manager.url, &["token", "--join"]);
    assert_eq!(out.trim(), printed);
}
