//! Request bodies of the service endpoints (`POST /api/v1/service`, `PATCH
//! /api/v1/service/<name>`): parsed field by field, so every refusal names the field and
//! the problem (and an unknown field its nearest known one).

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{
    as_object, field_bool, field_command, field_env, field_grace, field_image, field_replicas,
    field_string, optional, required,
};
use super::{
    Constraint, HealthCheck, Limits, OnDisconnect, PortSpec, Resources, RestartPolicy, ServiceSpec,
    SpecError, Spread, UpdatePolicy, VolumeSpec, DEFAULT_STOP_GRACE_PERIOD,
};
use crate::span::Span;

const CREATE_FIELDS: &[&str] = &[
    "service",
    "image",
    "replicas",
    "command",
    "env",
    "healthcheck",
    "update",
    "ports",
    "stop_grace_period",
    "proxy_protocol",
    "constraints",
    "spread",
    "resources",
    "volumes",
    "restart",
    "on_disconnect",
];
const PATCH_FIELDS: &[&str] = &[
    "image",
    "replicas",
    "command",
    "env",
    "healthcheck",
    "update",
    "ports",
    "stop_grace_period",
    "proxy_protocol",
    "constraints",
    "spread",
    "resources",
    "volumes",
    "restart",
    "on_disconnect",
];

/// The fields of `POST /api/v1/service` that the original API did not have: left out of
/// a POST that updates a service, they keep the service's own (see `ServicePost`).
const KEPT_WHEN_LEFT_OUT: &[&str] = &[
    "healthcheck",
    "update",
    "ports",
    "stop_grace_period",
    "proxy_protocol",
    "constraints",
    "spread",
    "resources",
    "volumes",
    "restart",
    "on_disconnect",
];

impl ServiceSpec {
    /// Parses and checks the body of `POST /api/v1/service`.
    pub fn from_json(body: &Value, limits: &Limits) -> Result<ServiceSpec, SpecError> {
        let object = as_object(body, CREATE_FIELDS)?;
        let name = required(object, "service", field_string)?;
        validate_service_name(&name)?;
        let image = optional(object, "image", field_image)?;
        let command = optional(object, "command", field_command)?;
        let env = optional(object, "env", field_env)?.unwrap_or_default();
        if image.is_none() && command.is_none() {
            // The original always sent an image: name the field it forgot.
            return Err(if object.contains_key("command") {
                SpecError::NothingToRun
            } else {
                SpecError::MissingImage
            });
        }
        let replicas = required(object, "replicas", |f, v| field_replicas(f, v, limits))?;
        Ok(ServiceSpec {
            name,
            image,
            replicas,
            command,
            env,
            healthcheck: optional(object, "healthcheck", |_, v| HealthCheck::from_json(v))?,
            update: optional(object, "update", |_, v| UpdatePolicy::from_json(v))?
                .unwrap_or_default(),
            ports: optional(object, "ports", |_, v| PortSpec::list_from_json(v))?
                .unwrap_or_default(),
            stop_grace_period: optional(object, "stop_grace_period", field_grace)?
                .unwrap_or(DEFAULT_STOP_GRACE_PERIOD),
            proxy_protocol: optional(object, "proxy_protocol", field_bool)?.unwrap_or(false),
            constraints: optional(object, "constraints", Constraint::list_from_json)?
                .unwrap_or_default(),
            spread: optional(object, "spread", Spread::from_json)?,
            resources: optional(object, "resources", Resources::from_json)?.unwrap_or_default(),
            volumes: optional(object, "volumes", |f, v| {
                VolumeSpec::list_from_json(f, v, &limits.allow_bind)
            })?
            .unwrap_or_default(),
            restart: optional(object, "restart", RestartPolicy::from_json)?.unwrap_or_default(),
            on_disconnect: optional(object, "on_disconnect", OnDisconnect::from_json)?
                .unwrap_or_default(),
        })
    }
}

