//! Exits a driver announces as they happen (see [`crate::ContainerRuntime::exits`]): the
//! message, and the feed a pushing driver keeps — a broadcast channel, and the follower
//! that fills it, started by the first subscriber and stopped when the driver goes away.
//!
//! Why a broadcast of hints rather than a stream of states: the agent's sync pass already
//! knows how to read what really runs (`list`) and report it; what it lacks is knowing
//! *when* to look. An announcement only says "look now", so a missed or doubled one costs
//! nothing but a pass: the agent's periodic pass stays the safety net.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How many announcements a slow subscriber may fall behind before it is told it lagged
/// (and then looks at everything, as after [`Exit::Missed`]).
const CAPACITY: usize = 256;

/// What a pushing driver announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A container of this runtime's identity ended: it died (exited, or was killed) or
    /// the kernel killed a process of it for its memory. `task_id` is the task it ran;
    /// `container_id` the container (or process) as `list` names it.
    Ended {
        task_id: String,
        container_id: String,
    },
    /// Exits may have been missed (the driver's watch was cut, and is back): whoever
    /// listens should look at every container once.
    Missed,
}

/// A driver's feed of [`Exit`]s. Dropping it stops its follower.
pub(crate) struct ExitFeed {
    sender: broadcast::Sender<Exit>,
    started: Mutex<bool>,
    stop: CancellationToken,
}

impl ExitFeed {
    pub(crate) fn new() -> ExitFeed {
        ExitFeed {
            sender: broadcast::channel(CAPACITY).0,
            started: Mutex::new(false),
            stop: CancellationToken::new(),
        }
    }

    /// A new subscription. The first one starts `follow` (given the sender to announce on
    /// and the feed's stop signal) on the current tokio runtime; `None` outside of one,
    /// where nothing could follow anything.
    pub(crate) fn subscribe<F, Fut>(&self, follow: F) -> Option<broadcast::Receiver<Exit>>
    where
        F: FnOnce(broadcast::Sender<Exit>, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if !*started {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            handle.spawn(follow(self.sender.clone(), self.stop.clone()));
            *started = true;
        }
        Some(self.sender.subscribe())
    }
}

impl Drop for ExitFeed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Announces `exit` to whoever listens; nobody listening is fine (the announcement was a
/// hint).
pub(crate) fn announce(sender: &broadcast::Sender<Exit>, exit: Exit) {
    let _ = sender.send(exit);
}
