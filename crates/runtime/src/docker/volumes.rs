//! A task's limits and mounts as the engine takes them, and the named volumes behind its
//! mounts: made on first use, labelled as this cluster's (`mycluster.cluster`,
//! `.service`, `.volume`, `.slot`) so that a teardown by label finds them, and removed
//! when the manager says so. A volume of that name without our labels is somebody
//! else's: it is neither mounted nor removed.

use std::collections::HashMap;

use bollard::models::{HostConfig, Mount as DockerMount, MountType, VolumeCreateRequest};
use bollard::query_parameters::RemoveVolumeOptionsBuilder;
use bollard::Docker;
use mycluster_core::service::{MountKind, Resources};

use super::engine::{engine_error, is_transport, message, status};
use crate::{
    Identity, RuntimeError, TaskSpec, LABEL_CLUSTER, LABEL_SERVICE, LABEL_SLOT, LABEL_VOLUME,
};

/// Adds `resources`' limits to `host`: the CPU quota, and the memory limit with the same
/// limit for memory plus swap, so swap does not double it.
pub(super) fn apply_limits(host: &mut HostConfig, resources: &Resources) {
    let limits = resources.limits;
    if let Some(cpus) = limits.cpus {
        host.nano_cpus = Some(cpus.nanos());
    }
    if let Some(memory) = limits.memory {
        let bytes = i64::try_from(memory.0).unwrap_or(i64::MAX);
        host.memory = Some(bytes);
        host.memory_swap = Some(bytes);
    }
}

/// The engine's mounts for `spec`'s.
pub(super) fn mounts(spec: &TaskSpec) -> Option<Vec<DockerMount>> {
    if spec.mounts.is_empty() {
        return None;
    }
    Some(
        spec.mounts
            .iter()
            .map(|m| DockerMount {
                typ: Some(match m.kind {
                    MountKind::Volume => MountType::VOLUME,
                    MountKind::Bind => MountType::BIND,
                }),
                source: Some(m.source.clone()),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect(),
    )
}

/// Makes each named volume `spec` mounts that does not exist yet, labelled as ours.
pub(super) async fn ensure(
    docker: &Docker,
    identity: &Identity,
    spec: &TaskSpec,
) -> Result<(), RuntimeError> {
    for mount in spec.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
        let name = &mount.source;
        match docker.inspect_volume(name).await {
            Ok(volume) if is_ours(&volume.labels, identity) => continue,
            Ok(_) => {
                return Err(RuntimeError::StartFailed(format!(
                    "the volume {name} exists and is not cluster {}'s: it is left alone",
                    identity.cluster
                )))
            }
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(engine_error(&format!("cannot inspect volume {name}"), e)),
        }
        let labels = HashMap::from([
            (LABEL_CLUSTER.to_string(), identity.cluster.clone()),
            (LABEL_SERVICE.to_string(), spec.service.clone()),
            (LABEL_VOLUME.to_string(), name.clone()),
            (LABEL_SLOT.to_string(), spec.slot.to_string()),
        ]);
        let request = VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        };
        // Two workers of one engine may make it at once: the engine answers both with
        // the one volume.
        match docker.create_volume(request).await {
            Ok(_) => tracing::info!("docker driver: created volume {name}"),
            Err(e) if is_transport(&e) => {
                return Err(engine_error(&format!("cannot create volume {name}"), e))
            }
            Err(e) => {
                return Err(RuntimeError::StartFailed(format!(
                    "cannot create volume {name}: {}",
                    message(&e)
                )))
            }
        }
    }
    Ok(())
}

/// Removes volume `name` if it is this cluster's: gone already is fine, one in use is
/// `InUse`.
pub(super) async fn remove(
    docker: &Docker,
    identity: &Identity,
    name: &str,
) -> Result<(), RuntimeError> {
    match docker.inspect_volume(name).await {
        Ok(volume) if is_ours(&volume.labels, identity) => {}
        Ok(_) => {
            return Err(RuntimeError::Unsupported(format!(
                "the volume {name} is not cluster {}'s: it is left alone",
                identity.cluster
            )))
        }
        Err(e) if status(&e) == Some(404) => return Ok(()),
        Err(e) => return Err(engine_error(&format!("cannot inspect volume {name}"), e)),
    }
    let options = RemoveVolumeOptionsBuilder::default().force(false).build();
    match docker.remove_volume(name, Some(options)).await {
        Ok(()) => {
            tracing::info!("docker driver: removed volume {name}");
            Ok(())
        }
        Err(e) if status(&e) == Some(404) => Ok(()),
        Err(e) if status(&e) == Some(409) => Err(RuntimeError::InUse(format!(
            "the volume {name} is in use: {}",
            message(&e)
        ))),
        Err(e) => Err(engine_error(&format!("cannot remove volume {name}"), e)),
    }
}

fn is_ours(labels: &HashMap<String, String>, identity: &Identity) -> bool {
    labels.get(LABEL_CLUSTER) == Some(&identity.cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycluster_core::service::{Amount, Bytes, Cpus, Mount};

    #[test]
    fn limits_and_mounts_become_the_engines() {
        let mut host = HostConfig::default();
        apply_limits(
            &mut host,
            &Resources {
                reservations: Amount::default(),
                limits: Amount {
                    cpus: Some(Cpus(500)),
                    memory: Some(Bytes(64 << 20)),
                },
            },
        );
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(67_108_864));
        assert_eq!(host.memory_swap, Some(67_108_864));
        let mut unlimited = HostConfig::default();
        apply_limits(&mut unlimited, &Resources::default());
        assert_eq!(unlimited, HostConfig::default());

        let spec = TaskSpec {
            task_id: "t".into(),
            service: "db".into(),
            slot: 1,
            image: Some("img".into()),
            command: None,
            env: Default::default(),
            resources: Resources::default(),
            mounts: vec![
                Mount {
                    kind: MountKind::Volume,
                    source: "db-data-1".into(),
                    target: "/data".into(),
                    read_only: false,
                },
                Mount {
                    kind: MountKind::Bind,
                    source: "/srv/conf".into(),
                    target: "/conf".into(),
                    read_only: true,
                },
            ],
        };
        let mounts = mounts(&spec).expect("mounts");
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].source.as_deref(), Some("db-data-1"));
        assert_eq!(mounts[1].typ, Some(MountType::BIND));
        assert_eq!(mounts[1].read_only, Some(true));
        assert_eq!(
            super::mounts(&TaskSpec {
                mounts: Vec::new(),
                ..spec
            }),
            None
        );
    }
}
