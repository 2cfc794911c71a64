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
//! An instance id is an identity against accidents, not a secret. The secret is the
//! worker's *credential* (`MCW1-<64 hex>`), which the manager makes at the worker's
//! first registration and hands to its agent once; the worker keeps only its SHA-256
//! (the manager hashes, the core compares hashes). Who may do what (`Caller`):
//!
//! - The API token (`Caller::Operator`) speaks for every worker; a registration with it
//!   gives the worker a new credential.
//! - The join token registers a *new* name (and gets its credential), and speaks for a
//!   worker that has no credential yet (registered before credentials existed). It may
//!   register a name that has one only from the very agent instance holding it (the
//!   agent lost the answer that carried its credential): that gets a new credential,
//!   and the old one stops working.
//! - A worker's credential speaks for that worker only (403 for another). One that names
//!   no worker at all — the worker was removed (`mycluster worker rm`), or the manager's
//!   state was reset — is *revoked* (401, `REVOKED`): its agent must stop, not join
//!   again with the join token, which would undo the removal.
//!
//! A worker registered without an instance (by hand, or by an older agent) holds an
//! empty instance, which calls naming none match.

use crate::error::CommandError;
use crate::worker::LastHeard;
use crate::{ClusterState, Worker, WorkerStatus};

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

/// Who makes an agent's call, as the manager authenticated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A cluster without authentication (`--insecure-no-auth`): no credential rules, and
    /// none is given out (it would protect nothing).
    Open,
    /// The API token: an operator, who may do anything.
    Operator,
    /// The cluster's join token.
    JoinToken,
    /// A worker's credential, by its SHA-256 (64 hex digits).
    Credential(String),
}

/// How a refusal of a revoked or unknown credential begins (with 401), so an agent tells
/// it from any other refusal: it must stop rather than retry or join again.
pub const REVOKED: &str = "revoked credential";

/// Whether an error answer (status and message) says the caller's credential was
/// revoked (see `REVOKED`).
pub fn is_revoked(status: u16, message: &str) -> bool {
    status == 401 && message.starts_with(REVOKED)
}

/// What a registration does to the worker's credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The worker keeps the credential it has (possibly none).
    Keep,
    /// The worker gets the fresh credential the manager made for this registration.
    Issue,
}

/// Two hashes compared without an early exit (the core has no crypto library; these are
/// hashes of random secrets, so this is belt and braces).
fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The worker whose credential has this hash, if any.
fn holder_of<'a>(state: &'a ClusterState, hash: &str) -> Option<&'a Worker> {
    state
        .workers
        .values()
        .find(|w| w.credential.as_deref().is_some_and(|c| same_hash(c, hash)))
}

/// The refusal of a credential that names no worker.
fn revoked(name: &str) -> CommandError {
    CommandError::Revoked(format!(
        "{REVOKED}: this worker credential belongs to no worker of this cluster: worker \
         {name} was removed (`mycluster worker rm {name}`), or the manager's state was reset. \
         This agent must not register again on its own: to bring the host back, remove its \
         credential file and run `mycluster join` (or `mycluster agent`) with a join token"
    ))
}

/// Who else's credential this is, in a refusal.
fn not_yours(state: &ClusterState, hash: &str, name: &str, what: &str) -> CommandError {
    match holder_of(state, hash) {
        Some(holder) => CommandError::Forbidden(format!(
            "this is worker {}'s credential: it cannot {what} worker {name}; only {name}'s own \
             credential (or the cluster's API token) can",
            holder.name
        )),
        None => revoked(name),
    }
}

/// Whether `caller` may register `name` (`existing`: the worker of that name now), and
/// what becomes of its credential. The instance rules (`check_registration`) apply on
/// top.
pub fn admit(
    state: &ClusterState,
    name: &str,
    instance: &str,
    caller: &Caller,
) -> Result<Admission, CommandError> {
    let existing = state.workers.get(name);
    match (caller, existing) {
        (Caller::Open, _) => Ok(Admission::Keep),
        (Caller::Operator, _) | (Caller::JoinToken, None) => Ok(Admission::Issue),
        (Caller::JoinToken, Some(worker)) => match &worker.credential {
            // Registered before credentials: the join token still speaks for it.
            None => Ok(Admission::Issue),
            // Its own agent, which lost the answer that carried its credential.
            Some(_) if !instance.is_empty() && instance == worker.instance => Ok(Admission::Issue),
            Some(_) => Err(CommandError::Forbidden(format!(
                "worker {name} is registered: only its own agent (with the credential it got \
                 when it joined) can register it again; to give the name to a new host, run \
                 `mycluster worker rm {name}` first"
            ))),
        },
        (Caller::Credential(hash), Some(worker))
            if worker
                .credential
                .as_deref()
                .is_some_and(|c| same_hash(c, hash)) =>
        {
            Ok(Admission::Keep)
        }
        (Caller::Credential(hash), _) => Err(not_yours(state, hash, name, "register")),
    }
}

/// Whether `caller` may speak for worker `name` (heartbeat, read its tasks, report,
/// leave). A name no worker has passes for the join token and the API token (the
/// endpoint answers 404, and an agent without a credential joins again).
pub fn check_caller(state: &ClusterState, name: &str, caller: &Caller) -> Result<(), CommandError> {
    let worker = state.workers.get(name);
    match (caller, worker) {
        (Caller::Open | Caller::Operator, _) => Ok(()),
        (Caller::JoinToken, None) => Ok(()),
        (Caller::JoinToken, Some(worker)) => match worker.credential {
            None => Ok(()),
            Some(_) => Err(CommandError::Forbidden(format!(
                "worker {name} has its own credential: only its agent (with the credential it \
                 got when it joined) or the cluster's API token can speak for it; the join \
                 token only registers new workers"
            ))),
        },
        (Caller::Credential(hash), Some(worker))
            if worker
                .credential
                .as_deref()
                .is_some_and(|c| same_hash(c, hash)) =>
        {
            Ok(())
        }
        (Caller::Credential(hash), _) => Err(not_yours(state, hash, name, "speak for")),
    }
}

