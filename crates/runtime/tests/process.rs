//! Runs the runtime conformance suite against the process driver, plus what only it does.

mod conformance;

use conformance::{spec, Driver};
use mycluster_core::service::{Amount, Bytes, Cpus, Mount, MountKind};
use mycluster_runtime::{
    Container, ContainerRuntime, ContainerState, Identity, LogFiles, ProcessRuntime, RuntimeError,
    Supervisor, TaskSpec,
};

/// The runtime crate's own build of the supervisor (`mycluster supervise` in the binary).
fn supervisor() -> Supervisor {
    Supervisor::new(env!("CARGO_BIN_EXE_mycluster-supervise"), [""; 0])
}

struct Process;

#[async_trait::async_trait]
impl Driver for Process {
    async fn runtime(&self, identity: Identity) -> Box<dyn ContainerRuntime> {
        // Under the system's temporary directory, one per cluster and worker: each
        // task's files are removed with it.
        let logs = std::env::temp_dir().join(format!(
            "mycluster-test-logs-{}-{}",
            identity.cluster, identity.worker
        ));
        Box::new(
            ProcessRuntime::new(identity, supervisor())
                .with_stop_grace(conformance::DEFAULT_GRACE)
                .with_logs(LogFiles::new(logs)),
        )
    }

    fn long_running(&self, task_id: &str) -> TaskSpec {
        spec(task_id, None, Some(vec!["sleep", "300"]))
    }

    fn exiting(&self, task_id: &str, code: i64) -> Option<TaskSpec> {
        Some(spec(
            task_id,
            None,
            Some(vec!["sh", "-c", &format!("exit {code}")]),
        ))
    }

    fn printing(&self, task_id: &str, text: &str) -> Option<TaskSpec> {
        Some(spec(task_id, None, Some(vec!["echo", text])))
    }

    fn exec_printing(&self, code: i64) -> Option<Vec<String>> {
        // The spec's GREETING is "hello": the task's environment reaches the command.
        let script = format!("echo \"$GREETING\"; exit {code}");
        Some(["sh", "-c", &script].map(String::from).to_vec())
    }

    fn exec_hanging(&self) -> Option<Vec<String>> {
        Some(
            ["sh", "-c", "sleep 300; echo never"]
                .map(String::from)
                .to_vec(),
        )
    }

