//! Where a service keeps its data: `"volumes": [{"source": "data", "target": "/data"}]`.
//! A named source is a volume per slot, `<service>-<source>-<slot>`, so a slot's
//! replacement gets the slot's data back; a source that is an absolute path is a bind
//! mount of the host's directory, allowed only under the directories the manager was
//! started with (`--allow-bind PATH`). The volumes that exist are recorded in the state
//! (`Volume`), with the host they live on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{check_fields, describe};
use super::SpecError;
use crate::Millis;

/// The most volumes one service may mount.
pub const MAX_VOLUMES: usize = 32;

/// One mount of a service's spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct VolumeSpec {
    /// A volume name (letters, digits, `_`, `.`, `-`): one volume per slot. Or an
    /// absolute host path: a bind mount.
    pub source: String,
    /// The absolute path inside the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl VolumeSpec {
    pub fn is_bind(&self) -> bool {
        self.source.starts_with('/')
    }

    /// Parses `volumes`, checking bind mounts against `allow_bind`.
    pub fn list_from_json(
        field: &str,
        value: &Value,
        allow_bind: &[String],
    ) -> Result<Vec<VolumeSpec>, SpecError> {
        let Value::Array(items) = value else {
            return Err(SpecError::Invalid {
                field: field.to_string(),
                why: format!(
                    "must be a list of {{\"source\", \"target\", \"read_only\"?}}, got {}",
                    describe(value)
                ),
            });
        };
        if items.len() > MAX_VOLUMES {
            return Err(SpecError::Invalid {
                field: field.to_string(),
                why: format!("must hold at most {MAX_VOLUMES} volumes"),
            });
        }
        let mut out: Vec<VolumeSpec> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let object = check_fields(&at, item, &["source", "target", "read_only"])?;
            let text = |key: &str| -> Result<String, SpecError> {
                match object.get(key) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    None | Some(Value::Null) => Err(SpecError::Invalid {
                        field: format!("{at}.{key}"),
                        why: "is required".into(),
                    }),
                    Some(other) => Err(SpecError::Invalid {
                        field: format!("{at}.{key}"),
                        why: format!("must be a string, got {}", describe(other)),
                    }),
                }
            };
            let source = text("source")?;
            let target = text("target")?;
            let read_only = match object.get("read_only") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(SpecError::Invalid {
                        field: format!("{at}.read_only"),
                        why: format!("must be true or false, got {}", describe(other)),
                    })
                }
            };
            let invalid = |key: &str, why: String| SpecError::Invalid {
                field: format!("{at}.{key}"),
                why,
            };
            check_path(&target).map_err(|why| invalid("target", why))?;
            if target == "/" {
                return Err(invalid("target", "must not be / itself".into()));
            }
            if source.starts_with('/') {
                check_path(&source).map_err(|why| invalid("source", why))?;
                if !bind_allowed(&source, allow_bind) {
                    let allowed = if allow_bind.is_empty() {
                        "the manager allows no bind mounts (start it with --allow-bind PATH)"
                            .to_string()
                    } else {
                        format!(
                            "the manager allows bind mounts only under {} (--allow-bind)",
                            allow_bind.join(", ")
                        )
                    };
                    return Err(invalid(
                        "source",
                        format!("is a bind mount of {source}, but {allowed}"),
                    ));
                }
            } else {
                check_volume_name(&source).map_err(|why| invalid("source", why))?;
            }
            if out.iter().any(|v| v.target == target) {
                return Err(invalid("target", format!("{target} is mounted twice")));
            }
            out.push(VolumeSpec {
                source,
                target,
                read_only,
            });
        }
        Ok(out)
    }
}

/// An absolute path without `.` or `..` parts, NUL, or a ':' (Docker's separator).
fn check_path(path: &str) -> Result<(), String> {
    let ok = path.starts_with('/')
        && path.len() <= 4096
        && !path.contains(['\0', ':'])
        && path.split('/').all(|part| part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an absolute path without '.', '..' or ':', got {:?}",
            path
        ))
    }
}

fn check_volume_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a volume name (1-64 letters, digits, '_', '.', '-') or an absolute host path, got {:?}",
            name
        ))
    }
}

