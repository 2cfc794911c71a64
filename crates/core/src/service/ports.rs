//! A service's ports: which ports its tasks listen on (`target`), and which of them the
//! cluster's ingress publishes (`published`) and balances across the healthy replicas.
//! A port without `published` is named for discovery only (`GET
//! /api/v1/service/<name>/endpoints`, the service's name on the cluster network).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{check_fields, describe};
use super::SpecError;

/// The most ports one service may name.
pub const MAX_PORTS: usize = 64;

/// The transport of a port. Only TCP is carried today; the field is there so UDP can be
/// added without changing the spec's shape.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
}

/// One port of a service: `{"published": 8080, "target": 8000}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PortSpec {
    /// The port the ingress listens on for this service; none: discovery only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent rather than null in an answer.
    #[schemars(with = "u16")]
    pub published: Option<u16>,
    /// The port the service's tasks listen on.
    pub target: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

const FIELDS: &[&str] = &["published", "target", "protocol"];

impl PortSpec {
    /// Parses `ports`: a list of `{"published"?, "target", "protocol"?}`, at most
    /// [`MAX_PORTS`], no published port twice.
    pub fn list_from_json(value: &Value) -> Result<Vec<PortSpec>, SpecError> {
        let Value::Array(items) = value else {
            return Err(SpecError::Invalid {
                field: "ports".into(),
                why: format!(
                    "must be a list like [{{\"published\": 8080, \"target\": 8000}}], got {}",
                    describe(value)
                ),
            });
        };
        if items.len() > MAX_PORTS {
            return Err(SpecError::Invalid {
                field: "ports".into(),
                why: format!("must hold at most {MAX_PORTS} ports, got {}", items.len()),
            });
        }
        let mut ports: Vec<PortSpec> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let port = PortSpec::from_json(&format!("ports[{i}]"), item)?;
            if let Some(published) = port.published {
                if ports.iter().any(|p| p.published == Some(published)) {
                    return Err(SpecError::Invalid {
                        field: format!("ports[{i}].published"),
                        why: format!("publishes port {published} a second time"),
                    });
                }
            }
            if ports.contains(&port) {
                return Err(SpecError::Invalid {
                    field: format!("ports[{i}]"),
                    why: format!("names target port {} a second time", port.target),
                });
            }
            ports.push(port);
        }
        Ok(ports)
    }

    fn from_json(field: &str, value: &Value) -> Result<PortSpec, SpecError> {
        let object = check_fields(field, value, FIELDS)?;
        let port = |key: &str, value: &Value| -> Result<u16, SpecError> {
            match value.as_u64() {
                Some(n @ 1..=65535) => Ok(n as u16),
                _ => Err(SpecError::Invalid {
                    field: format!("{field}.{key}"),
                    why: format!("must be a port from 1 to 65535, got {}", describe(value)),
                }),
            }
        };
        let target = match object.get("target") {
            None | Some(Value::Null) => {
                return Err(SpecError::Invalid {
                    field: format!("{field}.target"),
                    why: "is required: the port the service's tasks listen on".into(),
                })
            }
            Some(v) => port("target", v)?,
        };
        let published = match object.get("published") {
            None | Some(Value::Null) => None,
            Some(v) => Some(port("published", v)?),
        };
        let protocol = match object.get("protocol") {
            None | Some(Value::Null) => Protocol::Tcp,
            Some(Value::String(s)) if s == "tcp" => Protocol::Tcp,
            Some(Value::String(s)) if s == "udp" => {
                return Err(SpecError::Invalid {
                    field: format!("{field}.protocol"),
                    why: "\"udp\" is not supported yet: only \"tcp\" ports can be published".into(),
                })
            }
            Some(v) => {
                return Err(SpecError::Invalid {
                    field: format!("{field}.protocol"),
                    why: format!("must be \"tcp\", got {}", describe(v)),
                })
            }
        };
        Ok(PortSpec {
            published,
            target,
            protocol,
        })
    }

    /// `8080:8000` (published) or `8000` (discovery only), as the CLI writes it.
    pub fn parse_flag(text: &str) -> Result<PortSpec, String> {
        let bad = || {
            format!(
                "'{}' is not a port: write PUBLISHED:TARGET (e.g. 8080:8000) or TARGET, optionally followed by /tcp",
                text.escape_debug()
            )
        };
        let (ports, protocol) = match text.split_once('/') {
            None => (text, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((_, "udp")) => return Err("UDP ports are not supported yet: use tcp".into()),
            Some(_) => return Err(bad()),
        };
        let number = |s: &str| match s.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad()),
        };
        let (published, target) = match ports.split_once(':') {
            Some((published, target)) => (Some(number(published)?), number(target)?),
            None => (None, number(ports)?),
        };
        Ok(PortSpec {
            published,
            target,
            protocol,
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.published {
            Some(published) => write!(f, "{published}->{}/tcp", self.target),
            None => write!(f, "{}/tcp", self.target),
        }
    }
}

/// The distinct ports of `targets`, in order: what a task listens on.
pub fn distinct(targets: impl IntoIterator<Item = u16>) -> Vec<u16> {
    let mut targets: Vec<u16> = targets.into_iter().collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_published_and_discovery_only_ports() {
        let ports = PortSpec::list_from_json(
            &json!([{"published": 8080, "target": 8000}, {"target": 9000, "protocol": "tcp"}]),
        )
        .expect("valid");
        assert_eq!(
            ports,
            vec![
                PortSpec {
                    published: Some(8080),
                    target: 8000,
                    protocol: Protocol::Tcp
                },
                PortSpec {
                    published: None,
                    target: 9000,
                    protocol: Protocol::Tcp
                }
            ]
        );
        assert_eq!(
            serde_json::to_value(&ports).expect("json"),
            json!([{"published": 8080, "target": 8000, "protocol": "tcp"},
                   {"target": 9000, "protocol": "tcp"}])
        );
        assert_eq!(distinct(ports.iter().map(|p| p.target)), vec![8000, 9000]);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (json!({"target": 1}), "must be a list"),
            (
                json!([{"published": 8080}]),
                "'ports[0].target' is required",
            ),
            (json!([{"target": 0}]), "'ports[0].target' must be a port"),
            (
                json!([{"target": 70000}]),
                "'ports[0].target' must be a port",
            ),
            (
                json!([{"target": 80, "published": "x"}]),
                "'ports[0].published'",
            ),
            (
                json!([{"target": 80, "protocol": "udp"}]),
                "not supported yet",
            ),
            (
                json!([{"target": 80, "port": 1}]),
                "unknown field 'ports[0].port'",
            ),
            (
                json!([{"published": 80, "target": 1}, {"published": 80, "target": 2}]),
                "'ports[1].published' publishes port 80 a second time",
            ),
            (json!([{"target": 1}, {"target": 1}]), "a second time"),
        ];
        for (body, expected) in cases {
            let err = PortSpec::list_from_json(&body)
                .expect_err("refused")
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn cli_flags() {
        assert_eq!(
            PortSpec::parse_flag("8080:8000").expect("ok"),
            PortSpec {
                published: Some(8080),
                target: 8000,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            PortSpec::parse_flag("9000/tcp").expect("ok").published,
            None
        );
        for bad in ["", "x", "0:80", "80:", "8080:8000/sctp", "70000:1"] {
            assert!(PortSpec::parse_flag(bad).is_err(), "{bad}");
        }
        assert!(PortSpec::parse_flag("53:53/udp")
            .expect_err("udp")
            .contains("not supported"));
    }
}
