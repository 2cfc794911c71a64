//! Health checks: how an agent tells that a running task serves, not just that its
//! process is alive. HTTP and TCP probes go from outside the task (its address on the
//! cluster network), `exec` runs inside it. The agent runs them and reports the task's
//! `health`; the manager only stores it and uses it (rollouts, replacement).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{check_fields, describe};
use super::SpecError;
use crate::span::Span;

/// A task's health, as its agent last judged it. Separate from its state: a task can be
/// running and unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not proven healthy yet (within its start period, or no probe passed yet).
    Starting,
    Healthy,
    /// Failed `retries` probes in a row; the task is replaced.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"healthcheck"` of a service: one probe and its timing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct HealthCheck {
    /// Exactly one of `http`, `tcp`, `exec`.
    #[serde(flatten)]
    pub probe: Probe,
    /// Between probes (default 5s).
    #[serde(default = "default_interval")]
    pub interval: Span,
    /// A probe that takes longer failed (default 2s).
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// Failures in a row that make the task unhealthy (default 3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Failures in this time after the start do not count (default 0s).
    #[serde(default)]
    pub start_period: Span,
}

/// What a probe tries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// An HTTP GET of `path` on the task's `port`: any 2xx or 3xx answer passes.
    Http { port: u16, path: String },
    /// A TCP connection to the task's `port`.
    Tcp { port: u16 },
    /// A command run inside the task (Docker exec; a child process for the process
    /// driver): exit 0 passes.
    Exec(Vec<String>),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http { port, path } => write!(f, "http :{port}{path}"),
            Probe::Tcp { port } => write!(f, "tcp :{port}"),
            Probe::Exec(argv) => write!(f, "exec {}", argv.join(" ")),
        }
    }
}

fn default_interval() -> Span {
    Span::secs(5)
}
fn default_timeout() -> Span {
    Span::secs(2)
}
fn default_retries() -> u32 {
    3
}

const FIELDS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "interval",
    "timeout",
    "retries",
    "start_period",
];

/// The longest interval, timeout, start period, delay or monitor a spec may set.
pub const MAX_SPAN: Span = Span::secs(3600);

impl HealthCheck {
    /// A probe with the default timing.
    pub fn new(probe: Probe) -> HealthCheck {
        HealthCheck {
            probe,
            interval: default_interval(),
            timeout: default_timeout(),
            retries: default_retries(),
            start_period: Span(0),
        }
    }

    /// Parses and checks `"healthcheck"`, naming the field at fault.
    pub fn from_json(value: &Value) -> Result<HealthCheck, SpecError> {
        let object = check_fields("healthcheck", value, FIELDS)?;
        let kinds: Vec<&str> = ["http", "tcp", "exec"]
            .into_iter()
            .filter(|k| object.get(*k).is_some_and(|v| !v.is_null()))
            .collect();
        let probe = match kinds.as_slice() {
            ["http"] => {
                let http = check_fields("healthcheck.http", &object["http"], &["port", "path"])?;
                let path = match http.get("path") {
                    None | Some(Value::Null) => "/".to_string(),
                    Some(Value::String(p)) if p.starts_with('/') && p.len() <= 1024 && !p.chars().any(char::is_control) && !p.contains(' ') => p.clone(),
                    Some(other) => {
                        return Err(invalid(
                            "healthcheck.http.path",
                            format!("must be a path starting with '/' (up to 1024 characters, no spaces), got {}", describe(other)),
                        ))
                    }
                };
                Probe::Http {
                    port: port("healthcheck.http.port", http)?,
                    path,
                }
            }
            ["tcp"] => {
                let tcp = check_fields("healthcheck.tcp", &object["tcp"], &["port"])?;
                Probe::Tcp {
                    port: port("healthcheck.tcp.port", tcp)?,
                }
            }
            ["exec"] => Probe::Exec(exec(&object["exec"])?),
            [] => {
                return Err(invalid(
                    "healthcheck",
                    "needs one probe: 'http' ({\"port\": 8000, \"path\": \"/\"}), 'tcp' ({\"port\": 5432}) or 'exec' ([\"cmd\", \"arg\"])".into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "healthcheck",
                    format!("takes one probe, got {}", kinds.join(" and ")),
                ))
            }
        };
        let check = HealthCheck {
            probe,
            interval: span_field(
                object,
                "healthcheck.interval",
                "interval",
                default_interval(),
            )?,
            timeout: span_field(object, "healthcheck.timeout", "timeout", default_timeout())?,
            retries: match object.get("retries") {
                None | Some(Value::Null) => default_retries(),
                Some(v) => match v.as_u64() {
                    Some(n @ 1..=100) => n as u32,
                    _ => {
                        return Err(invalid(
                            "healthcheck.retries",
                            format!("must be an integer from 1 to 100, got {}", describe(v)),
                        ))
                    }
                },
            },
            start_period: span_field(object, "healthcheck.start_period", "start_period", Span(0))?,
        };
        if check.interval < Span(100) {
            return Err(invalid(
                "healthcheck.interval",
                "must be at least 100ms".into(),
            ));
        }
        if check.timeout < Span(10) {
            return Err(invalid(
                "healthcheck.timeout",
                "must be at least 10ms".into(),
            ));
        }
        Ok(check)
    }
}

fn invalid(field: &str, why: String) -> SpecError {
    SpecError::Invalid {
        field: field.to_string(),
        why,
    }
}

