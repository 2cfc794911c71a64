//! Runs the runtime conformance suite against the docker driver and the engine on this
//! machine, plus what only the docker driver does. Skipped when no engine answers, unless
//! `CI=true`; every container and volume a test makes is removed by label when it ends.

mod conformance;
mod support;

use conformance::{spec, wait_for, Driver};
use std::net::IpAddr;
use std::time::Duration;

use mycluster_core::service::{Amount, Bytes, Cpus};
use mycluster_runtime::{
    Container, ContainerRuntime, ContainerState, DockerOptions, DockerRuntime, ExecOutcome, Exit,
    HostFacts, Identity, LogLines, LogOptions, RuntimeError, TaskSpec, LABEL_CLUSTER, LABEL_WORKER,
};
use support::{docker, docker_ready, test_image, unique, Cleanup, VolumeCleanup, TEST_OWNER_LABEL};

struct Docker;

#[async_trait::async_trait]
impl Driver for Docker {
    async fn runtime(&self, identity: Identity) -> Box<dyn ContainerRuntime> {
        let options = DockerOptions {
            stop_grace: conformance::DEFAULT_GRACE,
            ..DockerOptions::default()
        };
        Box::new(guarded(identity, options).await)
    }

    fn long_running(&self, task_id: &str) -> TaskSpec {
        spec(task_id, Some(&test_image()), Some(vec!["sleep"]))
    }

    fn exiting(&self, task_id: &str, code: i64) -> Option<TaskSpec> {
        let code = code.to_string();
        Some(spec(
            task_id,
            Some(&test_image()),
            Some(vec!["exit", &code]),
        ))
    }

    fn printing(&self, task_id: &str, text: &str) -> Option<TaskSpec> {
        Some(spec(
            task_id,
            Some(&test_image()),
            Some(vec!["say", "0", text]),
        ))
    }

    fn exec_printing(&self, code: i64) -> Option<Vec<String>> {
        Some(
            ["/prog", "say", &code.to_string(), "hello"]
                .map(String::from)
                .to_vec(),
        )
    }

    fn exec_hanging(&self) -> Option<Vec<String>> {
        Some(["/prog", "sleep"].map(String::from).to_vec())
    }

    fn ignoring_sigterm(&self, task_id: &str) -> Option<(TaskSpec, Vec<String>)> {
        // PID 1 of its container: a SIGTERM without a handler is ignored from the start.
        let spec = spec(task_id, Some(&test_image()), Some(vec!["stubborn"]));
        Some((spec, ["/prog", "exit", "0"].map(String::from).to_vec()))
    }

    fn limits_support(&self) -> Result<(), String> {
        Ok(())
    }

    /// `HostConfig.Memory` and `NanoCpus`, as `docker inspect` shows them.
    async fn applied_limits(&self, container: &Container) -> Option<Amount> {
        let engine = mycluster_runtime::connect_engine()
            .await
            .expect("connect to the engine");
        let inspected = engine
            .inspect_container(&container.id, None)
            .await
            .expect("inspect");
        let host = inspected.host_config.expect("a host config");
        assert_eq!(
            host.memory_swap, host.memory,
            "swap must not add to the memory limit"
        );
        Some(Amount {
            cpus: host
                .nano_cpus
                .filter(|n| *n > 0)
                .map(|n| Cpus(n as u64 / 1_000_000)),
            memory: host.memory.filter(|n| *n > 0).map(|n| Bytes(n as u64)),
        })
    }

    fn allocating(&self, task_id: &str, mib: u64) -> Option<TaskSpec> {
        let mib = mib.to_string();
        Some(spec(
            task_id,
            Some(&test_image()),
            Some(vec!["allocate", &mib]),
        ))
    }

    fn counting(&self, task_id: &str, path: &str) -> Option<TaskSpec> {
        Some(spec(
            task_id,
            Some(&test_image()),
            Some(vec!["count", path]),
        ))
    }

    fn writing(&self, task_id: &str, path: &str) -> Option<TaskSpec> {
        Some(spec(
            task_id,
            Some(&test_image()),
            Some(vec!["write", path]),
        ))
    }

    fn announces_exits(&self) -> bool {
        true
    }

    fn kill_from_outside(&self, container: &Container) -> bool {
        docker(&["kill", &container.id]).is_ok()
    }
}

// The suite takes an expression: this one leaves the test early when there is no engine.
runtime_suite!({
    if !docker_ready("docker conformance case") {
        return;
    }
    Docker
});

