//! Volumes on the wire: the volume records the cluster keeps (`GET /api/v1/volumes`), one
//! per slot and named source (`<service>-<source>-<slot>`), and what removing one answers
//! (`DELETE /api/v1/volumes/<name>`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::seconds;
use crate::service::Volume;
use crate::ClusterState;

/// A volume record, as `GET /api/v1/volumes` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct VolumeDoc {
    /// `<service>-<source>-<slot>`.
    pub name: String,
    /// The service it was made for (which may no longer exist).
    pub service: String,
    /// The `source` of the service's volume spec.
    pub source: String,
    pub slot: u32,
    /// The host it lives on; empty: not known (its worker did not say).
    pub host: String,
    /// The worker that first ran a task with it.
    pub worker: String,
    /// Asked to be removed: the agents of its host remove it once no task uses it, and
    /// then the record goes.
    pub remove: bool,
    /// Unix seconds, with milliseconds.
    pub created_at: f64,
    /// Whether a service that exists mounts it (its slot is wanted and its spec names the
    /// volume's source): such a volume cannot be removed.
    pub in_use: bool,
}

impl VolumeDoc {
    pub fn new(volume: &Volume, state: &ClusterState) -> VolumeDoc {
        VolumeDoc {
            name: volume.name.clone(),
            service: volume.service.clone(),
            source: volume.source.clone(),
            slot: volume.slot,
            host: volume.host.clone(),
            worker: volume.worker.clone(),
            remove: volume.remove,
            created_at: seconds(volume.created_at),
            in_use: volume.in_use(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_of_a_removed_service_is_not_in_use() {
        let volume = Volume {
            name: "web-data-0".into(),
            service: "web".into(),
            source: "data".into(),
            slot: 0,
            host: "h1".into(),
            worker: "w1".into(),
            remove: false,
            created_at: 1_700_000_000_250,
        };
        let doc = VolumeDoc::new(&volume, &ClusterState::default());
        assert!(!doc.in_use);
        assert_eq!(doc.created_at, 1_700_000_000.25);
        let text = serde_json::to_string(&doc).expect("writes");
        let back: VolumeDoc = serde_json::from_str(&text).expect("reads");
        assert_eq!(back, doc);
    }
}
