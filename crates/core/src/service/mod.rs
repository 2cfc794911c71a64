//! Services: the desired state a user asks for (a name, an image, a number of replicas),
//! and the checks a request must pass before it may change anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rollout::{Base, Rollout, RolloutKind, RolloutState};
use crate::span::Span;
use crate::Millis;

/// What the user asked for. A service runs an image (docker workers), a command
/// (process workers), or an image with its command overridden (either).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    pub replicas: u32,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub healthcheck: Option<HealthCheck>,
    #[serde(default)]
    pub update: UpdatePolicy,
    /// The ports its tasks listen on, and which the ingress publishes.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// How long a stopping task has to finish open connections and exit after it is
    /// taken out of the ingress's table and signalled (then it is killed).
    #[serde(default = "default_stop_grace_period")]
    pub stop_grace_period: Span,
    /// Whether the ingress sends a PROXY protocol v2 header to the replicas, so they
    /// see the client's address.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Where its tasks may run: every constraint must hold on the worker.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// The worker attribute its replicas are spread over first.
    #[serde(default)]
    pub spread: Option<Spread>,
    /// What each task reserves on its worker, and may use at most.
    #[serde(default)]
    pub resources: Resources,
    /// Volumes per slot, and bind mounts.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// What happens when a task exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// What happens to a task whose worker is cut off from the manager (see `lease`).
    #[serde(default)]
    pub on_disconnect: OnDisconnect,
}

/// Docker's and Swarm's default: 10 s from SIGTERM to SIGKILL.
pub const DEFAULT_STOP_GRACE_PERIOD: Span = Span::secs(10);

/// What a stored spec or task without the field reads as.
pub fn default_stop_grace_period() -> Span {
    DEFAULT_STOP_GRACE_PERIOD
}

impl ServiceSpec {
    /// Whether tasks of `self` and `other` run the same thing (only replicas, the update
    /// or restart policy, the spread or which ports are published differ): a change of
    /// the template is rolled out, the rest is not. The PROXY protocol is part of it (a
    /// replica expects the header or not), and so are the constraints (a task where it
    /// may no longer run is replaced), resources, volumes and `on_disconnect` (its agent
    /// reads it from the task).
    pub fn same_template(&self, other: &ServiceSpec) -> bool {
        self.image == other.image
            && self.command == other.command
            && self.env == other.env
            && self.healthcheck == other.healthcheck
            && self.targets() == other.targets()
            && self.stop_grace_period == other.stop_grace_period
            && self.proxy_protocol == other.proxy_protocol
            && self.constraints == other.constraints
            && self.resources == other.resources
            && self.volumes == other.volumes
            && self.on_disconnect == other.on_disconnect
    }

    /// How a slot's task is replaced (a rollout) and moved (a drain, a rebalance): the
    /// update policy's order, but stop-first for a service with named volumes, whose
    /// slot's volume must be mounted by one task at a time (two processes writing one
    /// database's files would corrupt it), and for an `on_disconnect: "stop"` service,
    /// which asked for at most one copy of a slot at any moment.
    pub fn replace_order(&self) -> UpdateOrder {
        if self.volumes.iter().any(|v| !v.is_bind()) || self.on_disconnect == OnDisconnect::Stop {
            UpdateOrder::StopFirst
        } else {
            self.update.order
        }
    }

    /// The distinct ports its tasks listen on, in order.
    pub fn targets(&self) -> Vec<u16> {
        distinct(self.ports.iter().map(|p| p.target))
    }

    /// The ports the ingress publishes for it.
    pub fn published(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().filter_map(|p| p.published)
    }
}

/// How many past versions a service keeps (the current one included).
pub const VERSIONS_KEPT: usize = 10;

/// One version of a service's spec: every change of the spec is a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub spec: ServiceSpec,
    /// The restart generation it ran with (a rollback restores it too).
    #[serde(default)]
    pub generation: u64,
    pub created_at: Millis,
    /// What made it, for people: "created", "updated", "rollback to version 3", ...
    pub cause: String,
}

