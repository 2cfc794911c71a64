//! What can stop a benchmark, in the words `mycluster bench` prints.

use std::error::Error;

/// Every failure of a benchmark part. Where a cause is kept as the source, the CLI
/// prints it after a colon (and `chain` does, for figures not measured).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The benchmark cannot go on; the text says why.
    #[error("{0}")]
    Failed(String),
    /// `what` was being done when `source` happened.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] mycluster_client::ClientError),
    #[error(transparent)]
    Docker(#[from] bollard::errors::Error),
    #[error(transparent)]
    Setup(#[from] mycluster_setup::SetupError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Int(#[from] std::num::TryFromIntError),
}

impl BenchError {
    /// `what` was being done when `source` happened.
    pub fn context(what: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        BenchError::Context {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// The error and each of its causes, joined by ": " (what a figure not measured shows).
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text = format!("{text}: {e}");
        cause = e.source();
    }
    text
}