fn port(field: &str, object: &Map<String, Value>) -> Result<u16, SpecError> {
    match object.get("port") {
        None | Some(Value::Null) => Err(SpecError::Invalid {
            field: field.to_string(),
            why: "is required".into(),
        }),
        Some(v) => match v.as_u64() {
            Some(p @ 1..=65535) => Ok(p as u16),
            _ => Err(invalid(
                field,
                format!("must be a port from 1 to 65535, got {}", describe(v)),
            )),
        },
    }
}

fn exec(value: &Value) -> Result<Vec<String>, SpecError> {
    let field = "healthcheck.exec";
    let Value::Array(items) = value else {
        return Err(invalid(
            field,
            format!(
                "must be a list of strings (e.g. [\"pg_isready\"]), got {}",
                describe(value)
            ),
        ));
    };
    if items.is_empty() || items.len() > 64 {
        return Err(invalid(field, "must hold 1 to 64 strings".into()));
    }
    let mut argv = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(arg)
                if !arg.contains('\0') && arg.len() <= 4096 && !(i == 0 && arg.is_empty()) =>
            {
                argv.push(arg.to_string())
            }
            _ => {
                return Err(invalid(
                    field,
                    format!(
                        "item {i} must be a non-empty string without NUL, got {}",
                        describe(item)
                    ),
                ))
            }
        }
    }
    Ok(argv)
}

/// A duration field of `object` (a string like "5s", or seconds), up to `MAX_SPAN`.
pub(crate) fn span_field(
    object: &Map<String, Value>,
    field: &str,
    key: &str,
    default: Span,
) -> Result<Span, SpecError> {
    let span = match object.get(key) {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::String(text)) => Span::parse(text).map_err(|why| invalid(field, why))?,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if (0.0..=MAX_SPAN.0 as f64 / 1000.0).contains(&s) => {
                Span((s * 1000.0).round() as u64)
            }
            _ => {
                return Err(invalid(
                    field,
                    format!("must be a duration from 0s to {MAX_SPAN}, got the number {n}"),
                ))
            }
        },
        Some(other) => {
            return Err(invalid(
                field,
                format!("must be a duration such as \"5s\", got {}", describe(other)),
            ))
        }
    };
    if span > MAX_SPAN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_SPAN}, got {span}"),
        ));
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_probe_with_defaults() {
        let check = HealthCheck::from_json(&json!({"http": {"port": 8000}})).expect("http");
        assert_eq!(
            check,
            HealthCheck::new(Probe::Http {
                port: 8000,
                path: "/".into()
            })
        );
        let check = HealthCheck::from_json(
            &json!({"tcp": {"port": 5432}, "interval": "1s", "timeout": 0.5, "retries": 5, "start_period": "10s"}),
        )
        .expect("tcp");
        assert_eq!(check.probe, Probe::Tcp { port: 5432 });
        assert_eq!(
            (
                check.interval,
                check.timeout,
                check.retries,
                check.start_period
            ),
            (Span(1000), Span(500), 5, Span(10_000))
        );
        let check = HealthCheck::from_json(&json!({"exec": ["test", "-f", "/ok"]})).expect("exec");
        assert_eq!(
            check.probe,
            Probe::Exec(vec!["test".into(), "-f".into(), "/ok".into()])
        );
    }

    #[test]
    fn stores_as_it_is_written() {
        let check = HealthCheck::from_json(
            &json!({"http": {"port": 8000, "path": "/health"}, "interval": "2s"}),
        )
        .expect("http");
        let text = serde_json::to_value(&check).expect("json");
        assert_eq!(
            text,
            json!({"http": {"port": 8000, "path": "/health"}, "interval": "2s", "timeout": "2s", "retries": 3, "start_period": "0s"})
        );
        let back: HealthCheck = serde_json::from_value(text.clone()).expect("reads back");
        assert_eq!(back, check);
        assert_eq!(HealthCheck::from_json(&text), Ok(check));
    }

    #[test]
    fn refuses_bad_checks_naming_the_field() {
        for (body, expected) in [
            (json!("curl"), "'healthcheck' must be an object"),
            (json!({}), "needs one probe"),
            (
                json!({"http": {"port": 1}, "tcp": {"port": 2}}),
                "takes one probe",
            ),
            (json!({"http": {}}), "healthcheck.http.port' is required"),
            (json!({"http": {"port": 70000}}), "from 1 to 65535"),
            (
                json!({"http": {"port": 80, "path": "health"}}),
                "starting with '/'",
            ),
            (
                json!({"http": {"port": 80, "pathh": "/"}}),
                "did you mean 'path'",
            ),
            (json!({"tcp": {"port": "80"}}), "from 1 to 65535"),
            (json!({"exec": "true"}), "list of strings"),
            (json!({"exec": []}), "1 to 64"),
            (
                json!({"exec": ["true"], "interval": "5"}),
                "healthcheck.interval",
            ),
            (
                json!({"exec": ["true"], "interval": "10ms"}),
                "at least 100ms",
            ),
            (json!({"exec": ["true"], "interval": "2h"}), "at most 1h"),
            (json!({"exec": ["true"], "retries": 0}), "from 1 to 100"),
            (
                json!({"exec": ["true"], "retrie": 2}),
                "did you mean 'retries'",
            ),
        ] {
            let err = HealthCheck::from_json(&body)
                .expect_err(&body.to_string())
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
