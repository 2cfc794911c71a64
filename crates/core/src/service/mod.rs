//! Services: the desired state a user asks for (a name, an image, a number of replicas),
//! and the checks a request must pass before it may change anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

impl ServiceSpec {
    /// Whether tasks of `self` and `other` run the same thing (only replicas differ).
    pub fn same_template(&self, other: &ServiceSpec) -> bool {
        self.image == other.image && self.command == other.command && self.env == other.env
    }
}

/// A stored service: the spec plus what the control plane tracks about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub spec: ServiceSpec,
    /// Bumped when what a task runs changes (the image), not when it only scales: tasks
    /// of an older version are replaced, the others are kept.
    pub version: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Service {
    /// The service after `spec` is posted over `old` (if it existed) at `now`.
    pub fn updated(old: Option<&Service>, spec: ServiceSpec, now: Millis) -> Service {
        match old {
            None => Service {
                spec,
                version: 1,
                created_at: now,
                updated_at: now,
            },
            Some(old) => Service {
                version: if old.spec.same_template(&spec) {
                    old.version
                } else {
                    old.version + 1
                },
                spec,
                created_at: old.created_at,
                updated_at: now,
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Limits a request is checked against; the manager's flags set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Replicas of one service.
    pub max_replicas: u32,
    /// Services in the cluster.
    pub max_services: usize,
    /// Replicas of all services together.
    pub max_total_replicas: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_replicas: 1000,
            max_services: 10_000,
            max_total_replicas: 1_000_000,
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
}

mod request;

pub use request::{validate_service_name, ServicePatch};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_changes_with_the_image_only() {
        let spec = |image: &str, replicas| ServiceSpec {
            name: "a".into(),
            image: Some(image.into()),
            replicas,
            command: None,
            env: BTreeMap::new(),
        };
        let v1 = Service::updated(None, spec("x", 1), 10);
        let scaled = Service::updated(Some(&v1), spec("x", 5), 20);
        assert_eq!(
            (scaled.version, scaled.created_at, scaled.updated_at),
            (1, 10, 20)
        );
        let new_image = Service::updated(Some(&scaled), spec("y", 5), 30);
        assert_eq!(new_image.version, 2);
    }
}
