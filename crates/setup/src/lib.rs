//! Setting up and managing a MyCluster cluster on one Docker host, as the original's
//! `setupCluster.sh` and `manageCluster.sh` did with docker-compose: its network, data
//! volume and role containers (manager, monitor, workers, and Redis for that store), the
//! images they run (built on the local engine from the running `mycluster` binary, no
//! registry needed), and the settings and tokens saved for each cluster so that
//! `manage`, `token` and every client command find it again with no flags.
//!
//! A set-up cluster heals itself: every role container has the restart policy
//! `unless-stopped` (a crashed one, or all of them after the engine restarts, come
//! back; one an operator `docker stop`ped stays stopped), and each worker's agent runs
//! the `keeper`, which starts again a control-plane container (manager, monitor,
//! ingress, redis) that was `docker kill`ed, which the engine's policy counts as a stop.
//! Workers are not kept: a stopped or killed worker is a lost machine, and the monitor
//! relocates its work.
//!
//! Start reading at `setup` (what a cluster should be, from the options and what was
//! saved) and `up` (making the host match it); `host` is every Engine API call they make,
//! `images` the images and `settings` what is saved. `secret` and `tokens` say where
//! tokens are kept and which one each role presents; `keeper` is the control plane's
//! keeper. The `mycluster` binary calls this crate for `setup`, `manage`, `image demo`
//! and `token`, and `agent` for the join token saved beside a cluster's settings and
//! for the keeper (`--keep-cluster`); the agent crate and the runtimes do not depend on
//! it.

pub mod ca;
mod converge;
mod error;
pub mod host;
mod image_builder;
pub mod images;
pub mod keeper;
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
