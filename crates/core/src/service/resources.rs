//! What a task needs and may use: `"resources": {"reservations": {"cpus": 0.5, "memory":
//! "256M"}, "limits": {"cpus": 1, "memory": "512M"}}`. Reservations are what the
//! scheduler sets aside on a worker (never more than the worker's capacity); limits are
//! what the runtime enforces (Docker's CPU quota and memory limit, a cgroup for the
//! process driver).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{check_fields, describe};
use super::SpecError;

/// CPUs in thousandths (`0.5` is 500): exact sums, and Docker's NanoCPUs are a multiple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cpus(pub u64);

impl Cpus {
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Docker's `NanoCpus`.
    pub fn nanos(self) -> i64 {
        i64::try_from(self.0.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Cpus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cpus, D::Error> {
        let value = f64::deserialize(d)?;
        cpus_from_f64(value).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Cpus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cpus".into()
    }

    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        f64::json_schema(gen)
    }
}

/// The most CPUs a reservation, a limit or a worker's capacity may name.
pub const MAX_CPUS: u64 = 1 << 20;

fn cpus_from_f64(value: f64) -> Result<Cpus, String> {
    if !value.is_finite() || value <= 0.0 || value > MAX_CPUS as f64 {
        return Err(format!(
            "must be a number of CPUs above 0 and at most {MAX_CPUS}, got {value}"
        ));
    }
    let millis = (value * 1000.0).round() as u64;
    if millis == 0 {
        return Err(format!("must be at least 0.001 CPUs, got {value}"));
    }
    Ok(Cpus(millis))
}

/// A size in bytes. Read from a number of bytes or a string with a binary unit, as
/// Docker reads `--memory`: `"256M"`, `"1.5G"`, `"512MiB"`, `"64k"`; written as bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn parse(text: &str) -> Result<Bytes, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim());
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => {
                return Err(format!(
                    "'{}' must be a size such as \"256M\", \"1.5G\" or a number of bytes",
                    text.escape_debug()
                ))
            }
        };
        let value: f64 = number.parse().map_err(|_| {
            format!(
                "'{}' must be a size such as \"256M\", \"1.5G\" or a number of bytes",
                text.escape_debug()
            )
        })?;
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > (1u64 << 60) as f64 {
            return Err(format!(
                "'{}' must be at least 1 byte and at most 1 EiB",
                text.escape_debug()
            ));
        }
        Ok(Bytes(bytes.round() as u64))
    }
}

impl fmt::Display for Bytes {
    /// "512 MiB", "1.5 GiB", "300 B".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, unit) in units {
            let size = 1u64 << shift;
            if self.0 >= size {
                let value = self.0 as f64 / size as f64;
                let text = format!("{value:.1}");
                let text = text.strip_suffix(".0").unwrap_or(&text);
                return write!(f, "{text} {unit}");
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Said {
            Number(u64),
            Text(String),
        }
        match Said::deserialize(d)? {
            Said::Number(n) => Ok(Bytes(n)),
            Said::Text(t) => Bytes::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for Bytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Bytes".into()
    }

    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        u64::json_schema(gen)
    }
}

/// CPUs and memory: a reservation, a limit, or what a worker has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, JsonSchema)]
pub struct Amount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
}

/// Read from a JSON object only, without unknown fields: serde's derive would also take
/// a sequence (`[cpus, memory]`) and ignore unknown keys.
impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            cpus: Option<Cpus>,
            #[serde(default)]
            memory: Option<Bytes>,
        }
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object {\"cpus\"?, \"memory\"?}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Amount, A::Error> {
                let f = Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Amount {
                    cpus: f.cpus,
                    memory: f.memory,
                })
            }
        }
        d.deserialize_map(Object)
    }
}

impl Amount {
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.memory.is_none()
    }

    fn from_json(field: &str, value: &Value) -> Result<Amount, SpecError> {
        let object = check_fields(field, value, &["cpus", "memory"])?;
        let invalid = |key: &str, why: String| SpecError::Invalid {
            field: format!("{field}.{key}"),
            why,
        };
        let cpus = match object.get("cpus") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                cpus_from_f64(n.as_f64().unwrap_or(f64::NAN)).map_err(|w| invalid("cpus", w))?,
            ),
            Some(other) => {
                return Err(invalid(
                    "cpus",
                    format!(
                        "must be a number of CPUs (e.g. 0.5), got {}",
                        describe(other)
                    ),
                ))
            }
        };
        let memory = match object.get("memory") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(b) if b > 0 => Some(Bytes(b)),
                _ => {
                    return Err(invalid(
                        "memory",
                        format!(
                        "must be a positive number of bytes or a size such as \"256M\", got {n}"
                    ),
                    ))
                }
            },
            Some(Value::String(s)) => Some(Bytes::parse(s).map_err(|w| invalid("memory", w))?),
            Some(other) => {
                return Err(invalid(
                    "memory",
                    format!("must be a size such as \"256M\", got {}", describe(other)),
                ))
            }
        };
        Ok(Amount { cpus, memory })
    }

    /// The two amounts added (unknown counts as nothing).
    pub fn plus(self, other: Amount) -> Amount {
        let cpus = match (self.cpus, other.cpus) {
            (None, None) => None,
            (a, b) => Some(Cpus(
                a.unwrap_or_default()
                    .0
                    .saturating_add(b.unwrap_or_default().0),
            )),
        };
        let memory = match (self.memory, other.memory) {
            (None, None) => None,
            (a, b) => Some(Bytes(
                a.unwrap_or_default()
                    .0
                    .saturating_add(b.unwrap_or_default().0),
            )),
        };
        Amount { cpus, memory }
    }
}

