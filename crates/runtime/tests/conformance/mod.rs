//! The container runtime conformance suite: what every driver must do, written once
//! against `ContainerRuntime`. A driver's test file implements `Driver` and calls
//! `runtime_suite!`. Resource limits and mounts are in `limits.rs`.

mod limits;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use limits::*;
use mycluster_core::service::Amount;
use mycluster_runtime::{
    Container, ContainerRuntime, ContainerState, ExecOutcome, Exit, Identity, LogLine, LogLines,
    LogOptions, OutputStream, RuntimeError, TaskSpec, EXEC_OUTPUT_LIMIT,
};

/// How the suite makes runtimes and specs of one driver.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// A runtime acting for `identity`.
    async fn runtime(&self, identity: Identity) -> Box<dyn ContainerRuntime>;
    /// A spec whose container runs until stopped.
    fn long_running(&self, task_id: &str) -> TaskSpec;
    /// A spec whose container exits by itself with `code`; `None` if the driver cannot
    /// run programs (sim).
    fn exiting(&self, task_id: &str, code: i64) -> Option<TaskSpec>;
    /// A command that prints "hello" (the spec's `GREETING`, where the driver can show
    /// that the task's environment reaches it) and exits with `code`; `None` if the
    /// driver runs no programs (sim: every exec succeeds).
    fn exec_printing(&self, code: i64) -> Option<Vec<String>>;
    /// A command that never ends by itself; `None` as above.
    fn exec_hanging(&self) -> Option<Vec<String>>;
    /// A spec whose container ignores SIGTERM (only SIGKILL ends it), and a command that
    /// succeeds, run in it, once it does; `None` if the driver runs no programs.
    fn ignoring_sigterm(&self, task_id: &str) -> Option<(TaskSpec, Vec<String>)>;
    /// Whether the driver can enforce resource limits on this host: `Err` with the
    /// reason its `check` must give when it cannot.
    fn limits_support(&self) -> Result<(), String>;
    /// The limits applied to a running container, as the engine or the kernel shows
    /// them (read apart from the runtime); `None` if the driver applies none (sim).
    async fn applied_limits(&self, container: &Container) -> Option<Amount>;
    /// A spec whose container allocates and touches `mib` MiB of memory, then waits;
    /// `None` if the driver runs no programs.
    fn allocating(&self, task_id: &str, mib: u64) -> Option<TaskSpec>;
    /// A spec whose container adds one to the number in file `path` (0 when missing),
    /// writes it back and exits with it; `None` if the driver mounts no volumes.
    fn counting(&self, task_id: &str, path: &str) -> Option<TaskSpec>;
    /// A spec whose container writes file `path` and exits 0, or 1 if it cannot; `None`
    /// if the driver mounts no volumes.
    fn writing(&self, task_id: &str, path: &str) -> Option<TaskSpec>;
    /// Whether the driver announces its containers' exits (`ContainerRuntime::exits`).
    fn announces_exits(&self) -> bool;
    /// Kills the container's main process from outside the runtime, as a crash or an
    /// operator would (`docker kill`; SIGKILL to the command); false if the driver runs
    /// nothing that could be killed (sim).
    fn kill_from_outside(&self, container: &Container) -> bool;
    /// A spec whose container prints `text` on its stdout and exits 0; `None` if the
    /// driver runs no programs (sim: it keeps no logs, and says so).
    fn printing(&self, task_id: &str, text: &str) -> Option<TaskSpec>;
    /// A unique cluster name per test, so parallel tests and runs never meet.
    fn cluster(&self, test: &str) -> String {
        format!("conformance-{test}-{}", std::process::id())
    }
}

#[macro_export]
macro_rules! runtime_suite {
    ($driver:expr) => {
        $crate::runtime_suite!(@cases $driver;
            a_started_container_is_listed_running,
            removed_containers_are_gone,
            exit_codes_are_reported,
            other_workers_containers_are_invisible,
            many_containers_start_and_stop,
            a_running_container_has_an_address,
            exec_runs_a_command_in_the_container,
            a_container_ignoring_sigterm_is_killed_after_the_grace_given,
            limits_are_applied_or_refused_with_the_reason,
            a_container_over_its_memory_limit_is_reported_oom_killed,
            a_volume_keeps_its_data_for_the_slots_next_container,
            a_read_only_mount_refuses_writes,
            a_container_killed_from_outside_is_announced,
            a_containers_output_is_in_its_logs_while_it_is_kept,
        );
    };
    (@cases $driver:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                conformance::$case(&$driver).await;
            }
        )*
    };
}