/// The body of `POST /api/v1/service`: a whole spec, and which of the fields the
/// original API did not have were left out. A client of the original's (service, image,
/// replicas) re-POSTing to change the image must not drop a health check or an update
/// policy it never knew of: left out, the fields of `KEPT_WHEN_LEFT_OUT` keep the
/// service's own; given as null, they go back to their defaults (no health check, no
/// ports, 10 s of grace, no PROXY header, no constraints, no spread, no resources, no
/// volumes, restart `any`, on_disconnect `replace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePost {
    pub spec: ServiceSpec,
    /// The fields of `KEPT_WHEN_LEFT_OUT` the body gave (null included).
    pub given: Vec<&'static str>,
}

impl ServicePost {
    pub fn from_json(body: &Value, limits: &Limits) -> Result<ServicePost, SpecError> {
        let spec = ServiceSpec::from_json(body, limits)?;
        let given = KEPT_WHEN_LEFT_OUT
            .iter()
            .copied()
            .filter(|key| body.as_object().is_some_and(|o| o.contains_key(*key)))
            .collect();
        Ok(ServicePost { spec, given })
    }

    /// The spec to store over `old` (if the service exists).
    pub fn over(self, old: Option<&ServiceSpec>) -> ServiceSpec {
        let Some(old) = old else { return self.spec };
        let mut spec = self.spec;
        let kept = |key: &str| !self.given.contains(&key);
        if kept("healthcheck") {
            spec.healthcheck = old.healthcheck.clone();
        }
        if kept("update") {
            spec.update = old.update;
        }
        if kept("ports") {
            spec.ports = old.ports.clone();
        }
        if kept("stop_grace_period") {
            spec.stop_grace_period = old.stop_grace_period;
        }
        if kept("proxy_protocol") {
            spec.proxy_protocol = old.proxy_protocol;
        }
        if kept("constraints") {
            spec.constraints = old.constraints.clone();
        }
        if kept("spread") {
            spec.spread = old.spread.clone();
        }
        if kept("resources") {
            spec.resources = old.resources;
        }
        if kept("volumes") {
            spec.volumes = old.volumes.clone();
        }
        if kept("restart") {
            spec.restart = old.restart;
        }
        if kept("on_disconnect") {
            spec.on_disconnect = old.on_disconnect;
        }
        spec
    }
}

/// A partial update (`PATCH /api/v1/service/<name>`): only the fields given change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePatch {
    pub image: Option<String>,
    pub replicas: Option<u32>,
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub healthcheck: Option<HealthCheck>,
    pub update: Option<UpdatePolicy>,
    /// Replaces the whole list (`[]` removes every port).
    pub ports: Option<Vec<PortSpec>>,
    pub stop_grace_period: Option<Span>,
    pub proxy_protocol: Option<bool>,
    /// Replaces the whole list (`[]` removes every constraint).
    pub constraints: Option<Vec<Constraint>>,
    /// `Some(None)`: no spread (given as `""`).
    pub spread: Option<Option<Spread>>,
    pub resources: Option<Resources>,
    /// Replaces the whole list (`[]` removes every volume; the volumes are kept).
    pub volumes: Option<Vec<VolumeSpec>>,
    pub restart: Option<RestartPolicy>,
    pub on_disconnect: Option<OnDisconnect>,
}

impl ServicePatch {
    pub fn from_json(body: &Value, limits: &Limits) -> Result<ServicePatch, SpecError> {
        let object = as_object(body, PATCH_FIELDS)?;
        let patch = ServicePatch {
            image: optional(object, "image", field_image)?,
            replicas: optional(object, "replicas", |f, v| field_replicas(f, v, limits))?,
            command: optional(object, "command", field_command)?,
            env: optional(object, "env", field_env)?,
            healthcheck: optional(object, "healthcheck", |_, v| HealthCheck::from_json(v))?,
            update: optional(object, "update", |_, v| UpdatePolicy::from_json(v))?,
            ports: optional(object, "ports", |_, v| PortSpec::list_from_json(v))?,
            stop_grace_period: optional(object, "stop_grace_period", field_grace)?,
            proxy_protocol: optional(object, "proxy_protocol", field_bool)?,
            constraints: optional(object, "constraints", Constraint::list_from_json)?,
            spread: optional(object, "spread", |f, v| match v.as_str() {
                Some("") => Ok(None),
                _ => Spread::from_json(f, v).map(Some),
            })?,
            resources: optional(object, "resources", Resources::from_json)?,
            volumes: optional(object, "volumes", |f, v| {
                VolumeSpec::list_from_json(f, v, &limits.allow_bind)
            })?,
            restart: optional(object, "restart", RestartPolicy::from_json)?,
            on_disconnect: optional(object, "on_disconnect", OnDisconnect::from_json)?,
        };
        if patch == ServicePatch::default() {
            return Err(SpecError::EmptyPatch(
                "'image', 'replicas', 'command', 'env', 'healthcheck', 'update', 'ports', 'stop_grace_period', 'proxy_protocol', 'constraints', 'spread', 'resources', 'volumes', 'restart', 'on_disconnect'",
            ));
        }
        Ok(patch)
    }