/// A stored service: the spec plus what the control plane tracks about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub spec: ServiceSpec,
    /// Bumped by every change of the spec. Tasks whose template (image, command, env,
    /// health check, restart generation) differs from the spec's are replaced by a
    /// rollout; a change of replicas alone only adds or stops tasks.
    pub version: u64,
    /// Bumped by `restart`: tasks of an older generation are replaced like outdated ones.
    #[serde(default)]
    pub generation: u64,
    /// The last `VERSIONS_KEPT` versions, oldest first; the last is the current spec.
    #[serde(default)]
    pub history: Vec<Version>,
    /// The latest rollout: what changed the template last, and how far it got.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// An operator asked for its spread to be evened out (`service rebalance`): moves go
    /// on, one at a time, until it is even; then this is cleared.
    #[serde(default)]
    pub rebalance: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Service {
    /// The service after `spec` is posted over `old` (if it existed) at `now`. A change
    /// of the template starts a rollout (superseding one under way); a change of replicas
    /// or policy alone keeps the rollout as it is; a spec equal to the current one
    /// changes nothing but the time.
    pub fn updated(old: Option<&Service>, spec: ServiceSpec, now: Millis) -> Service {
        match old {
            None => {
                let mut service = Service {
                    spec: spec.clone(),
                    version: 1,
                    generation: 0,
                    history: Vec::new(),
                    rollout: None,
                    created_at: now,
                    updated_at: now,
                    rebalance: false,
                };
                service.record("created", now);
                service.rollout = Some(Rollout::new(RolloutKind::Create, 1, None, now));
                service
            }
            Some(old) if old.spec == spec => Service {
                updated_at: now,
                ..old.clone()
            },
            Some(old) => {
                let mut service = old.next_version(now);
                service.spec = spec;
                let cause = if old.spec.same_template(&service.spec) {
                    if old.spec.replicas != service.spec.replicas {
                        "scaled"
                    } else {
                        "update policy changed"
                    }
                } else {
                    service.rollout = Some(Rollout::new(
                        RolloutKind::Update,
                        service.version,
                        old.stable_base(),
                        now,
                    ));
                    "updated"
                };
                service.record(cause, now);
                service
            }
        }
    }

    /// Every task replaced by a rollout of the same spec (`mycluster service restart`).
    pub fn restarted(&self, now: Millis) -> Service {
        let mut service = self.next_version(now);
        service.generation = self.generation + 1;
        service.rollout = Some(Rollout::new(
            RolloutKind::Restart,
            service.version,
            self.stable_base(),
            now,
        ));
        service.record("restart", now);
        service
    }

    /// Back to `to` (a former version: its spec, with `replicas`, and its generation) as
    /// a new version, rolled out as usual. `kind` says whether an operator asked or a
    /// failed rollout did.
    pub fn rolled_back(&self, to: &Base, replicas: u32, kind: RolloutKind, now: Millis) -> Service {
        let mut service = self.next_version(now);
        service.spec = ServiceSpec {
            replicas,
            ..to.spec.clone()
        };
        service.generation = to.generation;
        let mut rollout = Rollout::new(kind, service.version, None, now);
        rollout.from = Some(self.version);
        service.rollout = Some(rollout);
        service.record(&format!("rollback to version {}", to.version), now);
        service
    }

    /// The next version's starting point: `self` one version on, with its history (a
    /// service stored before versions were kept starts its history with what it was).
    fn next_version(&self, now: Millis) -> Service {
        let mut next = Service {
            version: self.version + 1,
            updated_at: now,
            ..self.clone()
        };
        if next.history.is_empty() {
            next.history
                .push(self.as_version("stored before versions were kept"));
        }
        next
    }

    fn as_version(&self, cause: &str) -> Version {
        Version {
            version: self.version,
            spec: self.spec.clone(),
            generation: self.generation,
            created_at: self.updated_at,
            cause: cause.to_string(),
        }
    }

    /// What a new rollout replaces, and a failed one goes back to: the current version,
    /// unless a rollout of it is still under way or paused — then what that one was
    /// replacing, since the current version never became what runs.
    fn stable_base(&self) -> Option<Base> {
        let current = || Base {
            version: self.version,
            spec: self.spec.clone(),
            generation: self.generation,
        };
        match &self.rollout {
            Some(r)
                if r.kind != RolloutKind::Create
                    && r.completed_at.is_none()
                    && matches!(r.state, RolloutState::InProgress | RolloutState::Paused) =>
            {
                r.base.as_deref().cloned().or_else(|| Some(current()))
            }
            _ => Some(current()),
        }
    }

    /// The version before the current one, if it is still kept.
    pub fn previous_version(&self) -> Option<&Version> {
        let n = self.history.len();
        (n >= 2).then(|| &self.history[n - 2])
    }

    /// A kept version by number.
    pub fn version_of(&self, version: u64) -> Option<&Version> {
        self.history.iter().find(|v| v.version == version)
    }

    fn record(&mut self, cause: &str, now: Millis) {
        let mut version = self.as_version(cause);
        version.created_at = now;
        self.history.push(version);
        let excess = self.history.len().saturating_sub(VERSIONS_KEPT);
        self.history.drain(..excess);
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Limits a request is checked against, and the cluster's policies; the manager's flags
/// set them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Replicas of one service.
    pub max_replicas: u32,
    /// Services in the cluster.
    pub max_services: usize,
    /// Replicas of all services together.
    pub max_total_replicas: u64,
    /// Host directories under which bind mounts are allowed (`--allow-bind`).
    pub allow_bind: Vec<String>,
    /// Whether every service's spread is evened out on its own, one move at a time,
    /// when workers join or come back (`--rebalance`).
    pub rebalance: bool,
    /// How long a worker's lease lasts without a renewal (`--lease`; see `lease`).
    pub lease: std::time::Duration,
    /// The most workers the cluster takes (`--max-workers`): a registration of a new
    /// name past it is refused. `None`: no bound.
    pub max_workers: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_replicas: 1000,
            max_services: 10_000,
            max_total_replicas: 1_000_000,
            allow_bind: Vec::new(),
            rebalance: false,
            lease: crate::lease::DEFAULT_LEASE,
            max_workers: None,
        }
    }
}