pub fn spec(task_id: &str, image: Option<&str>, command: Option<Vec<&str>>) -> TaskSpec {
    TaskSpec {
        task_id: task_id.into(),
        service: "conformance".into(),
        slot: 0,
        image: image.map(str::to_owned),
        command: command.map(|c| c.into_iter().map(str::to_owned).collect()),
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        resources: Default::default(),
        mounts: Vec::new(),
    }
}

pub(crate) fn identity<D: Driver>(driver: &D, test: &str, worker: &str) -> Identity {
    Identity {
        cluster: driver.cluster(test),
        worker: worker.into(),
    }
}

/// The grace of a stop that gives none, in the runtimes the suite makes: far longer than
/// any grace a case gives, so a case sees which of the two a stop used.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// Polls the runtime until `check` holds (generous deadline).
pub async fn wait_for(
    runtime: &dyn ContainerRuntime,
    what: &str,
    check: impl Fn(&[Container]) -> bool,
) -> Vec<Container> {
    let started = Instant::now();
    loop {
        let list = runtime.list().await.expect("list");
        if check(&list) {
            return list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes whatever a case left, even when it failed half-way.
pub(crate) async fn clean(runtime: &dyn ContainerRuntime) {
    for container in runtime.list().await.unwrap_or_default() {
        let _ = runtime.remove(&container, None).await;
    }
}

pub async fn a_started_container_is_listed_running<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "running", "w1")).await;
    let spec = driver.long_running("aaaa1111bbbb2222");
    runtime
        .check(&spec)
        .expect("the driver supports its own long-running spec");
    let id = runtime.start(&spec).await.expect("start");
    let list = wait_for(&*runtime, "running", |l| {
        l.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    clean(&*runtime).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    assert_eq!(list[0].task_id, "aaaa1111bbbb2222");
    assert_eq!(list[0].name, "conformance.0.aaaa1111");
}

pub async fn removed_containers_are_gone<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "removed", "w1")).await;
    runtime
        .start(&driver.long_running("t-remove-1"))
        .await
        .expect("start");
    let list = wait_for(&*runtime, "running", |l| l.len() == 1).await;
    runtime.remove(&list[0], None).await.expect("remove");
    let after = runtime.list().await.expect("list");
    // Removing again, or something already gone, is not an error.
    let again = runtime.remove(&list[0], None).await;
    clean(&*runtime).await;
    assert!(after.is_empty(), "{after:?}");
    assert!(again.is_ok(), "{again:?}");
}

pub async fn exit_codes_are_reported<D: Driver>(driver: &D) {
    let Some(spec) = driver.exiting("t-exit-3", 3) else {
        return; // This driver runs no programs.
    };
    let runtime = driver.runtime(identity(driver, "exit", "w1")).await;
    runtime.start(&spec).await.expect("start");
    let list = wait_for(&*runtime, "the exit", |l| {
        l.iter()
            .any(|c| matches!(c.state, ContainerState::Exited { .. }))
    })
    .await;
    clean(&*runtime).await;
    match &list[0].state {
        ContainerState::Exited { code, .. } => assert_eq!(*code, 3),
        other => panic!("expected an exit, got {other:?}"),
    }
}