/// A docker runtime that removes its worker's containers, then its cluster's volumes,
/// when dropped, so a failing test leaves nothing behind.
struct Guarded {
    runtime: DockerRuntime,
    // Dropped in this order: a volume goes once no container uses it.
    _cleanup: Cleanup,
    _volumes: VolumeCleanup,
}

async fn guarded(identity: Identity, options: DockerOptions) -> Guarded {
    let cleanup = Cleanup::by_labels(&[
        (LABEL_CLUSTER, &identity.cluster),
        (LABEL_WORKER, &identity.worker),
    ]);
    let volumes = VolumeCleanup::by_label(LABEL_CLUSTER, &identity.cluster);
    let runtime = DockerRuntime::connect(identity, options)
        .await
        .expect("connect to the engine");
    Guarded {
        runtime,
        _cleanup: cleanup,
        _volumes: volumes,
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for Guarded {
    fn driver(&self) -> mycluster_core::Driver {
        self.runtime.driver()
    }

    fn check(&self, spec: &TaskSpec) -> Result<(), RuntimeError> {
        self.runtime.check(spec)
    }

    async fn start(&self, spec: &TaskSpec) -> Result<String, RuntimeError> {
        self.runtime.start(spec).await
    }

    async fn remove(
        &self,
        container: &Container,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        self.runtime.remove(container, grace).await
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        self.runtime.list().await
    }

    async fn address(&self, container: &Container) -> Result<Option<IpAddr>, RuntimeError> {
        self.runtime.address(container).await
    }

    async fn exec(
        &self,
        container: &Container,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.runtime.exec(container, argv, timeout).await
    }

    async fn host(&self) -> Result<HostFacts, RuntimeError> {
        self.runtime.host().await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.runtime.remove_volume(name).await
    }

    fn exits(&self) -> Option<tokio::sync::broadcast::Receiver<Exit>> {
        self.runtime.exits()
    }

    async fn logs(
        &self,
        container: &Container,
        options: &LogOptions,
    ) -> Result<LogLines, RuntimeError> {
        self.runtime.logs(container, options).await
    }
}

fn identity(test: &str) -> Identity {
    Identity {
        cluster: Docker.cluster(&format!("docker-{test}")),
        worker: "w1".into(),
    }
}

/// Starts a container the driver did not make, labelled only with a test-owner label.
fn start_foreign(name: &str, owner: &str) -> String {
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--label",
        &format!("{TEST_OWNER_LABEL}={owner}"),
        &test_image(),
        "sleep",
    ])
    .expect("docker run")
}

fn is_running(id: &str) -> bool {
    docker(&["inspect", "--format", "{{.State.Running}}", id]).as_deref() == Ok("true")
}

#[tokio::test]
async fn the_engine_is_available() {
    if !docker_ready("the_engine_is_available") {
        return;
    }
    assert!(DockerRuntime::available().await);
}