    fn ignoring_sigterm(&self, task_id: &str) -> Option<(TaskSpec, Vec<String>)> {
        // The mark file says the trap is set (an ignored signal stays ignored across
        // exec); the check removes it, so nothing is left behind.
        let mark = std::env::temp_dir().join(format!(
            "mycluster-stubborn-{}-{task_id}",
            std::process::id()
        ));
        let mut spec = spec(
            task_id,
            None,
            Some(vec![
                "sh",
                "-c",
                r#"trap "" TERM; : > "$READY"; exec sleep 300"#,
            ]),
        );
        spec.env
            .insert("READY".into(), mark.to_string_lossy().into_owned());
        Some((
            spec,
            ["sh", "-c", r#"rm "$READY""#].map(String::from).to_vec(),
        ))
    }

    fn limits_support(&self) -> Result<(), String> {
        mycluster_runtime::process_limits()
    }

    /// `memory.max` and `cpu.max` of the cgroup the task's process is in.
    async fn applied_limits(&self, container: &Container) -> Option<Amount> {
        let pid = container.id.trim_start_matches("pid-");
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("its cgroup");
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a cgroup v2 group");
        let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
        let memory = read("memory.max").trim().parse().ok().map(Bytes);
        let cpu = read("cpu.max");
        let mut parts = cpu.split_whitespace();
        let quota: Option<u64> = parts.next().and_then(|q| q.parse().ok());
        let period: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
        Some(Amount {
            cpus: quota.map(|q| Cpus(q * 1000 / period)),
            memory,
        })
    }

    /// A shell whose pipe holds the whole allocation in one line, then waits.
    fn allocating(&self, task_id: &str, mib: u64) -> Option<TaskSpec> {
        let script = format!("head -c {mib}m /dev/zero | tail -n 1 >/dev/null; exec sleep 300");
        Some(spec(task_id, None, Some(vec!["sh", "-c", &script])))
    }

    fn counting(&self, _task_id: &str, _path: &str) -> Option<TaskSpec> {
        None
    }

    fn writing(&self, _task_id: &str, _path: &str) -> Option<TaskSpec> {
        None
    }

    fn announces_exits(&self) -> bool {
        true
    }

    /// SIGKILL to the command (its supervisor then ends, as when it crashes).
    fn kill_from_outside(&self, container: &Container) -> bool {
        let Some(pid) = container
            .id
            .strip_prefix("pid-")
            .and_then(|p| p.parse().ok())
        else {
            return false;
        };
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
    }
}

runtime_suite!(Process);

#[test]
fn an_image_only_spec_is_refused_with_the_reason() {
    let runtime = ProcessRuntime::new(
        Identity {
            cluster: "c".into(),
            worker: "w".into(),
        },
        supervisor(),
    );
    match runtime.check(&spec("t", Some("redis"), None)) {
        Err(RuntimeError::Unsupported(why)) => assert!(why.contains("process driver"), "{why}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_program_fails_to_start_with_its_name() {
    let runtime = ProcessRuntime::new(
        Identity {
            cluster: Process.cluster("missing"),
            worker: "w".into(),
        },
        supervisor(),
    );
    let err = runtime
        .start(&spec("t", None, Some(vec!["/no/such/program"])))
        .await
        .expect_err("must fail");
    // The OS's reason, as users saw it before tasks had a supervisor.
    assert_eq!(
        err,
        RuntimeError::StartFailed(
            "cannot run '/no/such/program': No such file or directory (os error 2)".into()
        )
    );
    assert!(runtime.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn the_environment_and_labels_reach_the_process() {
    let runtime = ProcessRuntime::new(
        Identity {
            cluster: Process.cluster("env"),
            worker: "w".into(),
        },
        supervisor(),
    );
    let check = r#"[ "$GREETING" = hello ] && [ -n "$MYCLUSTER_TASK" ] && exit 7 || exit 1"#;
    runtime
        .start(&spec("t-env", None, Some(vec!["sh", "-c", check])))
        .await
        .expect("start");
    let started = std::time::Instant::now();
    loop {
        let list = runtime.list().await.unwrap();
        if let ContainerState::Exited { code, .. } = list[0].state {
            assert_eq!(code, 7, "GREETING and MYCLUSTER_TASK were set");
            break;
        }
        assert!(started.elapsed().as_secs() < 60);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_runtime_for_the_same_worker_kills_leftovers() {
    let identity = Identity {
        cluster: Process.cluster("leftovers"),
        worker: "w".into(),
    };
    let first = ProcessRuntime::new(identity.clone(), supervisor());
    let id = first
        .start(&Process.long_running("t-left"))
        .await
        .expect("start");
    let pid: i32 = id.trim_start_matches("pid-").parse().unwrap();
    // Forget the first runtime without stopping its child, as a crashed agent would.
    std::mem::forget(first);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let second = ProcessRuntime::new(identity, supervisor());
    // Nothing is killed until the new runtime is used.
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    second.list().await.expect("list");
    let started = std::time::Instant::now();
    // A killed child stays a zombie of this test process until reaped: check its state.
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "leftover {pid} still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn volumes_are_refused_with_the_reason() {
    let runtime = ProcessRuntime::new(
        Identity {
            cluster: "c".into(),
            worker: "w".into(),
        },
        supervisor(),
    );
    let mut task = Process.long_running("t");
    task.mounts = vec![Mount {
        kind: MountKind::Volume,
        source: "web-data-0".into(),
        target: "/data".into(),
        read_only: false,
    }];
    match runtime.check(&task) {
        Err(RuntimeError::Unsupported(why)) => {
            assert!(
                why.contains("the process driver cannot mount volumes"),
                "{why}"
            );
            assert!(why.contains("web-data-0 at /data"), "{why}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// What this host allows the process driver, printed for the record (`--nocapture`),
/// and the same reason in a refusal.
#[test]
fn limits_need_a_delegated_cgroup_v2_tree() {
    let runtime = ProcessRuntime::new(
        Identity {
            cluster: "c".into(),
            worker: "w".into(),
        },
        supervisor(),
    );
    let mut task = Process.long_running("t");
    task.resources.limits.memory = Some(Bytes(64 << 20));
    match mycluster_runtime::process_limits() {
        Ok(()) => {
            eprintln!("this host lets the process driver enforce limits");
            assert_eq!(runtime.check(&task), Ok(()));
        }
        Err(why) => {
            eprintln!("{why}");
            assert!(
                why.contains("run the agent with a delegated cgroup v2 tree"),
                "{why}"
            );
            assert_eq!(runtime.check(&task), Err(RuntimeError::Unsupported(why)));
        }
    }
}