/// Whether `path` is one of `allowed` or under one of them (by whole path parts:
/// `/srv/data` allows `/srv/data/x`, not `/srv/database`).
pub fn bind_allowed(path: &str, allowed: &[String]) -> bool {
    let path = path.trim_end_matches('/');
    allowed.iter().any(|dir| {
        let dir = dir.trim_end_matches('/');
        dir.is_empty() || path == dir || path.starts_with(&format!("{dir}/"))
    })
}

/// The volume of `service`'s slot for a named source: `<service>-<source>-<slot>`.
pub fn volume_name(service: &str, source: &str, slot: u32) -> String {
    format!("{service}-{source}-{slot}")
}

/// What one task mounts, resolved for its slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Mount {
    pub kind: MountKind,
    /// The volume's name (`<service>-<source>-<slot>`) or the host path.
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
}

impl Mount {
    /// The mounts of `service`'s slot.
    pub fn for_slot(service: &str, slot: u32, volumes: &[VolumeSpec]) -> Vec<Mount> {
        volumes
            .iter()
            .map(|v| Mount {
                kind: if v.is_bind() {
                    MountKind::Bind
                } else {
                    MountKind::Volume
                },
                source: if v.is_bind() {
                    v.source.clone()
                } else {
                    volume_name(service, &v.source, slot)
                },
                target: v.target.clone(),
                read_only: v.read_only,
            })
            .collect()
    }
}

/// A volume the cluster made for a slot, and where it lives. Kept after its service is
/// removed (unless removed with it), so the data is not lost by a mistake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Volume {
    /// `<service>-<source>-<slot>`.
    pub name: String,
    pub service: String,
    pub source: String,
    pub slot: u32,
    /// The host it lives on (as its workers' agents report it); empty: not known (a
    /// worker that did not say), so not pinned.
    pub host: String,
    /// The worker that first ran a task with it, for people.
    pub worker: String,
    /// Asked to be removed (`service rm --volumes`, `volume rm`): the agents of its host
    /// remove it once no task uses it, and the record goes.
    #[serde(default)]
    pub remove: bool,
    pub created_at: Millis,
}

impl Volume {
    /// Whether a service that exists mounts it: its slot is wanted and the service's spec
    /// names its source. Such a volume is not removed (`volume rm` refuses it).
    pub fn in_use(&self, state: &crate::ClusterState) -> bool {
        state.services.get(&self.service).is_some_and(|s| {
            self.slot < s.spec.replicas
                && s.spec
                    .volumes
                    .iter()
                    .any(|v| !v.is_bind() && v.source == self.source)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volumes_are_checked_and_binds_allowed_only_where_the_manager_says() {
        let allow = vec!["/srv/data".to_string()];
        let ok = VolumeSpec::list_from_json(
            "volumes",
            &json!([{"source": "data", "target": "/data"}, {"source": "/srv/data/x", "target": "/x", "read_only": true}]),
            &allow,
        )
        .expect("valid");
        assert_eq!(ok.len(), 2);
        assert!(ok[1].is_bind() && ok[1].read_only);
        let err = |v, allow: &[String]| {
            VolumeSpec::list_from_json("volumes", &v, allow)
                .unwrap_err()
                .to_string()
        };
        let e = err(json!([{"source": "/etc", "target": "/etc"}]), &[]);
        assert!(e.contains("--allow-bind"), "{e}");
        let e = err(json!([{"source": "/srv/database", "target": "/d"}]), &allow);
        assert!(e.contains("only under /srv/data"), "{e}");
        let e = err(
            json!([{"source": "/srv/data/../etc", "target": "/d"}]),
            &allow,
        );
        assert!(e.contains("volumes[0].source"), "{e}");
        let e = err(json!([{"source": "a", "target": "rel"}]), &allow);
        assert!(e.contains("volumes[0].target"), "{e}");
        let e = err(
            json!([{"source": "a", "target": "/d"}, {"source": "b", "target": "/d"}]),
            &allow,
        );
        assert!(e.contains("mounted twice"), "{e}");
        assert_eq!(
            Mount::for_slot("web", 2, &ok)[0].source,
            "web-data-2".to_string()
        );
    }
}
