//! Batch work end to end: `mycluster dev` on the process driver, and `mycluster service
//! create` of a `--restart-condition none` service of 3 replicas whose command exits 0.
//! The create returns (exit 0) once every slot ran or completed, the service ends with 3
//! `complete` tasks and none running (and stays so), and `service ps` shows them done.

mod common;

use std::process::Command;
use std::time::Duration;

use common::dev::Dev;
use common::{Api, BIN, DEADLINE};
use mycluster_core::wire::{TaskDoc, TaskState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_none_batch_of_three_ends_with_three_complete_tasks() {
    let cluster = format!("batch{}", std::process::id());
    let config = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(
        config.path(),
        &[
            "--driver",
            "process",
            "--workers",
            "3",
            "--no-ingress",
            "--listen",
            "127.0.0.1:0",
            "--name",
            &cluster,
        ],
    );
    let url = dev.url.clone();
    let url_for_cli = url.clone();
    // The CLI as an operator runs it: the token dev saved for that address.
    let dir = config.path().to_path_buf();
    let mycluster = move |args: &[&str]| run(&dir, &url_for_cli, args);
    let token = mycluster(&["token", "-n", &cluster]).1.trim().to_string();
    let api = Api::with_token(&url, Some(&token));
    common::ready_workers(&api, 3).await;

    let create = {
        let mycluster = mycluster.clone();
        tokio::task::spawn_blocking(move || {
            mycluster(&[
                "service",
                "create",
                "batch",
                "--replicas",
                "3",
                "--restart-condition",
                "none",
                "--wait",
                "120",
                "--",
                "sh",
                "-c",
                "exit 0",
            ])
        })
    };
    let (code, out, err) = tokio::time::timeout(DEADLINE * 3, create)
        .await
        .expect("service create returned")
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    // It answered once every slot ran or completed ("3 of 3 running" when it looked
    // before the jobs ended, "3/3 complete" after: either is a deployed batch).
    assert!(out.contains("Service batch deployed"), "{out}");

    let tasks: Vec<TaskDoc> = common::eventually("3 complete tasks", || async {
        let tasks: Vec<TaskDoc> =
            serde_json::from_value(api.ok("/api/v1/tasks?service=batch").await).unwrap();
        let complete = tasks
            .iter()
            .filter(|t| t.state == TaskState::Complete)
            .count();
        (complete == 3).then_some(tasks)
    })
    .await;
    assert!(
        tasks.iter().all(|t| t.state.is_terminal()),
        "none runs or is on its way: {tasks:?}"
    );
    // And it stays so: nothing is started again by the passes that follow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later: Vec<TaskDoc> =
        serde_json::from_value(api.ok("/api/v1/tasks?service=batch").await).unwrap();
    assert_eq!(later.len(), tasks.len(), "{later:?}");
    assert!(later.iter().all(|t| t.state.is_terminal()), "{later:?}");

    let (code, out, err) = mycluster(&["service", "ps", "batch"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches("complete (done)").count(),
        4,
        "3 rows and the summary: {out}"
    );
    assert!(out.contains("batch: 0 running, 3 complete (done)"), "{out}");

    // Ctrl-C: dev stops.
    let _ = Command::new("kill")
        .args(["-INT", &dev.child.id().to_string()])
        .status();
    let started = std::time::Instant::now();
    while dev.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "dev did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the CLI with the dev cluster's saved settings; (exit code, stdout, stderr).
fn run(config: &std::path::Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("MYCLUSTER_CONFIG_DIR", config)
        .env("MYCLUSTER_MANAGER", url)
        .env_remove("MYCLUSTER_TOKEN")
        .output()
        .expect("run mycluster");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
