//! Services: what a client asks for (`POST /api/v1/service`, `PATCH
//! /api/v1/service/<name>`) and how the manager shows one (`GET /api/v1/service/<name>`).
//!
//! The manager checks a request body field by field (`ServiceSpec::from_json`), so that
//! each refusal names the field and the problem; these types are what clients send, and
//! what the OpenAPI document is checked against.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::service::{
    Constraint, HealthCheck, OnDisconnect, PortSpec, Resources, RestartPolicy, Spread,
    UpdatePolicy, VolumeSpec, DEFAULT_STOP_GRACE_PERIOD,
};
use crate::span::Span;
use crate::{Service, ServiceSpec};

/// The body of `POST /api/v1/service`: a service to create, or to update in place. A
/// field given as null counts as not given, except `healthcheck`, `update`, `ports`,
/// `stop_grace_period`, `proxy_protocol`, `constraints`, `spread`, `resources`,
/// `volumes` and `restart`: left out, an existing service keeps its own (see
/// `service::ServicePost`); null removes it or restores its default.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequest {
    pub service: String,
    /// Needed unless a `command` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub replicas: u32,
    /// argv (Docker's exec form): overrides the image's command, or is the process run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// How its agent tells that a task serves (none: running for `update.monitor` is
    /// enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    /// How a change of what its tasks run is rolled out (fields not given: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdatePolicy>,
    /// The ports its tasks listen on; those with `published` are reached through the
    /// ingress on that port (one service per published port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSpec>>,
    /// From SIGTERM to SIGKILL when a task is stopped (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Span>,
    /// Whether the ingress starts each connection to a replica with a PROXY protocol v2
    /// header carrying the client's address (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,
    /// Where its tasks may run: `"node.labels.disk == ssd"`, `"node.name != w1"`,
    /// `"node.driver == docker"`, `"node.host == H"` (every one must hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<Constraint>>,
    /// The worker attribute its replicas are spread over first (`"node.labels.zone"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    /// What each task reserves on its worker and may use at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// A volume per slot (`source` a name: `<service>-<source>-<slot>`) or a bind mount
    /// (`source` an absolute path under the manager's `--allow-bind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeSpec>>,
    /// What happens when a task exits (default: `any`, replaced after a backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// What happens to a task whose worker is cut off from the manager: `replace` (the
    /// default) or `stop` (at most one copy: see the README's "Network splits").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disconnect: Option<OnDisconnect>,
}

impl ServiceRequest {
    /// The body that would ask for `spec` as it is: every field it sets, the update
    /// policy always (so a version reads back whole).
    pub fn from_spec(spec: &ServiceSpec) -> ServiceRequest {
        ServiceRequest {
            service: spec.name.clone(),
            image: spec.image.clone(),
            replicas: spec.replicas,
            command: spec.command.clone(),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            healthcheck: spec.healthcheck.clone(),
            update: Some(spec.update),
            ports: (!spec.ports.is_empty()).then(|| spec.ports.clone()),
            stop_grace_period: Some(spec.stop_grace_period),
            proxy_protocol: spec.proxy_protocol.then_some(true),
            constraints: (!spec.constraints.is_empty()).then(|| spec.constraints.clone()),
            spread: spec.spread.clone(),
            resources: (!spec.resources.is_empty()).then_some(spec.resources),
            volumes: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            restart: Some(spec.restart).filter(|r| *r != RestartPolicy::default()),
            on_disconnect: Some(spec.on_disconnect).filter(|o| !o.is_replace()),
        }
    }
}

/// The body of `PATCH /api/v1/service/<name>`: only the fields given change (at least
/// one must be).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Replaces the health check (a change of what the tasks run: rolled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    /// Replaces the update policy (fields not given: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdatePolicy>,
    /// Replaces the whole list of ports (`[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,
    /// Replaces the whole list of constraints (`[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<Constraint>>,
    /// A worker attribute (`"node.labels.zone"`), or `""` for no spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
    /// Replaces the reservations and limits (`{}`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Replaces the whole list of volumes (`[]`: none; the volumes themselves are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeSpec>>,
    /// Replaces the restart policy (fields not given: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disconnect: Option<OnDisconnect>,
}

/// `GET /api/v1/service/<name>`: the original's four keys, and the additions only when
/// they say something (so a plain service reads exactly as the original's).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
pub struct ServiceDoc {
    pub service: String,
    /// Null for a service that runs only a command.
    pub image: Option<String>,
    pub replicas: u32,
    /// Unix seconds of the last create or update.
    pub last_updated: u64,
    /// Beyond the original, and only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent rather than null in an answer.
    #[schemars(with = "Vec<String>")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Only when the service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent rather than null in an answer.
    #[schemars(with = "HealthCheck")]
    pub healthcheck: Option<HealthCheck>,
    /// Only when it is not the default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "UpdatePolicy")]
    pub update: Option<UpdatePolicy>,
    /// Only when it names ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Only when it is not the default (10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Span")]
    pub stop_grace_period: Option<Span>,
    /// Only when on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// Only when it names some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Spread")]
    pub spread: Option<Spread>,
    /// Only when it reserves or limits something.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Only when it mounts some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// Only when it is not the default (`any`, no limit, 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "RestartPolicy")]
    pub restart: Option<RestartPolicy>,
    /// Only when it is `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "OnDisconnect")]
    pub on_disconnect: Option<OnDisconnect>,
    /// Only in the answer to `DELETE /api/v1/service/<name>`: the service's volumes that
    /// are kept (without `?volumes=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_volumes: Vec<String>,
    /// Only in the answer to `DELETE /api/v1/service/<name>?volumes=true`: the service's
    /// volumes being removed (by the agents of their host, once no task uses them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_volumes: Vec<String>,
}

