//! `mycluster logs`: every replica's lines, merged by the manager from the agents and
//! prefixed `<service>.<slot>@<worker> | `, followed as they are written (`-f`), with
//! `--tail` and `--since`; for process-driver workers (their agents' log files) and for
//! docker-driver workers of a `setup` cluster (the engine's logs). An agent's logs
//! endpoint refuses a caller without its join token.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::docker::{engine_or_skip, Teardown};
use common::setup_env::SetupEnv;
use common::{cli, eventually, Agent, Manager, BIN, DEADLINE, TEST_JOIN_TOKEN, TEST_TOKEN};
use serde_json::json;

/// `mycluster logs ARGS` running, its stdout read line by line; killed when dropped.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(mut command: Command) -> Follower {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run mycluster logs");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Reads lines until `done` says so of all read; every line read.
    fn until(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut read = Vec::new();
        while !done(&read) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => read.push(line),
                Err(_) => panic!("timed out waiting for {what}; read:\n{}", read.join("\n")),
            }
        }
        read
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replica (`svc.slot@worker`) and text of a merged line.
fn split(line: &str) -> Option<(&str, &str)> {
    line.split_once(" | ")
}

/// The counters each replica printed, by replica, in the order read.
fn counters(lines: &[String]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in lines {
        if let Some((replica, text)) = split(line) {
            let number = text.rsplit(' ').next().and_then(|n| n.parse().ok());
            if let (true, Some(n)) = (text.contains("line "), number) {
                out.entry(replica.to_string()).or_default().push(n);
            }
        }
    }
    out
}

