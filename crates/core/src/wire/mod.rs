//! The wire contract: every request and answer exchanged by the manager, its agents, the
//! monitor and the CLI, as serde types — one place to read what crosses the network, and
//! the types the OpenAPI document is checked against (`crates/manager/tests`).

pub mod down;

pub use down::{DownDoc, DownManyDoc, RelocationDoc, SkippedDoc};
