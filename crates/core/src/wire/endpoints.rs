//! Endpoints on the wire: the ingress's route table (`GET /api/v1/endpoints`, long-polled
//! by each ingress) and one service's replicas for discovery (`GET
//! /api/v1/service/<name>/endpoints`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::endpoints::{Endpoint, Route};
use crate::service::PortSpec;

/// `GET /api/v1/endpoints[?version=V&wait=30s]`: every published port and the healthy
/// replicas behind it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct RouteTable {
    /// Pass it back as `?version=` to wait until the table differs from this one.
    pub version: String,
    /// By published port.
    pub routes: Vec<Route>,
}

/// `GET /api/v1/service/<name>/endpoints`: the service's ports and, for each target, the
/// replicas that serve it now.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct ServiceEndpoints {
    pub service: String,
    pub ports: Vec<PortSpec>,
    /// By target, then slot.
    pub endpoints: Vec<Endpoint>,
}