/// A driver that announces exits announces a container killed from outside (the
/// announcement an agent acts on at once), and only its own worker's: another worker's
/// runtime of the same cluster hears nothing of it. One that does not announce says so.
pub async fn a_container_killed_from_outside_is_announced<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "announced", "w1")).await;
    let neighbour = driver.runtime(identity(driver, "announced", "w2")).await;
    let Some(mut exits) = runtime.exits() else {
        assert!(
            !driver.announces_exits(),
            "the driver should announce exits"
        );
        return;
    };
    assert!(driver.announces_exits(), "the driver announces exits");
    let mut theirs = neighbour.exits().expect("the same driver announces");
    let spec = driver.long_running("t-killed-1");
    runtime.start(&spec).await.expect("start");
    let list = wait_for(&*runtime, "running", |l| {
        l.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    assert!(driver.kill_from_outside(&list[0]), "killed");
    let heard = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match exits.recv().await {
                Ok(Exit::Ended { task_id, .. }) if task_id == "t-killed-1" => return Ok(()),
                // A reconnection's "look at everything", or another task: not this one.
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let after = runtime.list().await.expect("list");
    clean(&*runtime).await;
    assert_eq!(heard, Ok(Ok(())), "the kill was announced within a minute");
    assert!(
        matches!(after[0].state, ContainerState::Exited { .. }),
        "{after:?}"
    );
    // Whatever the neighbour heard, none of it was this exit.
    while let Ok(exit) = theirs.try_recv() {
        assert!(
            !matches!(&exit, Exit::Ended { task_id, .. } if task_id == "t-killed-1"),
            "another worker's runtime announced it: {exit:?}"
        );
    }
}

pub async fn other_workers_containers_are_invisible<D: Driver>(driver: &D) {
    let one = driver.runtime(identity(driver, "isolation", "w1")).await;
    let two = driver.runtime(identity(driver, "isolation", "w2")).await;
    one.start(&driver.long_running("t-iso-1"))
        .await
        .expect("start");
    two.start(&driver.long_running("t-iso-2"))
        .await
        .expect("start");
    let seen_by_one = wait_for(&*one, "w1's container", |l| l.len() == 1).await;
    let seen_by_two = wait_for(&*two, "w2's container", |l| l.len() == 1).await;
    clean(&*one).await;
    let two_after = two.list().await.expect("list");
    clean(&*two).await;
    assert_eq!(seen_by_one[0].task_id, "t-iso-1");
    assert_eq!(seen_by_two[0].task_id, "t-iso-2");
    assert_eq!(two_after.len(), 1, "removing w1's containers touched w2's");
}

pub async fn many_containers_start_and_stop<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "many", "w1")).await;
    for i in 0..8 {
        runtime
            .start(&driver.long_running(&format!("t-many-{i}")))
            .await
            .expect("start");
    }
    let list = wait_for(&*runtime, "8 running", |l| {
        l.len() == 8 && l.iter().all(|c| c.state == ContainerState::Running)
    })
    .await;
    let mut tasks: Vec<&str> = list.iter().map(|c| c.task_id.as_str()).collect();
    tasks.sort();
    clean(&*runtime).await;
    assert_eq!(tasks.len(), 8);
    assert!(runtime.list().await.expect("list").is_empty());
}

