//! Where a service's tasks may run: constraints over a worker's attributes
//! (`"node.labels.disk == ssd"`, `"node.name != w1"`, `"node.driver == docker"`), and the
//! attribute its replicas are spread over first (`"spread": "node.labels.zone"`). Each
//! constraint explains a miss in words the scheduler counts per cause ("2 lack label
//! disk=ssd").

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::describe;
use super::SpecError;
use crate::Worker;

/// The most constraints one service may name.
pub const MAX_CONSTRAINTS: usize = 32;

/// A worker attribute a constraint or a spread names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attribute {
    /// `node.name`: the worker's name.
    Name,
    /// `node.driver`: `docker`, `process` or `sim`.
    Driver,
    /// `node.host`: the host the worker's agent runs on (its Docker engine's id, or the
    /// machine's id for the process driver), as its agent reported.
    Host,
    /// `node.labels.<key>`: a label from `mycluster agent --label` or `worker label`.
    Label(String),
}

impl Attribute {
    pub fn parse(text: &str) -> Result<Attribute, String> {
        match text {
            "node.name" => Ok(Attribute::Name),
            "node.driver" => Ok(Attribute::Driver),
            "node.host" => Ok(Attribute::Host),
            _ => match text.strip_prefix("node.labels.") {
                Some(key) if valid_label_key(key) => Ok(Attribute::Label(key.to_string())),
                Some(key) => Err(format!(
                    "label key '{}' must be 1-253 letters, digits, '.', '_', '-' or '/'",
                    key.escape_debug()
                )),
                None => Err(format!(
                    "'{}' is not a worker attribute: use node.name, node.driver, node.host or node.labels.<key>",
                    text.escape_debug()
                )),
            },
        }
    }

    /// The worker's value of the attribute (`None`: a label it does not have, or a driver
    /// or host its agent did not say).
    pub fn of<'a>(&self, worker: &'a Worker) -> Option<&'a str> {
        match self {
            Attribute::Name => Some(&worker.name),
            Attribute::Driver => worker.driver.map(|d| d.as_str()),
            Attribute::Host => Some(worker.host.as_str()).filter(|h| !h.is_empty()),
            Attribute::Label(key) => worker.labels.get(key).map(String::as_str),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Name => f.write_str("node.name"),
            Attribute::Driver => f.write_str("node.driver"),
            Attribute::Host => f.write_str("node.host"),
            Attribute::Label(key) => write!(f, "node.labels.{key}"),
        }
    }
}

/// What labels a worker may carry: keys of letters, digits, `.`, `_`, `-`, `/`.
pub fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

/// `==` or `!=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Eq,
    Ne,
}

/// One placement rule: `<attribute> == <value>` or `<attribute> != <value>`. A worker
/// without the label does not match `==` and does match `!=` (as Swarm's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Constraint {
    pub attribute: Attribute,
    pub op: Op,
    pub value: String,
}