/// Why a service request was refused. Every message names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("request body must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("unknown field '{field}'{hint}; allowed fields: {allowed}")]
    UnknownField {
        field: String,
        hint: String,
        allowed: String,
    },
    #[error("missing required field '{0}'")]
    MissingField(&'static str),
    #[error("field '{field}' must be {expected}, got {got}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("invalid service name '{name}': {why}")]
    InvalidName { name: String, why: String },
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("field 'replicas' must be between 0 and {max}, got {got}")]
    ReplicasOutOfRange { got: String, max: u32 },
    #[error("nothing to change: give at least one of {0}")]
    EmptyPatch(&'static str),
    #[error("a service needs an 'image', a 'command', or both")]
    NothingToRun,
    /// Neither an image nor a command: named as the original named it (it always sent
    /// an image), with the other way.
    #[error("missing required field 'image' (or give a 'command': a service runs an image, a command, or both)")]
    MissingImage,
    #[error("field 'command' {0}")]
    InvalidCommand(String),
    #[error("field 'env' {0}")]
    InvalidEnv(String),
    /// A nested field (`healthcheck.http.port`, `update.order`) is wrong.
    #[error("field '{field}' {why}")]
    Invalid { field: String, why: String },
}

mod disconnect;
mod fields;
mod health;
mod placement;
mod ports;
mod request;
mod resources;
mod restart;
mod update;
mod volumes;

