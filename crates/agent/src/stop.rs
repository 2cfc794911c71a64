//! How the agent stops a container. A task is stopped with its own `stop_grace_period`
//! (SIGTERM, then SIGKILL once it passed); a container no task speaks for, with the
//! driver's default. A running task with ports that the manager asks to stop left the
//! route table in that same commit; it is signalled only [`DEREGISTER_DELAY`] later, once
//! every ingress stopped sending it new connections (see `mycluster_core::endpoints`).
//! A replica with ports found unhealthy is stopped the same way, once the manager holds
//! it unhealthy (which took it out of the table; see `plan`). The wait holds up nothing
//! else: the agent's other starts and stops go on meanwhile.
//!
//! Fencing stops without the delay (see `fencing`): a task the lease cut off with its own
//! grace period, a container a newer epoch no longer holds with none at all (the manager
//! took both out of the route table when it found the worker down).

use std::time::Duration;

use mycluster_core::endpoints::DEREGISTER_DELAY;
use mycluster_core::wire::{TaskDoc, TaskState};
use mycluster_runtime::{Container, ContainerState};

/// How a container is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stop {
    /// How long to wait before signalling it at all.
    pub delay: Duration,
    /// From SIGTERM to SIGKILL; `None`: the driver's default.
    pub grace: Option<Duration>,
}

impl Stop {
    /// How `task`'s `container` is stopped when the manager no longer wants it: after
    /// the deregister delay if it may be in the route table (it runs, and has ports),
    /// else at once; with the task's grace period either way.
    pub fn unwanted(task: &TaskDoc, container: &Container) -> Stop {
        let routed = task.state == TaskState::Running
            && !task.ports.is_empty()
            && container.state == ContainerState::Running;
        if routed {
            Stop::deregistered(task)
        } else {
            Stop::of(task)
        }
    }

    /// After the deregister delay, with `task`'s grace period: for a task that just left
    /// the route table (the manager stopped it, or holds it unhealthy now).
    pub fn deregistered(task: &TaskDoc) -> Stop {
        Stop {
            delay: Duration::from_millis(DEREGISTER_DELAY),
            ..Stop::of(task)
        }
    }

    /// At once, with `task`'s grace period.
    pub fn of(task: &TaskDoc) -> Stop {
        Stop {
            delay: Duration::ZERO,
            grace: Some(Duration::from_millis(task.stop_grace_period.millis())),
        }
    }
}