/// The smallest memory limit Docker accepts (it refuses less than 6 MiB).
pub const MIN_MEMORY_LIMIT: Bytes = Bytes(6 << 20);

/// What a task reserves on its worker and may use at most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Resources {
    #[serde(default)]
    pub reservations: Amount,
    #[serde(default)]
    pub limits: Amount,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.reservations.is_empty() && self.limits.is_empty()
    }

    /// Parses `resources`: `{"reservations"?: {"cpus"?, "memory"?}, "limits"?: {...}}`.
    /// A reservation above its limit is refused (it could never be used).
    pub fn from_json(field: &str, value: &Value) -> Result<Resources, SpecError> {
        let object = check_fields(field, value, &["reservations", "limits"])?;
        let amount = |key: &str| match object.get(key) {
            None | Some(Value::Null) => Ok(Amount::default()),
            Some(v) => Amount::from_json(&format!("{field}.{key}"), v),
        };
        let resources = Resources {
            reservations: amount("reservations")?,
            limits: amount("limits")?,
        };
        let (r, l) = (resources.reservations, resources.limits);
        if let (Some(r), Some(l)) = (r.cpus, l.cpus) {
            if r > l {
                return Err(SpecError::Invalid {
                    field: format!("{field}.reservations.cpus"),
                    why: format!("must not exceed the limit ({r} > {l})"),
                });
            }
        }
        if let (Some(r), Some(l)) = (r.memory, l.memory) {
            if r > l {
                return Err(SpecError::Invalid {
                    field: format!("{field}.reservations.memory"),
                    why: format!("must not exceed the limit ({r} > {l})"),
                });
            }
        }
        if let Some(l) = l.memory.filter(|l| *l < MIN_MEMORY_LIMIT) {
            return Err(SpecError::Invalid {
                field: format!("{field}.limits.memory"),
                why: format!("must be at least {MIN_MEMORY_LIMIT} (Docker refuses less), got {l}"),
            });
        }
        Ok(resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_read_as_docker_reads_them() {
        assert_eq!(Bytes::parse("256M"), Ok(Bytes(256 << 20)));
        assert_eq!(Bytes::parse("1.5G"), Ok(Bytes(3 << 29)));
        assert_eq!(Bytes::parse("512MiB"), Ok(Bytes(512 << 20)));
        assert_eq!(Bytes::parse("64k"), Ok(Bytes(64 << 10)));
        assert_eq!(Bytes::parse("1000"), Ok(Bytes(1000)));
        assert!(Bytes::parse("lots").is_err());
        assert!(Bytes::parse("0").is_err());
        assert!(Bytes::parse("-5M").is_err());
        assert_eq!(Bytes(512 << 20).to_string(), "512 MiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Cpus(500).to_string(), "0.5");
        assert_eq!(Cpus(2000).to_string(), "2");
    }

    #[test]
    fn resources_are_checked_field_by_field() {
        let ok = Resources::from_json(
            "resources",
            &json!({"reservations": {"cpus": 0.5, "memory": "256M"}, "limits": {"cpus": 1, "memory": "512M"}}),
        )
        .expect("valid");
        assert_eq!(ok.reservations.cpus, Some(Cpus(500)));
        assert_eq!(ok.limits.memory, Some(Bytes(512 << 20)));
        let text = serde_json::to_string(&ok).expect("writes");
        let back: Resources = serde_json::from_str(&text).expect("reads");
        assert_eq!(back, ok);
        let err = |v| {
            Resources::from_json("resources", &v)
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"limits": {"cpus": 0}})).contains("resources.limits.cpus"));
        assert!(err(json!({"limits": {"memory": "1M"}})).contains("at least 6 MiB"));
        assert!(
            err(json!({"reservations": {"memory": "1G"}, "limits": {"memory": "512M"}}))
                .contains("must not exceed the limit")
        );
        assert!(err(json!({"limit": {}})).contains("did you mean 'limits'"));
    }
}