pub use disconnect::OnDisconnect;
pub use health::{Health, HealthCheck, Probe, MAX_SPAN};
pub use placement::{valid_label_key, Attribute, Constraint, Op, Spread};
pub use ports::{distinct, PortSpec, Protocol, MAX_PORTS};
pub use request::{validate_service_name, ServicePatch, ServicePost};
pub use resources::{Amount, Bytes, Cpus, Resources};
pub use restart::{AfterExit, RestartCondition, RestartPolicy};
pub use update::{FailureAction, Ratio, UpdateOrder, UpdatePolicy};
pub use volumes::{bind_allowed, volume_name, Mount, MountKind, Volume, VolumeSpec};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_a_version_and_only_a_new_template_a_rollout() {
        let spec = |image: &str, replicas| ServiceSpec {
            name: "a".into(),
            image: Some(image.into()),
            replicas,
            command: None,
            env: BTreeMap::new(),
            healthcheck: None,
            update: UpdatePolicy::default(),
            ports: Vec::new(),
            stop_grace_period: crate::service::DEFAULT_STOP_GRACE_PERIOD,
            proxy_protocol: false,
            constraints: Vec::new(),
            spread: None,
            resources: Default::default(),
            volumes: Vec::new(),
            restart: Default::default(),
            on_disconnect: Default::default(),
        };
        let v1 = Service::updated(None, spec("x", 1), 10);
        assert_eq!(
            v1.rollout.as_ref().map(|r| r.kind),
            Some(RolloutKind::Create)
        );
        let same = Service::updated(Some(&v1), spec("x", 1), 15);
        assert_eq!((same.version, same.history.len()), (1, 1));
        let scaled = Service::updated(Some(&v1), spec("x", 5), 20);
        assert_eq!(
            (scaled.version, scaled.created_at, scaled.updated_at),
            (2, 10, 20)
        );
        assert_eq!(scaled.rollout, v1.rollout, "scaling starts no rollout");
        let new_image = Service::updated(Some(&scaled), spec("y", 5), 30);
        assert_eq!(new_image.version, 3);
        let rollout = new_image.rollout.clone().expect("a rollout");
        assert_eq!(
            (rollout.kind, rollout.version, rollout.from),
            (RolloutKind::Update, 3, Some(2))
        );
        assert_eq!(new_image.previous_version().map(|v| v.version), Some(2));
        let restarted = new_image.restarted(40);
        assert_eq!((restarted.version, restarted.generation), (4, 1));

        let mut service = restarted;
        for i in 0..20 {
            service = Service::updated(Some(&service), spec("x", i), 50 + u64::from(i));
        }
        assert_eq!(service.history.len(), VERSIONS_KEPT);
        assert_eq!(
            service.history.last().map(|v| v.version),
            Some(service.version)
        );
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;
    use crate::rollout::{settle, Plan, Verdict};

    fn spec(image: &str) -> ServiceSpec {
        ServiceSpec {
            name: "a".into(),
            image: Some(image.into()),
            replicas: 2,
            command: None,
            env: BTreeMap::new(),
            healthcheck: None,
            update: UpdatePolicy::default(),
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

    /// A service stored before versions were kept (no history, no rollout) can still be
    /// rolled back after its first update.
    #[test]
    fn a_service_stored_before_versions_starts_its_history_with_what_it_was() {
        let stored = Service {
            spec: spec("x"),
            version: 4,
            generation: 0,
            history: Vec::new(),
            rollout: None,
            created_at: 1,
            updated_at: 2,
            rebalance: false,
        };
        let updated = Service::updated(Some(&stored), spec("y"), 10);
        let versions: Vec<u64> = updated.history.iter().map(|v| v.version).collect();
        assert_eq!(versions, [4, 5]);
        assert_eq!(
            updated.previous_version().map(|v| v.spec.image.clone()),
            Some(Some("x".into()))
        );
        assert_eq!(
            updated.rollout.and_then(|r| r.base).map(|b| b.version),
            Some(4)
        );
    }

    /// Rolling a failed restart back restores the generation: the old tasks are kept.
    #[test]
    fn a_failed_restart_rolls_back_to_its_generation() {
        let service = Service::updated(None, spec("x"), 1);
        let restarted = service.restarted(5);
        assert_eq!(restarted.generation, 1);
        let plan = Plan {
            start: Vec::new(),
            stop: Vec::new(),
            failed: vec![("t1".into(), 0)],
            verdict: Verdict::Rollback("replica 0 of version 2 failed".into()),
            healthy: Vec::new(),
            done: 0,
        };
        let back = settle(&restarted, &plan, 9).expect("rolled back");
        assert_eq!((back.generation, back.version), (0, 3));
        assert_eq!(back.spec, service.spec);
    }
}