/// Whether `caller` may read what any agent may (the ingress's route table): a
/// credential must be some worker's.
pub fn check_member(state: &ClusterState, caller: &Caller) -> Result<(), CommandError> {
    match caller {
        Caller::Credential(hash) => match holder_of(state, hash) {
            Some(_) => Ok(()),
            None => Err(CommandError::Revoked(format!(
                "{REVOKED}: this worker credential belongs to no worker of this cluster (the \
                 worker was removed, or the manager's state was reset): use the join token"
            ))),
        },
        _ => Ok(()),
    }
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
            credential: None,
            agent_ca_sha256: None,
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

    fn state_of(workers: &[(&str, &str, Option<&str>)]) -> ClusterState {
        let mut state = ClusterState::default();
        for (name, instance, credential) in workers {
            let mut w = worker(instance, WorkerStatus::Ready);
            w.name = name.to_string();
            w.credential = credential.map(str::to_string);
            state.apply(&crate::Change::PutWorker(w));
        }
        state
    }

    fn credential(hash: &str) -> Caller {
        Caller::Credential(hash.into())
    }

    #[test]
    fn a_credential_speaks_for_its_own_worker_only() {
        let state = state_of(&[("w1", "aaaa", Some("h1")), ("w2", "bbbb", Some("h2"))]);
        assert_eq!(check_caller(&state, "w1", &credential("h1")), Ok(()));
        let refused = check_caller(&state, "w1", &credential("h2"));
        assert!(
            matches!(&refused, Err(CommandError::Forbidden(m)) if m.contains("worker w2's credential")),
            "{refused:?}"
        );
        assert!(matches!(
            check_caller(&state, "w1", &Caller::JoinToken),
            Err(CommandError::Forbidden(_))
        ));
        assert_eq!(check_caller(&state, "w1", &Caller::Operator), Ok(()));
        assert_eq!(check_caller(&state, "w1", &Caller::Open), Ok(()));
        // An unknown name: 404 from the endpoint for the join token, revoked for a
        // credential that names nothing.
        assert_eq!(check_caller(&state, "w9", &Caller::JoinToken), Ok(()));
        let gone = check_caller(&state, "w9", &credential("h9"));
        assert!(
            matches!(&gone, Err(CommandError::Revoked(m)) if is_revoked(401, m) && m.contains("worker rm w9")),
            "{gone:?}"
        );
        assert_eq!(check_member(&state, &credential("h2")), Ok(()));
        assert!(matches!(
            check_member(&state, &credential("h9")),
            Err(CommandError::Revoked(_))
        ));
        assert_eq!(check_member(&state, &Caller::JoinToken), Ok(()));
    }

    #[test]
    fn the_join_token_registers_new_names_and_workers_without_a_credential() {
        let state = state_of(&[("w1", "aaaa", Some("h1")), ("old", "cccc", None)]);
        let join = Caller::JoinToken;
        assert_eq!(admit(&state, "w3", "dddd", &join), Ok(Admission::Issue));
        assert_eq!(admit(&state, "old", "dddd", &join), Ok(Admission::Issue));
        assert_eq!(check_caller(&state, "old", &join), Ok(()));
        let taken = admit(&state, "w1", "dddd", &join);
        assert!(
            matches!(&taken, Err(CommandError::Forbidden(m)) if m.contains("mycluster worker rm w1")),
            "{taken:?}"
        );
        // Its own instance, which lost the answer with its credential, gets a new one;
        // naming no instance does not pass for it.
        assert_eq!(admit(&state, "w1", "aaaa", &join), Ok(Admission::Issue));
        let mut anonymous = state_of(&[("w1", "", Some("h1"))]);
        assert!(admit(&anonymous, "w1", "", &join).is_err());
        anonymous.workers.clear();
        assert_eq!(admit(&anonymous, "w1", "", &join), Ok(Admission::Issue));
    }

    #[test]
    fn a_registration_with_a_credential_keeps_it_and_a_removed_one_is_revoked() {
        let state = state_of(&[("w1", "aaaa", Some("h1")), ("w2", "bbbb", Some("h2"))]);
        assert_eq!(
            admit(&state, "w1", "eeee", &credential("h1")),
            Ok(Admission::Keep)
        );
        assert!(matches!(
            admit(&state, "w1", "aaaa", &credential("h2")),
            Err(CommandError::Forbidden(_))
        ));
        let removed = admit(&state, "w7", "aaaa", &credential("h7"));
        assert!(
            matches!(&removed, Err(CommandError::Revoked(m)) if m.contains("was removed")),
            "{removed:?}"
        );
        // Another worker's credential cannot claim a new name either.
        assert!(matches!(
            admit(&state, "w7", "aaaa", &credential("h1")),
            Err(CommandError::Forbidden(_))
        ));
        assert_eq!(
            admit(&state, "w1", "zzzz", &Caller::Operator),
            Ok(Admission::Issue)
        );
        assert_eq!(
            admit(&state, "w1", "zzzz", &Caller::Open),
            Ok(Admission::Keep)
        );
        assert!(!is_revoked(403, REVOKED));
    }
}
