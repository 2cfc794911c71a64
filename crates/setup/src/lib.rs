//! Setting up and managing a MyCluster cluster on one Docker host, as the original's
//! `setupCluster.sh` and `manageCluster.sh` did with docker-compose: its network, data
//! volume and role containers (manager, monitor, workers, and Redis for that store), the
//! images they run (built on the local engine from the running `mycluster` binary, no
//! registry needed), and the settings and tokens saved for each cluster so that
//! `manage`, `token` and every client command find it again with no flags.
//!
//! Start reading at `setup` (what a cluster should be, from the options and what was
//! saved) and `up` (making the host match it); `host` is every Engine API call they make,
//! `images` the images and `settings` what is saved. `secret` and `tokens` say where
//! tokens are kept and which one each role presents. The `mycluster` binary calls this
//! crate for `setup`, `manage`, `image demo` and `token` (and `agent` for the join token
//! saved beside a cluster's settings); the agent crate and the runtimes do not depend on
//! it.

mod error;
pub mod host;
mod image_builder;
pub mod images;
mod manage;
mod ps;
pub mod secret;
pub mod settings;
mod setup;
pub mod tokens;
mod up;

pub use error::SetupError;
pub use manage::{manage, ManageCommand};
pub use secret::Secrets;
pub use setup::{setup, SetupOptions, StoreKind};
