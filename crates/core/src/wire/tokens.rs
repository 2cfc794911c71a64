//! The join token on the wire (`GET /api/v1/cluster/join-token`, and its rotation): what
//! an operator copies to a new host.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The join token, as `mycluster join --token` takes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct JoinTokenDoc {
    /// `MCJT1-<sha256 of the CA certificate>-<secret>`; the bare secret when the manager
    /// serves no TLS (`--insecure-no-tls`): there is no CA to pin then.
    pub token: String,
    /// The SHA-256 of the cluster CA's certificate (hex); null without TLS.
    pub ca_sha256: Option<String>,
}
