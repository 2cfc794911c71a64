//! Why a command was refused: the one error of the core's commands and the step. The
//! manager answers each with its status (not found: 404, invalid: 400, a conflict or a
//! limit: 409, forbidden: 403, revoked: 401); the message is what the user reads.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Service {0} was not registered for this cluster.")]
    ServiceNotFound(String),
    #[error("Worker {0} is not registered in this cluster.")]
    WorkerNotFound(String),
    #[error("Volume {0} is not known to this cluster (`mycluster volume ls` lists them).")]
    VolumeNotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The request no longer fits the state (e.g. a worker declared dead beat again).
    #[error("{0}")]
    Conflict(String),
    /// The request would take the cluster past one of its limits.
    #[error("{0}")]
    Limit(String),
    /// The caller's secret does not allow this (a worker's credential for another worker,
    /// the join token for a worker that has a credential): 403.
    #[error("{0}")]
    Forbidden(String),
    /// The caller's credential names no worker: revoked (see `identity::REVOKED`): 401.
    #[error("{0}")]
    Revoked(String),
}
