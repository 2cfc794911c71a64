//! The conformance cases of resource limits and mounts: limits are applied where the
//! driver can apply them, and refused before trying (with the reason) where it cannot; a
//! container over its memory limit is reported `OOM killed`; a slot's volume keeps what
//! one container wrote for the next; a read-only mount refuses writes.

use mycluster_core::service::{Amount, Bytes, Cpus, Mount, MountKind};
use mycluster_runtime::{Container, ContainerRuntime, ContainerState, RuntimeError};

use super::{clean, identity, wait_for, Driver};

fn limits() -> Amount {
    Amount {
        cpus: Some(Cpus(500)),
        memory: Some(Bytes(64 << 20)),
    }
}

/// A volume name no other test or run uses (the cluster's name is unique).
fn volume_name<D: Driver>(driver: &D, test: &str) -> String {
    format!("{}-data-0", driver.cluster(test))
}

fn mount(kind: MountKind, source: &str, read_only: bool) -> Mount {
    Mount {
        kind,
        source: source.into(),
        target: "/data".into(),
        read_only,
    }
}

/// How the container of `task` exited, once it did.
async fn exit_of(runtime: &dyn ContainerRuntime, task: &str) -> (i64, Option<String>) {
    let list = wait_for(runtime, &format!("{task} to exit"), |l| {
        l.iter()
            .any(|c| c.task_id == task && matches!(c.state, ContainerState::Exited { .. }))
    })
    .await;
    match list.iter().find(|c| c.task_id == task).map(|c| &c.state) {
        Some(ContainerState::Exited { code, error }) => (*code, error.clone()),
        other => panic!("{task}: expected an exit, got {other:?}"),
    }
}

fn container_of(list: &[Container], task: &str) -> Container {
    list.iter()
        .find(|c| c.task_id == task)
        .cloned()
        .unwrap_or_else(|| panic!("no container of {task} in {list:?}"))
}

pub async fn limits_are_applied_or_refused_with_the_reason<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "limits", "w1")).await;
    let mut spec = driver.long_running("t-limits-1");
    spec.resources.limits = limits();
    if let Err(why) = driver.limits_support() {
        let checked = runtime.check(&spec);
        let started = runtime.start(&spec).await;
        let left = runtime.list().await.expect("list");
        clean(&*runtime).await;
        assert_eq!(checked, Err(RuntimeError::Unsupported(why)));
        assert!(
            matches!(started, Err(RuntimeError::Unsupported(_))),
            "{started:?}"
        );
        assert!(left.is_empty(), "{left:?}");
        return;
    }
    runtime.check(&spec).expect("limits are supported");
    runtime.start(&spec).await.expect("start");
    let list = wait_for(&*runtime, "running", |l| {
        l.iter().any(|c| c.state == ContainerState::Running)
    })
    .await;
    let applied = driver.applied_limits(&list[0]).await;
    clean(&*runtime).await;
    if let Some(applied) = applied {
        assert_eq!(applied, limits());
    }
}

pub async fn a_container_over_its_memory_limit_is_reported_oom_killed<D: Driver>(driver: &D) {
    // Where limits are refused, the case above checks the refusal.
    if driver.limits_support().is_err() {
        return;
    }
    let (Some(mut over), Some(mut within)) = (
        driver.allocating("oomover-t", 256),
        driver.allocating("oomfits-t", 16),
    ) else {
        return; // This driver runs no programs.
    };
    over.resources.limits.memory = Some(Bytes(32 << 20));
    within.resources.limits.memory = Some(Bytes(256 << 20));
    let runtime = driver.runtime(identity(driver, "oom", "w1")).await;
    runtime.start(&within).await.expect("start");
    runtime.start(&over).await.expect("start");
    let (code, error) = exit_of(&*runtime, "oomover-t").await;
    let list = runtime.list().await.expect("list");
    clean(&*runtime).await;
    assert_eq!(error.as_deref(), Some("OOM killed"), "exit code {code}");
    // The same program within its limit runs on.
    assert_eq!(
        container_of(&list, "oomfits-t").state,
        ContainerState::Running
    );
}

pub async fn a_volume_keeps_its_data_for_the_slots_next_container<D: Driver>(driver: &D) {
    let runtime = driver.runtime(identity(driver, "volume", "w1")).await;
    let volume = volume_name(driver, "volume");
    let data = mount(MountKind::Volume, &volume, false);
    let Some(mut first) = driver.counting("count1-t", "/data/count") else {
        // Without volumes: refused before trying, or taken as a no-op (sim).
        let mut spec = driver.long_running("count1-t");
        spec.mounts = vec![data];
        match runtime.check(&spec) {
            Ok(()) => {}
            Err(RuntimeError::Unsupported(why)) => {
                assert!(why.contains("cannot mount volumes"), "{why}")
            }
            other => panic!("expected Ok or Unsupported, got {other:?}"),
        }
        assert_eq!(runtime.remove_volume(&volume).await, Ok(()));
        return;
    };
    first.mounts = vec![data.clone()];
    runtime.start(&first).await.expect("start");
    let first_exit = exit_of(&*runtime, "count1-t").await;
    // The slot's next container, once the first is gone: it reads what the first wrote.
    clean(&*runtime).await;
    let mut second = driver
        .counting("count2-t", "/data/count")
        .expect("counting");
    second.mounts = vec![data.clone()];
    runtime.start(&second).await.expect("start");
    let second_exit = exit_of(&*runtime, "count2-t").await;
    // A container that uses it keeps it: the error names the volume.
    let mut holder = driver.long_running("holder-t");
    holder.mounts = vec![data];
    runtime.start(&holder).await.expect("start");
    wait_for(&*runtime, "the holder running", |l| {
        l.iter()
            .any(|c| c.task_id == "holder-t" && c.state == ContainerState::Running)
    })
    .await;
    let in_use = runtime.remove_volume(&volume).await;
    clean(&*runtime).await;
    let removed = runtime.remove_volume(&volume).await;
    let again = runtime.remove_volume(&volume).await;
    assert_eq!(first_exit, (1, None));
    assert_eq!(second_exit, (2, None), "the second container counted on");
    match in_use {
        Err(RuntimeError::InUse(why)) => assert!(why.contains(&volume), "{why}"),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert_eq!(removed, Ok(()));
    assert_eq!(again, Ok(()), "gone already is fine");
}

pub async fn a_read_only_mount_refuses_writes<D: Driver>(driver: &D) {
    let volume = volume_name(driver, "readonly");
    let (Some(mut writable), Some(mut read_only)) = (
        driver.writing("writer-t", "/data/file"),
        driver.writing("reader-t", "/data/file"),
    ) else {
        return; // This driver mounts nothing (see the case above).
    };
    writable.mounts = vec![mount(MountKind::Volume, &volume, false)];
    read_only.mounts = vec![mount(MountKind::Volume, &volume, true)];
    let runtime = driver.runtime(identity(driver, "readonly", "w1")).await;
    runtime.start(&writable).await.expect("start");
    let wrote = exit_of(&*runtime, "writer-t").await;
    runtime.start(&read_only).await.expect("start");
    let refused = exit_of(&*runtime, "reader-t").await;
    clean(&*runtime).await;
    let removed = runtime.remove_volume(&volume).await;
    assert_eq!(wrote, (0, None), "a writable mount takes writes");
    assert_eq!(refused, (1, None), "a read-only mount refuses them");
    assert_eq!(removed, Ok(()));
}