    /// The spec after this patch is applied to `spec`.
    pub fn apply(&self, spec: &ServiceSpec) -> ServiceSpec {
        ServiceSpec {
            name: spec.name.clone(),
            image: self.image.clone().or_else(|| spec.image.clone()),
            replicas: self.replicas.unwrap_or(spec.replicas),
            command: self.command.clone().or_else(|| spec.command.clone()),
            env: self.env.clone().unwrap_or_else(|| spec.env.clone()),
            healthcheck: self
                .healthcheck
                .clone()
                .or_else(|| spec.healthcheck.clone()),
            update: self.update.unwrap_or(spec.update),
            ports: self.ports.clone().unwrap_or_else(|| spec.ports.clone()),
            stop_grace_period: self.stop_grace_period.unwrap_or(spec.stop_grace_period),
            proxy_protocol: self.proxy_protocol.unwrap_or(spec.proxy_protocol),
            constraints: self
                .constraints
                .clone()
                .unwrap_or_else(|| spec.constraints.clone()),
            spread: self.spread.clone().unwrap_or_else(|| spec.spread.clone()),
            resources: self.resources.unwrap_or(spec.resources),
            volumes: self.volumes.clone().unwrap_or_else(|| spec.volumes.clone()),
            restart: self.restart.unwrap_or(spec.restart),
            on_disconnect: self.on_disconnect.unwrap_or(spec.on_disconnect),
        }
    }
}

