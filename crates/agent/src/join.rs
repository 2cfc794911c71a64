//! Joining the cluster under a worker name this agent holds alone (the rules are the
//! core's `identity`): the agent's instance id, registration and its retries (the
//! answer to the first carries the worker's credential, which the agent keeps: see
//! `credential`), and what the agent does when the manager says the name is another
//! agent's, or that its credential was revoked (`refused_for_good`) — it ends, leaving
//! its containers as they are: they ended with this agent anyway (process), or the agent
//! that holds the name now adopts them when it drives the same engine (docker; on another
//! engine they are left running: stopping cut-off copies is fencing's work).

use std::time::Duration;

use mycluster_background::{Loop, LoopControl};
use mycluster_client::ClientError;
use mycluster_core::identity;
use mycluster_core::wire::Registration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{lock, AgentError, Shared};

/// A new random instance id (16 hex digits): one per agent start, so that a second agent
/// started under a name already held is told apart from the one holding it.
pub fn new_instance() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// How often a registration refused because the name is held is tried again.
const HELD_RETRY: Duration = Duration::from_secs(1);

/// How often, while the name stays held, the agent says so again in its log.
const HELD_LOG_EVERY: Duration = Duration::from_secs(10);

/// Registers; an acknowledged registration renews the lease, counted from its sending,
/// and names the worker's epoch (see `fence`).
pub(crate) async fn register(shared: &Shared) -> Result<(), ClientError> {
    let registration = Registration {
        name: shared.config.name.clone(),
        address: shared.address.clone(),
        labels: shared.config.labels.clone(),
        capacity: shared.config.capacity,
        driver: shared.runtime.driver().into(),
        instance: shared.config.instance.clone(),
        resources: shared.resources,
        host: shared.machine.clone(),
        agent_ca_sha256: Some(shared.agent_ca.to_string()),
    };
    let sent = std::time::Instant::now();
    let doc = shared.client().register(&registration).await?;
    if let Some(secret) = &doc.credential {
        shared.adopt_credential(secret);
    }
    lock(&shared.fencing).renewed(sent, None, doc.epoch);
    shared.renewals.notify_one();
    Ok(())
}

/// The manager's message when it refused a call because another agent instance holds
/// the worker (409).
pub(crate) fn held_elsewhere(error: &ClientError) -> Option<&str> {
    match error {
        ClientError::Api {
            status: 409,
            message,
        } => Some(message),
        _ => None,
    }
}

/// Why the manager will never take this agent's calls again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Another agent instance holds the worker now (409).
    Superseded(String),
    /// Its credential names no worker (401 `revoked credential`: the worker was removed,
    /// or the manager's state was reset), or what it presents does not speak for the
    /// worker (403). Joining again with the join token would undo a `worker rm`: it
    /// stops instead, and says how to bring the host back.
    Revoked(String),
}

/// Whether `error`, the answer to a call for the registered worker (a heartbeat, a task
/// list, a report), means this agent must stop. The one place that decides it.
pub(crate) fn refused_for_good(error: &ClientError) -> Option<Ending> {
    if let Some(message) = held_elsewhere(error) {
        return Some(Ending::Superseded(message.to_string()));
    }
    match error {
        ClientError::Api { status, message }
            if identity::is_revoked(*status, message) || *status == 403 =>
        {
            Some(Ending::Revoked(message.clone()))
        }
        _ => None,
    }
}

/// Ends the agent if `error` says it must (see `refused_for_good`); whether it did.
pub(crate) fn ends_agent(shared: &Shared, error: &ClientError) -> bool {
    match refused_for_good(error) {
        Some(ending) => {
            end(shared, ending);
            true
        }
        None => false,
    }
}

