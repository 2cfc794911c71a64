//! The one shape of every error answer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every error answer of the API: `{"message": "...", "code": N}` with the HTTP status
/// `N`, keys in the order people expect to read them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct ErrorDoc {
    pub message: String,
    pub code: u16,
}
