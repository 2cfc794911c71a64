//! Rollouts and versions on the wire: how far a service's latest rollout got (`GET
//! /api/v1/service/<name>/rollout`, and the answer of `POST .../rollback` and `POST
//! .../restart`), and the versions of its spec the manager keeps (`GET
//! /api/v1/service/<name>/versions`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{seconds, ServiceRequest};
use crate::rollout::{RolloutKind, RolloutState};
use crate::Service;

/// Where a service's latest rollout stands.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct RolloutDoc {
    pub service: String,
    /// The version being (or last) rolled out.
    pub version: u64,
    /// The version it replaces (null for a create, or a service stored before rollouts
    /// were recorded).
    pub from_version: Option<u64>,
    /// What started it; null for a service stored before rollouts were recorded.
    pub kind: Option<RolloutKind>,
    pub state: RolloutState,
    /// Slots whose task of this version runs and is healthy.
    pub updated: u32,
    /// The replicas wanted.
    pub total: u32,
    /// New tasks of this rollout counted as failures.
    pub failures: u32,
    /// Why it is paused or was rolled back: the failure that decided it.
    pub reason: Option<String>,
    /// Unix seconds, with milliseconds.
    pub started_at: f64,
    /// Unix seconds, with milliseconds.
    pub updated_at: f64,
}

impl RolloutDoc {
    /// The document of `service`'s rollout, `updated` being the slots done
    /// (`rollout::plan(..).done`, on the snapshot the caller read). A service without a
    /// record (stored before rollouts existed) has nothing under way: completed.
    pub fn new(service: &Service, updated: u32) -> RolloutDoc {
        let total = service.spec.replicas;
        match &service.rollout {
            Some(r) => RolloutDoc {
                service: service.spec.name.clone(),
                version: r.version,
                from_version: r.from,
                kind: Some(r.kind),
                state: r.state,
                updated,
                total,
                failures: u32::try_from(r.failed.len()).unwrap_or(u32::MAX),
                reason: r.reason.clone(),
                started_at: seconds(r.started_at),
                updated_at: seconds(r.updated_at),
            },
            None => RolloutDoc {
                service: service.spec.name.clone(),
                version: service.version,
                from_version: None,
                kind: None,
                state: RolloutState::Completed,
                updated,
                total,
                failures: 0,
                reason: None,
                started_at: seconds(service.updated_at),
                updated_at: seconds(service.updated_at),
            },
        }
    }
}

/// One kept version of a service's spec.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct VersionDoc {
    pub version: u64,
    /// The spec as a request body would give it (`POST /api/v1/service` with it makes
    /// the same service), the update policy always written out.
    pub spec: ServiceRequest,
    /// Unix seconds, with milliseconds.
    pub created_at: f64,
    /// What made it: "created", "updated", "scaled", "restart", "rollback to version 3", ...
    pub cause: String,
}

/// `GET /api/v1/service/<name>/versions`: the kept versions (the last 10), newest first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct VersionsDoc {
    pub service: String,
    /// The version the service runs now (the first listed).
    pub current: u64,
    /// Newest first.
    pub versions: Vec<VersionDoc>,
}

impl VersionsDoc {
    pub fn new(service: &Service) -> VersionsDoc {
        VersionsDoc {
            service: service.spec.name.clone(),
            current: service.version,
            versions: service
                .history
                .iter()
                .rev()
                .map(|v| VersionDoc {
                    version: v.version,
                    spec: ServiceRequest::from_spec(&v.spec),
                    created_at: seconds(v.created_at),
                    cause: v.cause.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceSpec;

    fn spec(image: &str, replicas: u32) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            image: Some(image.into()),
            replicas,
            command: None,
            env: Default::default(),
            healthcheck: None,
            update: Default::default(),
            ports: Vec::new(),
            stop_grace_period: crate::service::DEFAULT_STOP_GRACE_PERIOD,
            proxy_protocol: false,
            constraints: Vec::new(),
            spread: None,
            resources: Default::default(),
            volumes: Vec::new(),
            restart: Default::default(),
            on_disconnect: Default::default(),
        }
    }

    #[test]
    fn versions_are_listed_newest_first_as_request_bodies() {
        let v1 = Service::updated(None, spec("a", 2), 1_000);
        let v2 = Service::updated(Some(&v1), spec("b", 2), 2_500);
        let doc = VersionsDoc::new(&v2);
        assert_eq!(doc.current, 2);
        let listed: Vec<(u64, &str)> = doc
            .versions
            .iter()
            .map(|v| (v.version, v.cause.as_str()))
            .collect();
        assert_eq!(listed, [(2, "updated"), (1, "created")]);
        assert_eq!(doc.versions[0].spec.image.as_deref(), Some("b"));
        assert_eq!(doc.versions[0].created_at, 2.5);
        let body = serde_json::to_value(&doc.versions[1].spec).expect("json");
        assert_eq!(body["update"]["order"], "start-first");
        assert!(body.get("healthcheck").is_none(), "{body}");
    }

    #[test]
    fn a_rollout_reads_from_its_record_and_a_service_without_one_is_completed() {
        let v1 = Service::updated(None, spec("a", 3), 1_000);
        let v2 = Service::updated(Some(&v1), spec("b", 3), 2_000);
        let doc = RolloutDoc::new(&v2, 1);
        assert_eq!(
            (doc.version, doc.from_version, doc.kind, doc.state),
            (
                2,
                Some(1),
                Some(RolloutKind::Update),
                RolloutState::InProgress
            )
        );
        assert_eq!((doc.updated, doc.total, doc.failures), (1, 3, 0));

        let old = Service {
            rollout: None,
            ..v2
        };
        let doc = RolloutDoc::new(&old, 3);
        assert_eq!((doc.kind, doc.state), (None, RolloutState::Completed));
        let text = serde_json::to_value(&doc).expect("json");
        assert_eq!(text["state"], "completed");
        assert_eq!(text["kind"], serde_json::Value::Null);
    }
}
