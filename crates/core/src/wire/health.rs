//! Whether a manager can do its work (`GET /healthz`), how its store was repaired
//! (`POST /api/v1/store/reseed`), and whether an agent is alive (its own `GET /healthz`,
//! which the monitor probes).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Driver;

/// `GET /healthz`: whether the manager can write its store. Answered with 200 when
/// `ok`, 503 when `degraded` (the same document, with why).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct HealthDoc {
    pub status: HealthStatus,
    pub cluster: String,
    /// Which store, and where.
    pub store: String,
    /// The index of the last commit.
    pub index: u64,
    /// Why it is degraded, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Absent rather than null in an answer.
    #[schemars(with = "String")]
    pub message: Option<String>,
    /// 503 when degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u16")]
    pub code: Option<u16>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The store answers and takes writes.
    Ok,
    /// It does not, or it lost the manager's history: changes are refused (503).
    Degraded,
}

/// `POST /api/v1/store/reseed`: what was written back into the store.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct ReseedDoc {
    pub store: String,
    /// The store's index after the reseed.
    pub index: u64,
    pub services: usize,
    pub tasks: usize,
    pub workers: usize,
}

/// An agent's `GET /healthz`: it is up. The monitor probes it before declaring a silent
/// worker dead. Fields in alphabetical order, as the JSON map it was first built from
/// wrote them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct AgentHealthDoc {
    pub driver: Driver,
    /// Always `ok`: an agent that answers is up.
    pub status: HealthStatus,
    pub worker: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent's health answer keeps the bytes of the JSON map it was built from.
    #[test]
    fn an_agents_health_keeps_its_bytes() {
        let doc = AgentHealthDoc {
            driver: Driver::Process,
            status: HealthStatus::Ok,
            worker: "w1".into(),
        };
        // Keys in the order a `serde_json::Map` writes them: sorted, or as inserted when a
        // crate in the build turns on serde_json's `preserve_order` (thirtyfour, in the
        // tests' build): written sorted, both agree.
        let before = serde_json::json!({"driver": "process", "status": "ok", "worker": "w1"});
        assert_eq!(
            serde_json::to_string(&doc).expect("writes"),
            before.to_string()
        );
    }
}
