//! What can go wrong while setting up or managing a cluster, in the words the CLI prints.

/// Every failure of this crate. The texts are what `mycluster` prints after `error:`;
/// where a cause is kept as the source, the CLI prints it after a colon.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid cluster name '{0}': 1-40 letters, digits, '-' or '_', starting with a letter or digit")]
    InvalidName(String),
    #[error("the metrics token must differ from the cluster's API and join tokens: it only reads /metrics")]
    MetricsToken,
    #[error("--workers must be between 1 and 100")]
    Workers,
    #[error("cluster '{name}' keeps its state in the {store} store: run `mycluster store copy` to move it, or remove the cluster first")]
    StoreMoved { name: String, store: String },
    #[error(
        "cluster '{0}' is a `mycluster dev` cluster: it runs in that process (stop it with Ctrl-C)"
    )]
    DevCluster(String),
    #[error("cannot find a free port for the API")]
    NoFreePort(#[source] std::io::Error),
    #[error(
        "--port and --tls-port are both {0}: the API's local port and its TLS port must differ"
    )]
    SamePorts(u16),
    #[error("the manager's port was not published")]
    NotPublished,
    #[error("{manager} publishes its API on port {published}, not {port}: remove it (`docker rm -f {manager}`) and run this again")]
    PortMismatch {
        manager: String,
        published: u16,
        port: u16,
    },
    #[error("the cluster did not become ready within 90 s: see `docker logs {0}_manager_1` and the workers' logs")]
    NotReady(String),
    /// `manage` without `--name`, and no cluster set up here.
    #[error("no cluster was set up on this machine: give --name, or run mycluster setup")]
    NothingToManage,
    #[error("cluster '{0}' was not set up on this machine: run mycluster setup --name {0}")]
    NotSetUp(String),
    #[error("no cluster '{0}' was set up here")]
    NoSuchCluster(String),
    /// `token` without `--name`, and no cluster set up here.
    #[error("no cluster was set up here: run `mycluster setup` or `mycluster dev`")]
    NothingSetUp,
    #[error("cluster '{0}' has no token: its manager runs without authentication")]
    NoToken(String),
    #[error("the manager of cluster '{0}' has no CA: it serves no TLS (see `docker logs {0}_manager_1`)")]
    NoCa(String),
    #[error(transparent)]
    Tls(#[from] mycluster_tls::TlsError),
    #[error("no Redis image: install redis-server on this host (setup builds the image from it), or give --redis-image")]
    NoRedis,
    #[error("cannot package this binary into an image")]
    Package(#[source] Box<SetupError>),
    /// A file could not be read or written; `what` names it.
    #[error("{what}")]
    File {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The Docker engine refused or failed a call; the text says which and why.
    #[error("{0}")]
    Engine(String),
    /// An image build failed; the text says which and why.
    #[error("{0}")]
    Build(String),
    #[error(transparent)]
    Runtime(#[from] mycluster_runtime::RuntimeError),
    #[error(transparent)]
    Client(#[from] mycluster_client::ClientError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl SetupError {
    /// A file error: `what` was being done (e.g. "cannot read /x") when `source` happened.
    pub fn io(what: String, source: std::io::Error) -> SetupError {
        SetupError::File { what, source }
    }
}
