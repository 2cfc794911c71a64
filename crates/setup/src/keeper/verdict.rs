//! The keeper's rule for one container of the cluster that died: start it again, or
//! leave it. Pure, so the rule is tested without an engine; `keeper` feeds it what the
//! engine said after the death and the container's state once the wait is over.
//!
//! Why a rule of our own when the containers have the restart policy `unless-stopped`:
//! the engine counts `docker kill` as an explicit stop, as it does `docker stop` (Docker
//! 20.10, measured: a `--restart unless-stopped` or even `always` container that is
//! `docker kill`ed stays exited; one whose process is killed from outside, `kill -9`, is
//! restarted). The events tell the two apart: `docker stop` emits `kill`, `die`, then
//! `stop`; `docker kill` only `kill` and `die`; a removal (`docker rm -f`, `manage rm`,
//! `setup` making a container again) `die` then `destroy`.

use std::time::Duration;

/// How long after a `die` the keeper waits for the `stop` (or `destroy`) that says an
/// operator meant it. The engine emits `stop` right after `die` when it finishes a
/// `docker stop`; the restart policy's own restart comes about 100 ms after the death.
pub const STOP_WAIT: Duration = Duration::from_secs(1);

/// The roles the keeper starts again: the control plane. Workers are not kept: a
/// stopped or killed worker is a lost machine, and the cluster's answer to it is the
/// monitor's failover (the original's demonstration). Workloads run once.
pub const KEPT_ROLES: [&str; 4] = ["manager", "monitor", "ingress", "redis"];

/// What the engine said about a container after it died (the events the keeper
/// follows; others are not asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Die,
    /// The end of a `docker stop`: an operator stopped it.
    Stop,
    /// It was removed.
    Destroy,
    /// It runs again (its restart policy, an operator, another keeper).
    Start,
}

impl Event {
    /// The event of an engine action, for the actions the keeper follows.
    pub fn parse(action: &str) -> Option<Event> {
        match action {
            "die" => Some(Event::Die),
            "stop" => Some(Event::Stop),
            "destroy" => Some(Event::Destroy),
            "start" => Some(Event::Start),
            _ => None,
        }
    }

    /// The actions to ask the engine for.
    pub const ACTIONS: [&'static str; 4] = ["die", "stop", "destroy", "start"];
}

/// A container's state when the wait after its death is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Now {
    Running,
    /// Its restart policy will start it (the engine waits between restarts of a
    /// container that keeps dying: left to that backoff, not hurried).
    Restarting,
    /// Exited (or created, dead): nothing will start it.
    Down,
    /// Removed.
    Gone,
}

/// The keeper's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Died without an operator's `docker stop`: start it again.
    Start,
    Leave(Why),
}

/// Why a dead container is left as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Not a control-plane role (a worker, a workload).
    NotKept,
    /// `docker stop` (or `manage stop`): an operator's act, kept.
    Stopped,
    /// Removed: nothing to start.
    Removed,
    /// Running again, or about to be by its restart policy.
    Back,
}

/// Whether a container of this role is kept.
pub fn kept(role: &str) -> bool {
    KEPT_ROLES.contains(&role)
}

/// What to do about a container of `role` that died, given the events seen since its
/// death (over `STOP_WAIT`) and its state now.
pub fn verdict(role: &str, after_die: &[Event], now: Now) -> Verdict {
    if !kept(role) {
        return Verdict::Leave(Why::NotKept);
    }
    if after_die.contains(&Event::Destroy) || now == Now::Gone {
        return Verdict::Leave(Why::Removed);
    }
    if after_die.contains(&Event::Stop) {
        return Verdict::Leave(Why::Stopped);
    }
    match now {
        Now::Running | Now::Restarting => Verdict::Leave(Why::Back),
        // Started and dead again within the wait, with no stop: as dead as before.
        Now::Down => Verdict::Start,
        Now::Gone => Verdict::Leave(Why::Removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_without_a_stop_is_started_again() {
        // `docker kill NAME_manager_1`: kill, die, nothing more.
        for role in ["manager", "monitor", "ingress", "redis"] {
            assert_eq!(verdict(role, &[], Now::Down), Verdict::Start, "{role}");
        }
        // Started by someone and dead again within the wait, still no stop.
        assert_eq!(
            verdict("manager", &[Event::Start, Event::Die], Now::Down),
            Verdict::Start
        );
    }

    #[test]
    fn a_docker_stop_is_left_alone() {
        // `docker stop` / `manage stop`: kill, die, then stop.
        assert_eq!(
            verdict("manager", &[Event::Stop], Now::Down),
            Verdict::Leave(Why::Stopped)
        );
        assert_eq!(
            verdict("monitor", &[Event::Stop], Now::Down),
            Verdict::Leave(Why::Stopped)
        );
    }

    #[test]
    fn workers_and_workloads_are_not_kept() {
        for role in ["worker", "workload", "", "network"] {
            assert_eq!(
                verdict(role, &[], Now::Down),
                Verdict::Leave(Why::NotKept),
                "{role}"
            );
        }
    }

    #[test]
    fn a_removed_container_is_left_alone() {
        // `docker rm -f`, `manage rm`, setup making it again: die, then destroy.
        assert_eq!(
            verdict("manager", &[Event::Destroy], Now::Gone),
            Verdict::Leave(Why::Removed)
        );
        assert_eq!(
            verdict("manager", &[], Now::Gone),
            Verdict::Leave(Why::Removed)
        );
    }

    #[test]
    fn what_its_restart_policy_restarts_is_left_to_it() {
        // `kill -9` of its process: the engine restarts it (after a backoff if it keeps
        // dying).
        assert_eq!(
            verdict("manager", &[Event::Start], Now::Running),
            Verdict::Leave(Why::Back)
        );
        assert_eq!(
            verdict("manager", &[], Now::Restarting),
            Verdict::Leave(Why::Back)
        );
    }

    #[test]
    fn actions_are_read_by_name() {
        for action in Event::ACTIONS {
            assert!(Event::parse(action).is_some(), "{action}");
        }
        assert_eq!(Event::parse("kill"), None);
        assert_eq!(Event::parse("exec_start: sh"), None);
    }
}
