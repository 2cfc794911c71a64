//! Drivers: the container runtime an agent drives, which decides what its worker can run.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map};

/// An agent's container runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Containers of the Docker Engine: runs images.
    Docker,
    /// Process trees under a supervisor: runs commands.
    Process,
    /// In-memory containers that start at once (scale tests): runs anything.
    Sim,
}

impl Driver {
    pub const ALL: [Driver; 3] = [Driver::Docker, Driver::Process, Driver::Sim];

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Docker => "docker",
            Driver::Process => "process",
            Driver::Sim => "sim",
        }
    }

    pub fn parse(name: &str) -> Option<Driver> {
        Driver::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schema of a driver that may be unsaid: a driver's name, or empty.
fn name_or_empty_schema() -> Schema {
    let mut names = vec![""];
    names.extend(Driver::ALL.map(Driver::as_str));
    let mut schema = Map::new();
    schema.insert("type".into(), json!("string"));
    schema.insert("enum".into(), json!(names));
    Schema::from(schema)
}

/// `Option<Driver>` as the API and the store have always written it: the driver's name,
/// or an empty string when the agent did not say (a worker registered by hand, or by an
/// agent older than drivers). Being a string either way, what older versions stored —
/// `""`, a name, or no field at all (`#[serde(default)]` beside it) — reads unchanged.
pub mod name_or_empty {
    use super::*;

    pub fn serialize<S: Serializer>(driver: &Option<Driver>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(driver.map_or("", Driver::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Driver>, D::Error> {
        let name = Cow::<str>::deserialize(d)?;
        if name.is_empty() {
            return Ok(None);
        }
        Driver::parse(&name).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown driver '{}': docker, process or sim",
                name.escape_debug()
            ))
        })
    }

    pub fn schema(_: &mut SchemaGenerator) -> Schema {
        name_or_empty_schema()
    }
}

/// `driver` in a registration, as the agent said it. Any string reads — one this manager
/// does not know too, so that `register_worker` refuses it with its own message, in its
/// own turn among the registration's checks — and is written as it was said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SaidDriver {
    /// Empty or absent: the agent did not say (it runs anything).
    #[default]
    NotSaid,
    Known(Driver),
    Unknown(String),
}

impl SaidDriver {
    /// The driver said (`None`: none), or the unknown name.
    pub fn known(&self) -> Result<Option<Driver>, &str> {
        match self {
            SaidDriver::NotSaid => Ok(None),
            SaidDriver::Known(driver) => Ok(Some(*driver)),
            SaidDriver::Unknown(name) => Err(name),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            SaidDriver::NotSaid => "",
            SaidDriver::Known(driver) => driver.as_str(),
            SaidDriver::Unknown(name) => name,
        }
    }
}

impl From<Driver> for SaidDriver {
    fn from(driver: Driver) -> SaidDriver {
        SaidDriver::Known(driver)
    }
}

impl From<Option<Driver>> for SaidDriver {
    fn from(driver: Option<Driver>) -> SaidDriver {
        driver.map_or(SaidDriver::NotSaid, SaidDriver::Known)
    }
}

impl Serialize for SaidDriver {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SaidDriver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SaidDriver, D::Error> {
        // Read as the string it always was: a null or a number is refused with serde's
        // usual words for a string field.
        let name = String::deserialize(d)?;
        Ok(if name.is_empty() {
            SaidDriver::NotSaid
        } else {
            Driver::parse(&name).map_or(SaidDriver::Unknown(name), SaidDriver::Known)
        })
    }
}

/// Documented as what a registration may say; anything else is refused.
impl JsonSchema for SaidDriver {
    fn schema_name() -> Cow<'static, str> {
        "SaidDriver".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        name_or_empty_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Stored {
        #[serde(default, with = "name_or_empty")]
        driver: Option<Driver>,
    }

    #[test]
    fn an_unsaid_driver_is_the_empty_string_it_always_was() {
        for (text, driver) in [
            (r#"{"driver":""}"#, None),
            (r#"{"driver":"docker"}"#, Some(Driver::Docker)),
            (r#"{"driver":"process"}"#, Some(Driver::Process)),
            (r#"{"driver":"sim"}"#, Some(Driver::Sim)),
        ] {
            let stored: Stored = serde_json::from_str(text).expect("reads");
            assert_eq!(stored, Stored { driver });
            assert_eq!(serde_json::to_string(&stored).expect("writes"), text);
        }
        // Written before drivers existed.
        let old: Stored = serde_json::from_str("{}").expect("reads");
        assert_eq!(old.driver, None);
        assert!(serde_json::from_str::<Stored>(r#"{"driver":"podman"}"#).is_err());
    }

    #[test]
    fn a_registration_says_any_driver_and_writes_it_back() {
        for (text, said) in [
            (r#""""#, SaidDriver::NotSaid),
            (r#""sim""#, SaidDriver::Known(Driver::Sim)),
            (r#""podman""#, SaidDriver::Unknown("podman".into())),
        ] {
            let read: SaidDriver = serde_json::from_str(text).expect("reads");
            assert_eq!(read, said);
            assert_eq!(serde_json::to_string(&read).expect("writes"), text);
        }
        assert_eq!(SaidDriver::Unknown("podman".into()).known(), Err("podman"));
        assert_eq!(
            SaidDriver::from(Driver::Docker).known(),
            Ok(Some(Driver::Docker))
        );
        // As strict about its type as the string it was.
        let null = serde_json::from_str::<SaidDriver>("null").expect_err("a string");
        assert_eq!(
            null.to_string(),
            "invalid type: null, expected a string at line 1 column 4"
        );
    }
}