const COUNTER: &str = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_replicas_lines_are_merged_followed_tailed_and_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manager = Manager::start_unique(&dir.path().join("manager"), "logs");
    let data = |n: u32| dir.path().join(format!("agent{n}")).display().to_string();
    let (d1, d2) = (data(1), data(2));
    let agents = [
        Agent::start(&manager.url, "w1", "process", &["--data-dir", &d1]),
        Agent::start(&manager.url, "w2", "process", &["--data-dir", &d2]),
    ];
    common::ready_workers(&manager.api(), 2).await;
    let (code, out, err) = cli(
        &manager.url,
        &[
            "service",
            "create",
            "counter",
            "--replicas",
            "3",
            "--",
            "sh",
            "-c",
            COUNTER,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // Followed: lines of every replica, each replica's counting up as written.
    let mut command = Command::new(BIN);
    command
        .args(["logs", "counter", "-f"])
        .env("MYCLUSTER_MANAGER", &manager.url)
        .env("MYCLUSTER_TOKEN", TEST_TOKEN);
    let follower = Follower::start(command);
    let read = follower.until("lines of 3 replicas, each counting", |read| {
        let seen = counters(read);
        seen.len() == 3 && seen.values().all(|n| n.len() >= 3)
    });
    for (replica, numbers) in counters(&read) {
        assert!(
            replica.starts_with("counter.")
                && (replica.ends_with("@w1") || replica.ends_with("@w2")),
            "{replica}"
        );
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "{replica}: {numbers:?}"
        );
    }
    // Lines keep coming as they are written.
    let before = counters(&read);
    let later = follower.until("newer lines of every replica", |more| {
        let seen = counters(more);
        before.iter().all(|(replica, numbers)| {
            let last = numbers.last().copied().unwrap_or(0);
            seen.get(replica)
                .is_some_and(|n| n.iter().any(|x| *x > last + 2))
        })
    });
    assert!(!later.is_empty());
    drop(follower);

    // --tail 2: two lines of each replica, its latest.
    let (code, out, err) = cli(&manager.url, &["logs", "counter", "--tail", "2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<String> = out.lines().map(String::from).collect();
    let tailed = counters(&lines);
    assert_eq!(tailed.len(), 3, "{out}");
    assert!(
        tailed.values().all(|n| n.len() == 2 && n[1] == n[0] + 1),
        "{out}"
    );

    // --timestamps, then --since the time of one of them: that line and later ones only.
    let (code, out, err) = cli(&manager.url, &["logs", "counter", "--timestamps"]);
    assert_eq!(code, 0, "{err}");
    let stamped: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| split(l))
        .filter_map(|(replica, rest)| {
            let (time, text) = rest.split_once(' ')?;
            assert!(time.ends_with('Z') && time.contains('T'), "{rest}");
            Some((time.to_string(), format!("{replica} | {text}")))
        })
        .collect();
    assert!(stamped.len() > 9, "{out}");
    let (since, line) = stamped[stamped.len() / 2].clone();
    let (code, out, err) = cli(
        &manager.url,
        &["logs", "counter", "--timestamps", "--since", &since],
    );
    assert_eq!(code, 0, "{err}");
    let times: Vec<&str> = out
        .lines()
        .filter_map(|l| split(l).and_then(|(_, rest)| rest.split(' ').next()))
        .collect();
    assert!(
        times.iter().all(|t| *t >= since.as_str()),
        "since {since}:\n{out}"
    );
    let (replica, text) = split(&line).expect("a line");
    assert!(
        out.lines()
            .any(|l| l.starts_with(replica) && l.ends_with(text)),
        "{line} since its own time:\n{out}"
    );
    // A duration counts back from now: nothing older than the time before the request.
    let (code, out, err) = cli(
        &manager.url,
        &["logs", "counter", "--since", "1h", "--tail", "1"],
    );
    assert_eq!(
        (
            code,
            counters(&out.lines().map(String::from).collect::<Vec<_>>()).len()
        ),
        (0, 3),
        "{out}{err}"
    );

    // Bad requests: one line, a non-zero exit.
    let (code, _, err) = cli(&manager.url, &["logs", "counter", "--since", "soon"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--since") && err.trim().lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = cli(&manager.url, &["logs", "nothing-here"]);
    assert_ne!(code, 0);
    assert!(err.contains("nothing-here") && err.contains("404"), "{err}");
    // The same through the API: the error document, naming what was wrong.
    let api = manager.api();
    for (query, status, names) in [
        ("tail=ten", 400, "tail"),
        ("since=soon", 400, "since"),
        ("follow=maybe", 400, "follow"),
    ] {
        let reply = api
            .raw(
                "GET",
                &format!("/api/v1/service/counter/logs?{query}"),
                None,
                None,
            )
            .await;
        let error: mycluster_core::wire::ErrorDoc =
            serde_json::from_value(reply.body).expect("the error document");
        assert_eq!(
            (reply.status, error.code),
            (status, status),
            "{query}: {}",
            error.message
        );
        assert!(error.message.contains(names), "{query}: {}", error.message);
    }
    let reply = api
        .raw("GET", "/api/v1/service/nothing-here/logs", None, None)
        .await;
    assert_eq!(reply.status, 404, "{:?}", reply.body);

    // The agent's endpoint: closed without its token, open with it; health stays open.
    let address = agents[0].health_address().expect("the agent's address");
    let http = mycluster_client::reqwest_builder().build().unwrap();
    let tasks: Vec<mycluster_core::wire::TaskDoc> =
        serde_json::from_value(manager.api().ok("/api/v1/tasks?service=counter").await)
            .expect("tasks");
    let on_w1 = tasks
        .iter()
        .find(|t| t.worker.as_deref() == Some("w1"))
        .expect("a task on w1");
    let url = format!("http://{address}/tasks/{}/logs?tail=1", on_w1.id);
    let refused = http.get(&url).send().await.expect("request");
    assert_eq!(refused.status(), 401);
    let wrong = http
        .get(&url)
        .bearer_auth("not-the-join-token-at-all")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    // The join token no longer opens it once the worker has its credential: the hash
    // of that credential does (what the manager presents).
    let joined = http
        .get(&url)
        .bearer_auth(TEST_JOIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(joined.status(), 401);
    let credential = std::fs::read_to_string(std::path::Path::new(&d1).join("credential"))
        .expect("w1's credential in its data dir");
    let taken = http
        .get(&url)
        .bearer_auth(mycluster_client::credential::hash(credential.trim()))
        .send()
        .await
        .expect("request");
    assert_eq!(taken.status(), 200);
    let line: mycluster_core::wire::LogLineDoc =
        serde_json::from_str(taken.text().await.expect("body").trim()).expect("one line document");
    assert!(line.text.starts_with("line "), "{line:?}");
    let health = http
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);

    // Logs are removed with their task: scaled to one, the removed tasks' files go.
    let (code, out, err) = cli(&manager.url, &["service", "scale", "counter", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    eventually("the stopped replicas' log files removed", || async {
        let dirs = |d: &str| {
            std::fs::read_dir(std::path::Path::new(d).join("logs"))
                .map(|e| e.count())
                .unwrap_or(0)
        };
        (dirs(&d1) + dirs(&d2) == 1).then_some(())
    })
    .await;
    drop(agents);
}

/// A `setup` cluster's docker workers: the engine's logs of each replica, stderr
/// included, merged and followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_replicas_lines_all_appear() {
    if !engine_or_skip("docker_replicas_lines_all_appear") {
        return;
    }
    let cluster = format!("logs{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let api = env.setup(&cluster, 2, &[]);
    // `hello --allocate` says on stderr what it holds, once, as it starts.
    let service = format!("talk{}", std::process::id());
    let body = json!({"service": service, "image": "mycluster/hello-world", "replicas": 3,
        "command": ["hello", "--allocate", "1M"]});
    let reply = api.post("/api/v1/service", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    let mut command = Command::new(BIN);
    command
        .args(["logs", &service, "--follow", "--timestamps"])
        .env("MYCLUSTER_CONFIG_DIR", env.config.path())
        .env("MYCLUSTER_PORT", "0")
        .env_remove("MYCLUSTER_MANAGER")
        .env_remove("MYCLUSTER_TOKEN");
    let follower = Follower::start(command);
    let read = follower.until("a line of each of the 3 replicas", |read| {
        let replicas: BTreeSet<&str> = read
            .iter()
            .filter(|l| l.contains("holding 1 MiB"))
            .filter_map(|l| split(l).map(|(r, _)| r))
            .collect();
        replicas.len() == 3
    });
    let workers: BTreeSet<&str> = read
        .iter()
        .filter_map(|l| {
            split(l)
                .and_then(|(r, _)| r.split_once('@'))
                .map(|(_, w)| w)
        })
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "spread over both workers:\n{}",
        read.join("\n")
    );
    drop(follower);
    // Without following: the same lines, and the command ends.
    let printed = env.ok(&["logs", &service]);
    let replicas: BTreeSet<&str> = printed
        .lines()
        .filter(|l| l.contains("holding 1 MiB"))
        .filter_map(|l| split(l).map(|(r, _)| r))
        .collect();
    assert_eq!(replicas.len(), 3, "{printed}");
}