/// A service name becomes part of container and DNS names, so it must be a DNS label.
pub fn validate_service_name(name: &str) -> Result<(), SpecError> {
    let why = if name.is_empty() {
        Some("it must not be empty")
    } else if name.len() > 63 {
        Some("it must be at most 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase letters a-z, digits 0-9 and '-' are allowed")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("it must not start or end with '-'")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(SpecError::InvalidName {
            name: name.escape_debug().to_string(),
            why: why.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<ServiceSpec, SpecError> {
        ServiceSpec::from_json(&body, &Limits::default())
    }

    #[test]
    fn parses_the_originals_request() {
        let spec = parse(
            json!({"service": "hello-world", "image": "crccheck/hello-world", "replicas": 3}),
        );
        assert_eq!(
            spec,
            Ok(ServiceSpec {
                name: "hello-world".into(),
                image: Some("crccheck/hello-world".into()),
                replicas: 3,
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
            })
        );
    }

    #[test]
    fn refuses_bad_bodies_with_a_message_naming_the_problem() {
        let cases = [
            (json!([1, 2]), "JSON object"),
            (json!("x"), "JSON object"),
            (
                json!({"service": "a", "image": "b", "replicas": "3"}),
                "'replicas' must be an integer",
            ),
            (
                json!({"service": "a", "image": "b", "replicas": 3.5}),
                "'replicas' must be an integer",
            ),
            (
                json!({"service": "a", "image": "b", "replicas": -1}),
                "between 0 and 1000",
            ),
            (
                json!({"service": "a", "image": "b", "replicas": 1001}),
                "between 0 and 1000",
            ),
            (
                json!({"service": "a", "image": "b", "replica": 3}),
                "did you mean 'replicas'",
            ),
            (
                json!({"service": "a", "image": "b"}),
                "missing required field 'replicas'",
            ),
            (
                json!({"image": "b", "replicas": 1}),
                "missing required field 'service'",
            ),
            (
                json!({"service": 5, "image": "b", "replicas": 1}),
                "'service' must be a string",
            ),
            (
                json!({"service": "Hello", "image": "b", "replicas": 1}),
                "invalid service name",
            ),
            (
                json!({"service": "-a", "image": "b", "replicas": 1}),
                "start or end",
            ),
            (
                json!({"service": "a".repeat(64), "image": "b", "replicas": 1}),
                "63",
            ),
            (
                json!({"service": "a", "image": "Bad Image", "replicas": 1}),
                "invalid image",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body.clone())
                .expect_err(&body.to_string())
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn a_command_may_stand_in_for_the_image() {
        let spec = parse(
            json!({"service": "a", "command": ["sleep", "60"], "env": {"X_1": "y"}, "replicas": 1}),
        )
        .expect("command-only service");
        assert_eq!(spec.image, None);
        assert_eq!(
            spec.command,
            Some(vec!["sleep".to_string(), "60".to_string()])
        );
        assert_eq!(spec.env.get("X_1").map(String::as_str), Some("y"));
        let cases = [
            (
                json!({"service": "a", "replicas": 1}),
                "missing required field 'image'",
            ),
            (
                json!({"service": "a", "command": null, "replicas": 1}),
                "an 'image', a 'command', or both",
            ),
            (
                json!({"service": "a", "command": "sleep 60", "replicas": 1}),
                "list of strings",
            ),
            (
                json!({"service": "a", "command": [], "replicas": 1}),
                "1 to 256",
            ),
            (
                json!({"service": "a", "command": ["sleep", 60], "replicas": 1}),
                "item 1 must be a string",
            ),
            (
                json!({"service": "a", "command": ["x"], "env": {"1X": "y"}, "replicas": 1}),
                "variable name",
            ),
            (
                json!({"service": "a", "command": ["x"], "env": {"X": 1}, "replicas": 1}),
                "must be a string",
            ),
            (
                json!({"service": "a", "command": ["x"], "env": ["X=1"], "replicas": 1}),
                "object of strings",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body.clone())
                .expect_err(&body.to_string())
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn zero_replicas_and_the_limit_itself_are_allowed() {
        assert!(parse(json!({"service": "a", "image": "b", "replicas": 0})).is_ok());
        assert!(parse(json!({"service": "a", "image": "b", "replicas": 1000})).is_ok());
        let tight = Limits {
            max_replicas: 5,
            ..Limits::default()
        };
        let err = ServiceSpec::from_json(
            &json!({"service": "a", "image": "b", "replicas": 6}),
            &tight,
        );
        assert!(err.is_err());
    }

    #[test]
    fn patch_needs_a_field_and_keeps_the_rest() {
        let limits = Limits::default();
        assert!(ServicePatch::from_json(&json!({}), &limits).is_err());
        assert!(ServicePatch::from_json(&json!({"service": "x"}), &limits).is_err());
        let patch = ServicePatch::from_json(&json!({"replicas": 7}), &limits).unwrap();
        let spec = ServiceSpec {
            name: "a".into(),
            image: Some("img".into()),
            replicas: 1,
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
        assert_eq!(patch.apply(&spec).replicas, 7);
        assert_eq!(patch.apply(&spec).image.as_deref(), Some("img"));
    }

    #[test]
    fn a_post_that_leaves_the_new_fields_out_keeps_them() {
        let limits = Limits::default();
        let old = ServiceSpec::from_json(
            &json!({"service": "a", "image": "x", "replicas": 2,
                    "healthcheck": {"tcp": {"port": 80}}, "update": {"order": "stop-first"}}),
            &limits,
        )
        .expect("old");
        // The original's body: image and replicas only.
        let post = ServicePost::from_json(
            &json!({"service": "a", "image": "y", "replicas": 3}),
            &limits,
        )
        .expect("post");
        let kept = post.over(Some(&old));
        assert_eq!((kept.image.as_deref(), kept.replicas), (Some("y"), 3));
        assert_eq!(kept.healthcheck, old.healthcheck);
        assert_eq!(kept.update, old.update);
        // Given as null: removed, and back to the defaults.
        let post = ServicePost::from_json(
            &json!({"service": "a", "image": "y", "replicas": 3, "healthcheck": null, "update": null}),
            &limits,
        )
        .expect("post");
        let replaced = post.over(Some(&old));
        assert_eq!(replaced.healthcheck, None);
        assert_eq!(replaced.update, UpdatePolicy::default());
    }
}