#[tokio::test]
async fn a_command_only_spec_is_refused_with_the_reason() {
    if !docker_ready("a_command_only_spec_is_refused_with_the_reason") {
        return;
    }
    let runtime = guarded(identity("unsupported"), DockerOptions::default()).await;
    let command_only = spec("t-cmd", None, Some(vec!["sleep", "300"]));
    match runtime.check(&command_only) {
        Err(RuntimeError::Unsupported(why)) => {
            assert!(why.contains("docker driver needs an image"), "{why}");
            assert!(why.contains("only a command"), "{why}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let started = runtime.start(&command_only).await;
    assert!(
        matches!(started, Err(RuntimeError::Unsupported(_))),
        "{started:?}"
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_unavailable_and_named() {
    if !docker_ready("an_image_that_cannot_be_pulled_is_unavailable_and_named") {
        return;
    }
    let runtime = guarded(identity("no-image"), DockerOptions::default()).await;
    let image = "mycluster-test/does-not-exist:1";
    match runtime
        .start(&spec("t-no-image", Some(image), Some(vec!["sleep"])))
        .await
    {
        Err(RuntimeError::ImageUnavailable(why)) => {
            assert!(why.contains(image), "{why}");
            assert!(why.contains("could not be pulled"), "{why}");
        }
        other => panic!("expected ImageUnavailable, got {other:?}"),
    }
    assert!(runtime.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn containers_without_our_labels_are_never_listed_or_touched() {
    if !docker_ready("containers_without_our_labels_are_never_listed_or_touched") {
        return;
    }
    let owner = unique("foreign");
    let _foreign_cleanup = Cleanup::by_label(TEST_OWNER_LABEL, &owner);
    let runtime = guarded(identity("foreign"), DockerOptions::default()).await;
    // It holds exactly the name our task's container would get.
    let mine = Docker.long_running("f0f0f0f0-task");
    let foreign = start_foreign(&mine.container_name(), &owner);

    let listed = runtime.list().await.expect("list");
    assert!(listed.is_empty(), "{listed:?}");

    match runtime.start(&mine).await {
        Err(RuntimeError::StartFailed(why)) => {
            assert!(why.contains(&mine.container_name()), "{why}");
            assert!(why.contains("left alone"), "{why}");
        }
        other => panic!("expected StartFailed on the taken name, got {other:?}"),
    }
    assert!(is_running(&foreign), "the foreign container was touched");

    let pretend = Container {
        task_id: mine.task_id.clone(),
        id: foreign.clone(),
        name: mine.container_name(),
        state: ContainerState::Running,
    };
    let removed = runtime.remove(&pretend, None).await;
    assert!(removed.is_err(), "{removed:?}");
    assert!(is_running(&foreign), "the foreign container was removed");
}

#[tokio::test]
async fn a_leftover_container_of_the_same_task_is_replaced() {
    if !docker_ready("a_leftover_container_of_the_same_task_is_replaced") {
        return;
    }
    let runtime = guarded(identity("leftover"), DockerOptions::default()).await;
    let task = Docker.long_running("l0l0l0l0-task");
    let first = runtime.start(&task).await.expect("first start");
    // As an agent that crashed after starting it and starts the task again would.
    let second = runtime.start(&task).await.expect("second start");
    assert_ne!(first, second);
    let list = runtime.list().await.expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].id, second);
    assert_eq!(list[0].state, ContainerState::Running);
    assert!(
        docker(&["inspect", &first]).is_err(),
        "the leftover remains"
    );
}

#[tokio::test]
async fn a_container_that_cannot_start_is_not_left_behind() {
    if !docker_ready("a_container_that_cannot_start_is_not_left_behind") {
        return;
    }
    let options = DockerOptions {
        network: Some(unique("mycluster-test-no-such-network")),
        ..DockerOptions::default()
    };
    let runtime = guarded(identity("no-start"), options).await;
    match runtime.start(&Docker.long_running("t-no-start")).await {
        Err(RuntimeError::StartFailed(why)) => assert!(why.contains("network"), "{why}"),
        other => panic!("expected StartFailed, got {other:?}"),
    }
    let list = runtime.list().await.expect("list");
    assert!(list.is_empty(), "{list:?}");
}

#[tokio::test]
async fn containers_are_labelled_as_this_workers_workloads() {
    if !docker_ready("containers_are_labelled_as_this_workers_workloads") {
        return;
    }
    let identity = identity("labels");
    let runtime = guarded(identity.clone(), DockerOptions::default()).await;
    let id = runtime
        .start(&Docker.long_running("t-labels"))
        .await
        .expect("start");
    let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", &id]).expect("inspect");
    for wanted in [
        format!(r#""mycluster.cluster":"{}""#, identity.cluster),
        r#""mycluster.role":"workload""#.to_string(),
        r#""mycluster.service":"conformance""#.to_string(),
        r#""mycluster.task":"t-labels""#.to_string(),
        r#""mycluster.worker":"w1""#.to_string(),
    ] {
        assert!(labels.contains(&wanted), "{wanted} missing in {labels}");
    }
}

#[tokio::test]
async fn the_environment_reaches_the_container() {
    if !docker_ready("the_environment_reaches_the_container") {
        return;
    }
    let runtime = guarded(identity("env"), DockerOptions::default()).await;
    let image = test_image();
    // `spec` sets GREETING=hello; the wrong value proves the check can fail.
    runtime
        .start(&spec(
            "t-env-right",
            Some(&image),
            Some(vec!["env", "GREETING", "hello"]),
        ))
        .await
        .expect("start");
    runtime
        .start(&spec(
            "t-env-wrong",
            Some(&image),
            Some(vec!["env", "GREETING", "bye"]),
        ))
        .await
        .expect("start");
    let list = wait_for(&runtime, "both exits", |l| {
        l.len() == 2
            && l.iter()
                .all(|c| matches!(c.state, ContainerState::Exited { .. }))
    })
    .await;
    let code = |task: &str| {
        list.iter()
            .find(|c| c.task_id == task)
            .map(|c| c.state.clone())
    };
    assert_eq!(
        code("t-env-right"),
        Some(ContainerState::Exited {
            code: 0,
            error: None
        })
    );
    assert_eq!(
        code("t-env-wrong"),
        Some(ContainerState::Exited {
            code: 1,
            error: None
        })
    );
}

#[tokio::test]
async fn stopping_the_pid_container_kills_its_workloads() {
    if !docker_ready("stopping_the_pid_container_kills_its_workloads") {
        return;
    }
    let identity = identity("pid");
    // The fake worker carries the cluster label (not the worker's), so the cluster-wide
    // cleanup takes it and the runtime never lists it.
    let _cluster_cleanup = Cleanup::by_label(LABEL_CLUSTER, &identity.cluster);
    let worker = unique("mycluster-test-worker");
    docker(&[
        "run",
        "-d",
        "--name",
        &worker,
        "--label",
        &format!("{LABEL_CLUSTER}={}", identity.cluster),
        &test_image(),
        "sleep",
    ])
    .expect("start the fake worker");
    let options = DockerOptions {
        pid_container: Some(worker.clone()),
        ..DockerOptions::default()
    };
    let runtime = guarded(identity, options).await;
    runtime
        .start(&Docker.long_running("t-pid"))
        .await
        .expect("start");
    wait_for(&runtime, "the workload running", |l| {
        l.len() == 1 && l[0].state == ContainerState::Running
    })
    .await;
    docker(&["stop", "-t", "10", &worker]).expect("stop the fake worker");
    let list = wait_for(&runtime, "the workload to die with its worker", |l| {
        l.len() == 1 && matches!(l[0].state, ContainerState::Exited { .. })
    })
    .await;
    assert_eq!(list[0].task_id, "t-pid");
}

/// The address is where this host reaches the container's ports: what HTTP and TCP health
/// checks connect to. (Containers on the default bridge are reachable from the host.)
#[tokio::test]
async fn the_address_reaches_the_containers_port() {
    if !docker_ready("the_address_reaches_the_containers_port") {
        return;
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = guarded(identity("address-port"), DockerOptions::default()).await;
    runtime
        .start(&spec(
            "t-serve",
            Some(&test_image()),
            Some(vec!["serve", "8000"]),
        ))
        .await
        .expect("start");
    let list = wait_for(&runtime, "running", |l| {
        l.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    let ip = runtime
        .address(&list[0])
        .await
        .expect("address")
        .expect("an address on the bridge");
    // The program may not listen yet: try until it answers.
    let started = std::time::Instant::now();
    let answer = loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect((ip, 8000)).await?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        match attempt.await {
            Ok(answer) => break answer,
            Err(e) if started.elapsed() > Duration::from_secs(60) => panic!("{ip}:8000: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer}");
}

/// Removes a test's network when dropped (after its containers: declare it first).
struct NetworkCleanup(String);

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0]);
    }
}

/// On a user-defined network each workload carries its service's name as an alias (what
/// the engine's DNS answers); on the default bridge, which has no DNS, none is asked for
/// (the engine would refuse the container).
#[tokio::test]
async fn workloads_carry_their_service_name_on_the_network() {
    if !docker_ready("workloads_carry_their_service_name_on_the_network") {
        return;
    }
    let network = unique("mycluster-test-net");
    let _network_cleanup = NetworkCleanup(network.clone());
    docker(&[
        "network",
        "create",
        "--label",
        &format!("{TEST_OWNER_LABEL}={network}"),
        &network,
    ])
    .expect("create the network");
    let options = DockerOptions {
        network: Some(network.clone()),
        ..DockerOptions::default()
    };
    let runtime = guarded(identity("aliases"), options).await;
    let id = runtime
        .start(&Docker.long_running("t-alias"))
        .await
        .expect("start");
    let format = format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}");
    let aliases = docker(&["inspect", "--format", &format, &id]).expect("inspect");
    assert!(aliases.contains(r#""conformance""#), "{aliases}");

    let on_bridge = guarded(identity("no-aliases"), DockerOptions::default()).await;
    on_bridge
        .start(&Docker.long_running("t-bridge"))
        .await
        .expect("a container on the default bridge starts without an alias");
}