impl ServiceDoc {
    pub fn new(service: &Service) -> ServiceDoc {
        ServiceDoc {
            service: service.spec.name.clone(),
            image: service.spec.image.clone(),
            replicas: service.spec.replicas,
            last_updated: service.updated_at / 1000,
            command: service.spec.command.clone(),
            env: service.spec.env.clone(),
            healthcheck: service.spec.healthcheck.clone(),
            update: Some(service.spec.update).filter(|u| *u != UpdatePolicy::default()),
            ports: service.spec.ports.clone(),
            stop_grace_period: Some(service.spec.stop_grace_period)
                .filter(|g| *g != DEFAULT_STOP_GRACE_PERIOD),
            proxy_protocol: service.spec.proxy_protocol,
            constraints: service.spec.constraints.clone(),
            spread: service.spec.spread.clone(),
            resources: service.spec.resources,
            volumes: service.spec.volumes.clone(),
            restart: Some(service.spec.restart).filter(|r| *r != RestartPolicy::default()),
            on_disconnect: Some(service.spec.on_disconnect).filter(|o| !o.is_replace()),
            kept_volumes: Vec::new(),
            removed_volumes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServicePatch;
    use crate::{Limits, ServiceSpec};

    /// What a client sends is what the manager's checks accept.
    #[test]
    fn typed_requests_pass_the_managers_checks() {
        let request = ServiceRequest {
            service: "web".into(),
            image: None,
            replicas: 2,
            command: Some(vec!["sleep".into(), "60".into()]),
            env: Some(BTreeMap::from([("MODE".into(), "x".into())])),
            healthcheck: Some(HealthCheck::new(crate::service::Probe::Tcp { port: 80 })),
            update: Some(UpdatePolicy {
                parallelism: 2,
                ..UpdatePolicy::default()
            }),
            ports: Some(vec![PortSpec {
                published: Some(8080),
                target: 8000,
                protocol: crate::service::Protocol::Tcp,
            }]),
            stop_grace_period: Some(Span::secs(3)),
            proxy_protocol: Some(true),
            constraints: Some(vec![
                crate::service::Constraint::parse("node.labels.disk == ssd").expect("valid")
            ]),
            spread: Some(Spread(crate::service::Attribute::Label("zone".into()))),
            resources: Some(
                serde_json::from_str(
                    r#"{"reservations": {"cpus": 0.5, "memory": "256M"}, "limits": {"memory": 536870912}}"#,
                )
                .expect("resources"),
            ),
            volumes: Some(vec![VolumeSpec {
                source: "data".into(),
                target: "/data".into(),
                read_only: true,
            }]),
            restart: Some(RestartPolicy {
                condition: crate::service::RestartCondition::OnFailure,
                max_attempts: 3,
                delay: Span::secs(2),
            }),
            on_disconnect: Default::default(),
        };
        let body = serde_json::to_value(&request).expect("serializes");
        let spec = ServiceSpec::from_json(&body, &Limits::default()).expect("accepted");
        assert_eq!(spec.command, request.command);
        assert_eq!(Some(spec.env.clone()), request.env);
        assert_eq!(spec.healthcheck, request.healthcheck);
        assert_eq!(Some(spec.update), request.update);
        assert_eq!(spec.published().collect::<Vec<_>>(), vec![8080]);
        assert_eq!(spec.stop_grace_period, Span::secs(3));
        assert!(spec.proxy_protocol);
        assert_eq!(Some(spec.constraints.clone()), request.constraints);
        assert_eq!(spec.spread, request.spread);
        assert_eq!(Some(spec.resources), request.resources);
        assert_eq!(Some(spec.volumes.clone()), request.volumes);
        assert_eq!(Some(spec.restart), request.restart);
        // A version reads back as the body that asked for it.
        assert_eq!(ServiceRequest::from_spec(&spec), request);

        let patch = ServicePatchRequest {
            replicas: Some(7),
            ..ServicePatchRequest::default()
        };
        let body = serde_json::to_value(&patch).expect("serializes");
        assert_eq!(body.to_string(), r#"{"replicas":7}"#);
        let parsed = ServicePatch::from_json(&body, &Limits::default()).expect("accepted");
        assert_eq!(parsed.replicas, Some(7));
        // A spread of "" clears it.
        let patch = ServicePatchRequest {
            spread: Some(String::new()),
            constraints: Some(Vec::new()),
            ..ServicePatchRequest::default()
        };
        let body = serde_json::to_value(&patch).expect("serializes");
        let parsed = ServicePatch::from_json(&body, &Limits::default()).expect("accepted");
        assert_eq!(parsed.spread, Some(None));
        assert_eq!(parsed.constraints, Some(Vec::new()));
    }
}
