//! The volume endpoints: every volume record the cluster keeps (`GET /api/v1/volumes`),
//! and asking for one to be removed (`DELETE /api/v1/volumes/<name>`). The agents remove
//! volumes: each is told, in its task list, the ones of its host that no task uses any
//! more (`to_remove`), and reports them removed.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use mycluster_core::commands::CommandError;
use mycluster_core::service::{MountKind, Volume};
use mycluster_core::step::RemoveVolumes;
use mycluster_core::wire::VolumeDoc;
use mycluster_core::ClusterState;

use super::{ApiError, AppState};

/// `GET /api/v1/volumes`: every volume record, by name.
pub async fn list(State(app): State<AppState>) -> Json<Vec<VolumeDoc>> {
    let snapshot = app.cluster.snapshot();
    let state = &snapshot.state;
    Json(
        state
            .volumes
            .values()
            .map(|v| VolumeDoc::new(v, state))
            .collect(),
    )
}

/// `DELETE /api/v1/volumes/<name>`: marks the volume for removal (its host's agents
/// remove it once no task uses it); answers the record. Refused (409) while a service
/// that exists mounts it; 404 for a name the cluster does not know.
pub async fn remove(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<VolumeDoc>, ApiError> {
    let Path(name) = name?;
    let (volumes, snapshot) = app.cluster.apply(RemoveVolumes(vec![name.clone()])).await?;
    let volume = volumes
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| CommandError::VolumeNotFound(name.clone()))?;
    tracing::info!("volume {name} marked for removal");
    Ok(Json(VolumeDoc::new(&volume, &snapshot.state)))
}

/// The volumes `worker`'s agent must remove: marked for removal, on its host (or on no
/// known host), and mounted by no live task anywhere (a task still stopping keeps its
/// volume until it has ended).
pub fn to_remove<'a>(state: &'a ClusterState, worker: &str) -> Vec<&'a str> {
    let Some(worker) = state.workers.get(worker) else {
        return Vec::new();
    };
    state
        .volumes
        .values()
        .filter(|v| v.remove && (v.host.is_empty() || v.host == worker.host))
        .filter(|v| !mounted(state, v))
        .map(|v| v.name.as_str())
        .collect()
}

/// Whether a live task mounts `volume` (only its service's tasks can: the name is the
/// service's).
fn mounted(state: &ClusterState, volume: &Volume) -> bool {
    state.tasks_of_service(&volume.service).any(|t| {
        t.is_live()
            && t.mounts
                .iter()
                .any(|m| m.kind == MountKind::Volume && m.source == volume.name)
    })
}
