//! The event stream (`GET /api/v1/events`): one `EventDoc` per line (or per Server-Sent
//! Event), each numbered so that a client that stopped resumes with `?index=<the last
//! index it read>` and misses nothing. What each event says is the core's
//! [`Event`](crate::events::Event); its topic and type are spelled there.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::events::{Event, Topic};

/// One event as the stream writes it: `{"index": 42000001, "commit": 42, "time":
/// 1764160000.5, "topic": "task", "type": "task_state", ...the event's fields}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventDoc {
    /// Unique and increasing, also across manager restarts: resume after it with
    /// `?index=`. `commit × 1000000 + position` (see `mycluster_core::events`).
    pub index: u64,
    /// The commit (the state's index) that made it.
    pub commit: u64,
    /// When it was committed: Unix seconds with milliseconds.
    pub time: f64,
    pub topic: Topic,
    #[serde(flatten)]
    pub event: Event,
}
