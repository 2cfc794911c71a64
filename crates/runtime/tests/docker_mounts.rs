//! What only the docker driver does with limits and mounts, beside the conformance
//! suite's cases (`docker.rs`): the engine's host facts, the labels of the volumes it
//! makes (and volumes of the same name that are not ours, left alone), and bind mounts.
//! Skipped when no engine answers, unless `CI=true`; every container and volume a test
//! makes is removed by label when it ends.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mycluster_runtime::{
    Container, ContainerRuntime, ContainerState, DockerOptions, DockerRuntime, Identity,
    RuntimeError, TaskSpec, LABEL_CLUSTER, LABEL_WORKER,
};
use support::{docker, docker_ready, test_image, unique, Cleanup, VolumeCleanup, TEST_OWNER_LABEL};

/// Removes the test's containers, then its volumes, when dropped (in this order: a
/// volume goes once no container uses it).
struct Guards {
    _containers: Cleanup,
    _volumes: VolumeCleanup,
}

/// A docker runtime of a cluster no other test or run uses, and what cleans up after it.
async fn runtime(test: &str) -> (DockerRuntime, Guards) {
    let identity = Identity {
        cluster: unique(&format!("docker-mounts-{test}")),
        worker: "w1".into(),
    };
    let guards = Guards {
        _containers: Cleanup::by_labels(&[
            (LABEL_CLUSTER, &identity.cluster),
            (LABEL_WORKER, &identity.worker),
        ]),
        _volumes: VolumeCleanup::by_label(LABEL_CLUSTER, &identity.cluster),
    };
    let runtime = DockerRuntime::connect(identity, DockerOptions::default())
        .await
        .expect("connect to the engine");
    (runtime, guards)
}

/// Task `task_id` of service `conformance` running the test image's `/prog args...`.
fn task_spec(task_id: &str, args: &[&str]) -> TaskSpec {
    TaskSpec {
        task_id: task_id.into(),
        service: "conformance".into(),
        slot: 0,
        image: Some(test_image()),
        command: Some(args.iter().map(|a| a.to_string()).collect()),
        env: BTreeMap::new(),
        resources: Default::default(),
        mounts: Vec::new(),
    }
}

fn long_running(task_id: &str) -> TaskSpec {
    task_spec(task_id, &["sleep"])
}

/// Polls the runtime until `check` holds (generous deadline).
async fn wait_for(
    runtime: &DockerRuntime,
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

/// The engine's host: its id, CPUs and memory, as `docker info` shows them.
#[tokio::test]
async fn the_host_is_the_engines() {
    if !docker_ready("the_host_is_the_engines") {
        return;
    }
    let (runtime, _guards) = runtime("host").await;
    let facts = runtime.host().await.expect("host");
    let info = docker(&["info", "--format", "{{.ID}} {{.NCPU}} {{.MemTotal}}"]).expect("info");
    let said = format!(
        "{} {} {}",
        facts.id,
        facts.cpus.map_or(0, |c| c.0 / 1000),
        facts.memory.map_or(0, |m| m.0)
    );
    assert_eq!(said, info);
}

/// A volume the driver makes carries the cluster's labels (what a teardown by label
/// finds), and the driver neither mounts nor removes a volume of that name that is not
/// its cluster's.
#[tokio::test]
async fn volumes_are_labelled_and_only_ours_are_touched() {
    if !docker_ready("volumes_are_labelled_and_only_ours_are_touched") {
        return;
    }
    let (runtime, _guards) = runtime("volume-labels").await;
    let identity = runtime.identity().clone();
    let ours = format!("{}-data-3", identity.cluster);
    let mut task = long_running("t-vol-labels");
    task.slot = 3;
    task.mounts = vec![mycluster_core::service::Mount {
        kind: mycluster_core::service::MountKind::Volume,
        source: ours.clone(),
        target: "/data".into(),
        read_only: false,
    }];
    runtime.start(&task).await.expect("start");
    let labels =
        docker(&["volume", "inspect", "--format", "{{json .Labels}}", &ours]).expect("inspect");
    for wanted in [
        format!(r#""mycluster.cluster":"{}""#, identity.cluster),
        r#""mycluster.service":"conformance""#.to_string(),
        format!(r#""mycluster.volume":"{ours}""#),
        r#""mycluster.slot":"3""#.to_string(),
    ] {
        assert!(labels.contains(&wanted), "{wanted} missing in {labels}");
    }

    let owner = unique("foreign-volume");
    let foreign = format!("{owner}-data-0");
    let _foreign_cleanup = VolumeCleanup::by_label(TEST_OWNER_LABEL, &owner);
    docker(&[
        "volume",
        "create",
        "--label",
        &format!("{TEST_OWNER_LABEL}={owner}"),
        &foreign,
    ])
    .expect("create a foreign volume");
    let mut intruder = long_running("t-vol-foreign");
    intruder.mounts = vec![mycluster_core::service::Mount {
        kind: mycluster_core::service::MountKind::Volume,
        source: foreign.clone(),
        target: "/data".into(),
        read_only: false,
    }];
    match runtime.start(&intruder).await {
        Err(RuntimeError::StartFailed(why)) => {
            assert!(
                why.contains(&foreign) && why.contains("left alone"),
                "{why}"
            )
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    let removed = runtime.remove_volume(&foreign).await;
    assert!(
        matches!(&removed, Err(RuntimeError::Unsupported(why)) if why.contains("left alone")),
        "{removed:?}"
    );
    assert!(
        docker(&["volume", "inspect", &foreign]).is_ok(),
        "the foreign volume was removed"
    );
}

/// Bind mounts of a host directory: written through when writable, refused when
/// read-only.
#[tokio::test]
async fn a_bind_mount_reaches_the_host_and_a_read_only_one_refuses_writes() {
    if !docker_ready("a_bind_mount_reaches_the_host_and_a_read_only_one_refuses_writes") {
        return;
    }
    let (runtime, _guards) = runtime("bind").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bind = |task: &str, read_only: bool| {
        let mut spec = task_spec(task, &["write", "/data/file"]);
        spec.mounts = vec![mycluster_core::service::Mount {
            kind: mycluster_core::service::MountKind::Bind,
            source: dir.path().to_string_lossy().into_owned(),
            target: "/data".into(),
            read_only,
        }];
        spec
    };
    runtime.start(&bind("bindro-t", true)).await.expect("start");
    let refused = wait_for(&runtime, "the read-only write", |l| {
        l.iter()
            .any(|c| matches!(c.state, ContainerState::Exited { .. }))
    })
    .await;
    assert!(!dir.path().join("file").exists());
    runtime
        .start(&bind("bindrw-t", false))
        .await
        .expect("start");
    let wrote = wait_for(&runtime, "the write", |l| {
        l.len() == 2
            && l.iter()
                .all(|c| matches!(c.state, ContainerState::Exited { .. }))
    })
    .await;
    let exit = |list: &[Container], task: &str| {
        list.iter()
            .find(|c| c.task_id == task)
            .map(|c| c.state.clone())
    };
    assert_eq!(
        exit(&refused, "bindro-t"),
        Some(ContainerState::Exited {
            code: 1,
            error: None
        })
    );
    assert_eq!(
        exit(&wrote, "bindrw-t"),
        Some(ContainerState::Exited {
            code: 0,
            error: None
        })
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("file")).expect("written on the host"),
        "written\n"
    );
}
