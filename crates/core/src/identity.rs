//! One agent per worker name. Two agents started under the same name would both run all
//! of the worker's tasks (twice the replicas the state shows), and each would kill the
//! other's as leftovers when it restarts. So every agent makes a random *instance* id when
//! it starts and names it in every call; the worker stores the instance that registered
//! it, and only that instance speaks for the worker:
//!
//! - A registration from another instance is refused while the worker is live (heard
//!   from within the liveness window, `LastHeard::is_live`) and not down: the name is
//!   held. A worker that is down, or silent past the window, may be taken over — as a
//!   host replacement or an agent restarted after a crash must.
//! - A heartbeat, long-poll or report from any other instance (or naming none) is refused
//!   and changes nothing: its agent was superseded, and must stop.
//!
//! An instance id is an identity against accidents, not a secret: the join token is what
//! keeps strangers out. A worker registered without one (by hand, or by an older agent)
//! holds an empty instance, which calls naming none match.

use crate::error::CommandError;
use crate::worker::LastHeard;
use crate::{Worker, WorkerStatus};

/// The most bytes of an agent instance id.
pub const MAX_INSTANCE_LEN: usize = 64;

/// An instance id is 0-64 letters, digits, '_', '.', '-' (agents make 16 hex digits);
/// empty stands for none.
pub fn validate_instance(instance: &str) -> Result<(), CommandError> {
    let ok = instance.len() <= MAX_INSTANCE_LEN
        && instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CommandError::Invalid(format!(
            "invalid agent instance '{}': 0-{MAX_INSTANCE_LEN} of letters, digits, '_', '.', '-'",
            instance.escape_debug()
        )))
    }
}

/// How a message names an instance.
fn described(instance: &str) -> String {
    if instance.is_empty() {
        "an agent that named no instance".to_string()
    } else {
        format!("agent instance {instance}")
    }
}

/// Whether agent `instance` may register as `existing` (a worker of that name), heard
/// from as `heard` (`None`: not since the manager started). The instance that holds the
/// name may always; another may take a worker over only if it is down or no longer live.
pub fn check_registration(
    existing: &Worker,
    instance: &str,
    heard: Option<LastHeard>,
) -> Result<(), CommandError> {
    if existing.instance == instance || existing.status == WorkerStatus::Down {
        return Ok(());
    }
    match heard {
        Some(heard) if heard.is_live() => Err(CommandError::Conflict(format!(
            "worker {name} is live at {address} ({holder}, heard {age:.1}s ago): another agent \
             already runs under this name; stop it, or give this agent another --name \
             (a worker silent for {window:.0}s, or down, can be taken over)",
            name = existing.name,
            address = existing.address,
            holder = described(&existing.instance),
            age = heard.age.as_secs_f64(),
            window =
                crate::worker::silence_allowed(heard.interval, crate::worker::LIVE_SILENCE_FLOOR)
                    .as_secs_f64(),
        ))),
        _ => Ok(()),
    }
}