/// Registers, retrying until it is done or the agent stops (`Ok` either way).
///
/// A name held by another live agent (409) is tried again every second for
/// `takeover_wait`: the holder may be this host's previous agent, crashed or just
/// stopped, whose name frees once it has been silent for the liveness window (3 s at one
/// heartbeat a second). Past that the agent gives up with the manager's message. Any
/// other refusal (a bad name, a wrong token) is retried with backoff, loudly: it will not
/// fix itself, but stopping would hide it from an operator watching the logs.
pub(crate) async fn register_until_done(
    shared: &Shared,
    stop: &CancellationToken,
) -> Result<(), AgentError> {
    let mut joining = Joining {
        shared,
        held_since: None,
        last_said: None,
        gave_up: None,
    };
    Loop::new(
        format!("agent {}", shared.config.name),
        REGISTER_RETRY,
        stop.clone(),
    )
    // Registered, it says so itself.
    .quiet_recovery()
    .run_with(&mut joining, |joining| Box::pin(joining.try_once()))
    .await;
    joining.gave_up.map_or(Ok(()), Err)
}

/// Registration under way: what a refusal because the name is held has told so far.
struct Joining<'a> {
    shared: &'a Shared,
    /// Since when the name has been held by another agent (without another refusal
    /// between).
    held_since: Option<Instant>,
    /// When the agent last said that the name is held.
    last_said: Option<Instant>,
    /// Why it gave up, once it did.
    gave_up: Option<AgentError>,
}

impl Joining<'_> {
    /// One try; a name held elsewhere is not a failure to back off from but a wait at
    /// the manager's pace (`HELD_RETRY`).
    async fn try_once(&mut self) -> Result<LoopControl, String> {
        let shared = self.shared;
        let name = &shared.config.name;
        let error = match register(shared).await {
            Ok(()) => {
                tracing::info!(
                    "agent {name}: registered with {} (instance {})",
                    shared.config.manager,
                    shared.config.instance
                );
                return Ok(LoopControl::Stop);
            }
            Err(e) => e,
        };
        // A revoked credential: registering again cannot help, nor can the join token.
        if let ClientError::Api { status, message } = &error {
            if identity::is_revoked(*status, message) {
                self.gave_up = Some(shared.revoked(message));
                return Ok(LoopControl::Stop);
            }
        }
        let Some(message) = held_elsewhere(&error) else {
            self.held_since = None;
            let hint = match error.status() {
                Some(401) => " (check the join token: MYCLUSTER_JOIN_TOKEN or --join-token-file)",
                _ => "",
            };
            return Err(format!("cannot register: {error}{hint}"));
        };
        let since = *self.held_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= shared.config.takeover_wait {
            self.gave_up = Some(AgentError::NameHeld {
                message: message.to_string(),
                waited: shared.config.takeover_wait,
            });
            return Ok(LoopControl::Stop);
        }
        if self
            .last_said
            .is_none_or(|said: Instant| said.elapsed() >= HELD_LOG_EVERY)
        {
            self.last_said = Some(Instant::now());
            tracing::warn!(
                "agent {name}: cannot register: {message}; trying again every {HELD_RETRY:?} \
                 for up to {:?}, in case that agent has just stopped",
                shared.config.takeover_wait
            );
        }
        Ok(LoopControl::After(HELD_RETRY))
    }
}

/// The first wait after a failed registration (doubled at each next failure).
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// Registers again: the manager forgot the worker (it lost its state, or the worker
/// was removed). Only an agent without a credential does: one with a credential is
/// refused as revoked instead, and stops (joining again with the join token would undo
/// a `worker rm`). Another agent holding the name by now means this one was
/// superseded.
pub(crate) async fn rejoin(shared: &Shared) -> Result<(), String> {
    if shared.holds_credential() {
        return Err(
            "the manager does not know this worker, and this agent holds a credential: it \
             does not join again with the join token"
                .into(),
        );
    }
    register(shared).await.map_err(|e| {
        ends_agent(shared, &e);
        format!("cannot register again: {e}")
    })
}

/// The manager will never take this agent's calls again: notes why and ends this
/// agent's loops. Its containers are left as they are (see the module's doc).
pub(crate) fn end(shared: &Shared, ending: Ending) {
    let mut why = lock(&shared.ended);
    if why.is_none() {
        let message = match &ending {
            Ending::Superseded(m) | Ending::Revoked(m) => m,
        };
        tracing::error!("agent {}: {message}", shared.config.name);
        *why = Some(ending);
    }
    shared.quit.cancel();
}