impl JsonSchema for Constraint {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Constraint".into()
    }

    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(gen)
    }
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let (at, op) = match (text.find("=="), text.find("!=")) {
            (Some(eq), Some(ne)) if ne < eq => (ne, Op::Ne),
            (Some(eq), _) => (eq, Op::Eq),
            (None, Some(ne)) => (ne, Op::Ne),
            (None, None) => {
                return Err(format!(
                    "'{}' must be '<attribute> == <value>' or '<attribute> != <value>' (e.g. \"node.labels.disk == ssd\")",
                    text.escape_debug()
                ))
            }
        };
        let attribute = Attribute::parse(text[..at].trim())?;
        let value = text[at + 2..].trim();
        if value.is_empty() || value.len() > 253 || value.contains(['=', '!']) {
            return Err(format!(
                "the value in '{}' must be 1-253 characters without '=' or '!'",
                text.escape_debug()
            ));
        }
        Ok(Constraint {
            attribute,
            op,
            value: value.to_string(),
        })
    }

    /// Whether `worker` satisfies it.
    pub fn allows(&self, worker: &Worker) -> bool {
        let equal = self.attribute.of(worker) == Some(self.value.as_str());
        match self.op {
            Op::Eq => equal,
            Op::Ne => !equal,
        }
    }

    /// Why a worker that does not satisfy it is refused, in words that read after a
    /// count of workers: "lack label disk=ssd", "are named w1".
    pub fn miss(&self) -> String {
        let v = &self.value;
        match (&self.attribute, self.op) {
            (Attribute::Label(k), Op::Eq) => format!("lack label {k}={v}"),
            (Attribute::Label(k), Op::Ne) => format!("have label {k}={v}"),
            (Attribute::Name, Op::Eq) => format!("are not named {v}"),
            (Attribute::Name, Op::Ne) => format!("are named {v}"),
            (Attribute::Driver, Op::Eq) => format!("do not run the {v} driver"),
            (Attribute::Driver, Op::Ne) => format!("run the {v} driver"),
            (Attribute::Host, Op::Eq) => format!("are not on host {v}"),
            (Attribute::Host, Op::Ne) => format!("are on host {v}"),
        }
    }

    /// [`Constraint::miss`] for one worker: "lacks label disk=ssd", "is named w1".
    pub fn miss_one(&self) -> String {
        let v = &self.value;
        match (&self.attribute, self.op) {
            (Attribute::Label(k), Op::Eq) => format!("lacks label {k}={v}"),
            (Attribute::Label(k), Op::Ne) => format!("has label {k}={v}"),
            (Attribute::Name, Op::Eq) => format!("is not named {v}"),
            (Attribute::Name, Op::Ne) => format!("is named {v}"),
            (Attribute::Driver, Op::Eq) => format!("does not run the {v} driver"),
            (Attribute::Driver, Op::Ne) => format!("runs the {v} driver"),
            (Attribute::Host, Op::Eq) => format!("is not on host {v}"),
            (Attribute::Host, Op::Ne) => format!("is on host {v}"),
        }
    }

    /// Parses `constraints`: a list of strings, at most [`MAX_CONSTRAINTS`].
    pub fn list_from_json(field: &str, value: &Value) -> Result<Vec<Constraint>, SpecError> {
        let invalid = |why: String| SpecError::Invalid {
            field: field.to_string(),
            why,
        };
        let Value::Array(items) = value else {
            return Err(invalid(format!(
                "must be a list of strings (e.g. [\"node.labels.disk == ssd\"]), got {}",
                describe(value)
            )));
        };
        if items.len() > MAX_CONSTRAINTS {
            return Err(invalid(format!(
                "must hold at most {MAX_CONSTRAINTS} constraints"
            )));
        }
        let mut out: Vec<Constraint> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(text) = item.as_str() else {
                return Err(SpecError::Invalid {
                    field: format!("{field}[{i}]"),
                    why: format!("must be a string, got {}", describe(item)),
                });
            };
            let constraint = Constraint::parse(text).map_err(|why| SpecError::Invalid {
                field: format!("{field}[{i}]"),
                why,
            })?;
            if !out.contains(&constraint) {
                out.push(constraint);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "==",
            Op::Ne => "!=",
        };
        write!(f, "{} {op} {}", self.attribute, self.value)
    }
}

impl From<Constraint> for String {
    fn from(c: Constraint) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Constraint {
    type Error = String;
    fn try_from(text: String) -> Result<Constraint, String> {
        Constraint::parse(&text)
    }
}

/// The attribute a service's replicas are spread over before the usual spread over
/// workers (`"spread": "node.labels.zone"`): each value of it gets as even a share as
/// the workers allow. Workers without the label share one group of their own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Spread(pub Attribute);

impl JsonSchema for Spread {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Spread".into()
    }

    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(gen)
    }
}

impl Spread {
    pub fn from_json(field: &str, value: &Value) -> Result<Spread, SpecError> {
        let text = value.as_str().ok_or_else(|| SpecError::Invalid {
            field: field.to_string(),
            why: format!(
                "must be a worker attribute such as \"node.labels.zone\", got {}",
                describe(value)
            ),
        })?;
        Attribute::parse(text)
            .map(Spread)
            .map_err(|why| SpecError::Invalid {
                field: field.to_string(),
                why,
            })
    }
}

impl From<Spread> for String {
    fn from(s: Spread) -> String {
        s.0.to_string()
    }
}

impl TryFrom<String> for Spread {
    type Error = String;
    fn try_from(text: String) -> Result<Spread, String> {
        Attribute::parse(&text).map(Spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_read_and_write_back() {
        for text in [
            "node.labels.disk == ssd",
            "node.name != w1",
            "node.driver == docker",
            "node.host == abc",
        ] {
            let c = Constraint::parse(text).expect(text);
            assert_eq!(c.to_string(), text);
        }
        let c = Constraint::parse("  node.labels.zone==a ").expect("no spaces needed");
        assert_eq!(c.to_string(), "node.labels.zone == a");
        for bad in [
            "disk == ssd",
            "node.labels. == x",
            "node.labels.disk = ssd",
            "node.name ==",
            "node.name == a == b",
        ] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
        let e = Constraint::parse("node.cpu == 4").unwrap_err();
        assert!(e.contains("node.labels.<key>"), "{e}");
    }
}