/// Whether a heartbeat, long-poll or report from agent `instance` speaks for `worker`:
/// only the instance that holds it does. Any other was superseded (another agent took the
/// worker over while it was silent or down) and is told to stop.
pub fn check_holder(worker: &Worker, instance: &str) -> Result<(), CommandError> {
    if worker.instance == instance {
        return Ok(());
    }
    let holder = described(&worker.instance);
    Err(CommandError::Conflict(if instance.is_empty() {
        format!(
            "worker {} is run by {holder} at {}: a call that names no agent instance does \
             not speak for it",
            worker.name, worker.address
        )
    } else {
        format!(
            "superseded: worker {} is now run by {holder} at {}, which took it over while \
             this agent (instance {instance}) was silent or down; this agent stops (start \
             it under another --name if both should run)",
            worker.name, worker.address
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn worker(instance: &str, status: WorkerStatus) -> Worker {
        Worker {
            name: "w1".into(),
            address: "10.0.0.7:7000".into(),
            labels: BTreeMap::new(),
            capacity: None,
            driver: Some(crate::Driver::Process),
            status,
            registered_at: 1,
            updated_at: 1,
            instance: instance.into(),
            resources: Default::default(),
            host: String::new(),
            drain: false,
            label_overrides: Default::default(),
            epoch: 0,
            renewed_at: 0,
            lease: Default::default(),
        }
    }

    fn heard(age_ms: u64) -> Option<LastHeard> {
        Some(LastHeard {
            age: Duration::from_millis(age_ms),
            interval: Duration::from_secs(1),
        })
    }

    fn message(result: Result<(), CommandError>) -> String {
        match result {
            Err(CommandError::Conflict(message)) => message,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn a_live_workers_name_is_refused_to_another_instance_with_where_it_runs() {
        let held = worker("aaaa", WorkerStatus::Ready);
        let refused = message(check_registration(&held, "bbbb", heard(400)));
        assert!(
            refused.contains("worker w1 is live at 10.0.0.7:7000"),
            "{refused}"
        );
        assert!(refused.contains("agent instance aaaa"), "{refused}");
        assert!(refused.contains("heard 0.4s ago"), "{refused}");
        assert!(refused.contains("another --name"), "{refused}");
        // Naming no instance does not get round it; a draining worker is held too.
        message(check_registration(&held, "", heard(400)));
        let draining = worker("aaaa", WorkerStatus::Draining);
        message(check_registration(&draining, "bbbb", heard(2_900)));
    }

    #[test]
    fn the_holder_may_always_register_again() {
        let held = worker("aaaa", WorkerStatus::Ready);
        assert_eq!(check_registration(&held, "aaaa", heard(0)), Ok(()));
        // A worker registered without an instance is re-registered the old way.
        let legacy = worker("", WorkerStatus::Ready);
        assert_eq!(check_registration(&legacy, "", heard(0)), Ok(()));
        assert!(message(check_registration(&legacy, "bbbb", heard(0)))
            .contains("an agent that named no instance"));
    }

    #[test]
    fn a_down_or_silent_worker_is_taken_over() {
        let down = worker("aaaa", WorkerStatus::Down);
        assert_eq!(check_registration(&down, "bbbb", heard(100)), Ok(()));
        let silent = worker("aaaa", WorkerStatus::Ready);
        assert_eq!(check_registration(&silent, "bbbb", heard(3_001)), Ok(()));
        // Not heard from since the manager started: nothing holds it.
        assert_eq!(check_registration(&silent, "bbbb", None), Ok(()));
        // A slower pace holds the name for longer: two intervals.
        let slow = Some(LastHeard {
            age: Duration::from_secs(15),
            interval: Duration::from_secs(10),
        });
        assert!(message(check_registration(&silent, "bbbb", slow)).contains("silent for 20s"));
    }

    #[test]
    fn calls_from_a_superseded_instance_are_refused() {
        let held = worker("bbbb", WorkerStatus::Ready);
        assert_eq!(check_holder(&held, "bbbb"), Ok(()));
        let superseded = message(check_holder(&held, "aaaa"));
        assert!(
            superseded.starts_with(
                "superseded: worker w1 is now run by agent instance bbbb at 10.0.0.7:7000"
            ),
            "{superseded}"
        );
        assert!(superseded.contains("instance aaaa"), "{superseded}");
        let anonymous = message(check_holder(&held, ""));
        assert!(anonymous.contains("names no agent instance"), "{anonymous}");
        assert_eq!(check_holder(&worker("", WorkerStatus::Ready), ""), Ok(()));
    }

    #[test]
    fn instance_ids_are_short_and_plain() {
        assert_eq!(validate_instance(""), Ok(()));
        assert_eq!(validate_instance("0123456789abcdef"), Ok(()));
        assert_eq!(validate_instance(&"a".repeat(MAX_INSTANCE_LEN)), Ok(()));
        for bad in ["no way", "a/b", "ü", &"a".repeat(MAX_INSTANCE_LEN + 1)] {
            assert!(
                matches!(validate_instance(bad), Err(CommandError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