pub async fn a_running_container_has_an_address<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "address", "w1")).await;
    runtime
        .start(&driver.long_running("t-address-1"))
        .await
        .expect("start");
    let list = wait_for(&*runtime, "running", |l| {
        l.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    let address = runtime.address(&list[0]).await;
    runtime.remove(&list[0], None).await.expect("remove");
    let after = runtime.address(&list[0]).await;
    clean(&*runtime).await;
    let ip = address
        .expect("address")
        .expect("a running container has an address");
    assert!(!ip.is_unspecified(), "{ip}");
    assert_eq!(after, Ok(None), "a removed container has no address");
}

pub async fn exec_runs_a_command_in_the_container<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "exec", "w1")).await;
    runtime
        .start(&driver.long_running("t-exec-1"))
        .await
        .expect("start");
    let list = wait_for(&*runtime, "running", |l| {
        l.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    let container = &list[0];
    let long = Duration::from_secs(30);
    let printing = driver.exec_printing(3);
    let printed = match &printing {
        Some(argv) => runtime.exec(container, argv, long).await,
        None => runtime.exec(container, &["true".to_string()], long).await,
    };
    let hanging = match driver.exec_hanging() {
        Some(argv) => {
            let started = Instant::now();
            let result = runtime
                .exec(container, &argv, Duration::from_millis(300))
                .await;
            Some((result, started.elapsed()))
        }
        None => None,
    };
    runtime.remove(container, None).await.expect("remove");
    let gone = runtime.exec(container, &["true".to_string()], long).await;
    clean(&*runtime).await;

    let printed = printed.expect("exec");
    if printing.is_some() {
        assert_eq!(printed.code, 3, "{printed:?}");
        assert_eq!(printed.output, "hello");
        assert!(printed.output.len() <= EXEC_OUTPUT_LIMIT);
    } else {
        assert_eq!(printed.code, 0, "{printed:?}");
    }
    if let Some((result, took)) = hanging {
        assert!(
            matches!(result, Err(RuntimeError::TimedOut(_))),
            "{result:?}"
        );
        assert!(took < Duration::from_secs(20), "the timeout held: {took:?}");
    }
    assert!(gone.is_err(), "exec in a removed container: {gone:?}");
}

pub async fn a_container_ignoring_sigterm_is_killed_after_the_grace_given<D: Driver>(driver: &D) {
    let Some((spec, ready)) = driver.ignoring_sigterm("t-stubborn-1") else {
        return; // This driver runs no programs.
    };
    let runtime = driver.runtime(identity(driver, "grace", "w1")).await;
    runtime.start(&spec).await.expect("start");
    let list = wait_for(&*runtime, "running", |l| {
        l.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    let container = list[0].clone();
    // A SIGTERM sent before it set itself to ignore it would end it at once.
    let started = Instant::now();
    loop {
        let outcome = runtime
            .exec(&container, &ready, Duration::from_secs(30))
            .await;
        if matches!(outcome, Ok(ExecOutcome { code: 0, .. })) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "it never said it ignores SIGTERM: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grace = Duration::from_secs(1);
    let stopping = Instant::now();
    let removed = runtime.remove(&container, Some(grace)).await;
    let took = stopping.elapsed();
    let after = runtime.list().await.expect("list");
    clean(&*runtime).await;
    removed.expect("remove");
    assert!(after.is_empty(), "killed and removed: {after:?}");
    // It ignored the SIGTERM: only the SIGKILL at the end of the grace ended it...
    assert!(took >= grace, "stopped after {took:?}, before its grace");
    // ...the grace given, not the runtime's default.
    assert!(
        took < DEFAULT_GRACE / 3,
        "stopped after {took:?}: the default grace ({DEFAULT_GRACE:?}), not the one given"
    );
}

/// Every line of a logs answer, or the error that ended it.
pub async fn collect(answer: Result<LogLines, RuntimeError>) -> Result<Vec<LogLine>, RuntimeError> {
    let mut lines = answer?;
    let mut out = Vec::new();
    while let Some(line) = lines.recv().await {
        out.push(line?);
    }
    Ok(out)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub async fn a_containers_output_is_in_its_logs_while_it_is_kept<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "logs", "w1")).await;
    let runtime = runtime.as_ref();
    let Some(spec) = driver.printing("t-logs", "hello logs") else {
        runtime
            .start(&driver.long_running("t-logs"))
            .await
            .expect("start");
        let list = runtime.list().await.expect("list");
        let answer = runtime.logs(&list[0], &LogOptions::default()).await;
        assert!(
            matches!(&answer, Err(RuntimeError::Unsupported(why)) if why.contains("keeps no logs")),
            "a driver without logs says so: {:?}",
            answer.err()
        );
        clean(runtime).await;
        return;
    };
    // Clocks of an engine and of this host may differ a little.
    let before = now_nanos().saturating_sub(5_000_000_000);
    runtime.start(&spec).await.expect("start");
    let list = wait_for(runtime, "the printing container to exit", |list| {
        list.iter()
            .any(|c| c.task_id == "t-logs" && matches!(c.state, ContainerState::Exited { .. }))
    })
    .await;
    let container = list
        .iter()
        .find(|c| c.task_id == "t-logs")
        .expect("listed")
        .clone();
    // Following an exited container's logs gives what it wrote, then ends.
    let follow = LogOptions {
        follow: true,
        ..LogOptions::default()
    };
    let lines = collect(runtime.logs(&container, &follow).await)
        .await
        .expect("logs");
    let after = now_nanos() + 5_000_000_000;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].text, "hello logs");
    assert_eq!(lines[0].stream, OutputStream::Stdout);
    assert!((before..after).contains(&lines[0].time), "{lines:?}");
    // Without follow too; and nothing after it.
    let lines = collect(runtime.logs(&container, &LogOptions::default()).await)
        .await
        .expect("logs");
    assert_eq!(
        lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["hello logs"]
    );
    let later = LogOptions {
        since: Some(lines[0].time + 1),
        ..LogOptions::default()
    };
    assert_eq!(
        collect(runtime.logs(&container, &later).await)
            .await
            .expect("logs"),
        []
    );
    let none = LogOptions {
        tail: Some(0),
        ..LogOptions::default()
    };
    assert_eq!(
        collect(runtime.logs(&container, &none).await)
            .await
            .expect("logs"),
        []
    );
    // Removed, its logs are gone with it.
    runtime.remove(&container, None).await.expect("remove");
    let gone = collect(runtime.logs(&container, &LogOptions::default()).await).await;
    assert!(
        matches!(gone, Err(RuntimeError::NotFound(_))),
        "the logs of a removed container: {gone:?}"
    );
    clean(runtime).await;
}
