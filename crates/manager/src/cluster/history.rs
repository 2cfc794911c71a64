//! The store's history, as the manager keeps it: what the last commit or check said of
//! the store (`StoreHealth`), commits whose answer was lost (settled by the store's
//! head), the check the store keeper runs every second, and the operator's reseed. See
//! `mycluster_store::Head` for why every commit names the head it builds on.

use std::sync::Arc;

use mycluster_store::{Head, StoreError};

use super::{Cluster, Committer, Snapshot};

/// Whether the store takes writes, as the last commit or check found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    Ok,
    /// It does not answer or cannot write (Redis down, a full disk): every write is
    /// still tried, and fails until it can.
    Unavailable(String),
    /// It lost this manager's history, may evict keys, or another manager holds the
    /// cluster: nothing is written until an operator acts (`mycluster store reseed`).
    Refusing(String),
}

impl StoreHealth {
    /// What a store error says of the store.
    pub(super) fn of(error: &StoreError) -> StoreHealth {
        match error {
            StoreError::Unavailable(why) => StoreHealth::Unavailable(why.clone()),
            other => StoreHealth::Refusing(other.to_string()),
        }
    }
}

/// Why a change computed before an in-doubt commit turned out saved is refused.
pub(super) const COMPUTED_BEFORE: &str =
    "a change whose answer was lost turned out saved; this one was computed before it was known";

impl Cluster {
    /// Learns what became of a commit whose answer was lost: `None` if there was none or
    /// it did not land; the state now published if it did.
    pub(super) async fn resolve_in_doubt(
        &self,
        committer: &mut Committer,
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let Some(doubt) = committer.in_doubt.take() else {
            return Ok(None);
        };
        let found = match self.store.head().await {
            Ok(found) => found,
            Err(e) => {
                if e.is_transient() {
                    committer.in_doubt = Some(doubt);
                } else {
                    self.set_health(StoreHealth::of(&e));
                }
                return Err(e);
            }
        };
        if found == committer.head {
            return Ok(None);
        }
        if found == doubt.head {
            tracing::info!(
                "store: the commit at index {} whose answer was lost had landed: published now",
                doubt.head.index
            );
            committer.head = doubt.head;
            let base = self.snapshot();
            let recovered = self.publish(
                &base,
                doubt.state,
                &doubt.changes,
                &doubt.made,
                doubt.head.index,
            );
            // Anything queued was computed on the state before it: the caller fails it.
            return Ok(Some(recovered));
        }
        let e = mycluster_store::diverged(
            &self.store.describe(),
            Some(committer.head),
            &found.to_string(),
        );
        self.set_health(StoreHealth::of(&e));
        Err(e)
    }

    /// Checks the store still holds this manager's history and can be written (renewing
    /// its lease, reopening a file an I/O error left unusable), settles a commit in doubt,
    /// and records what it found. Run every second by the store keeper.
    pub async fn check_store(&self) -> StoreHealth {
        let mut committer = self.committer.lock().await;
        let checked = match self.resolve_in_doubt(&mut committer).await {
            Ok(None) => self.store.check(committer.head).await,
            Ok(Some(recovered)) => {
                let error = StoreError::Unavailable(COMPUTED_BEFORE.into());
                self.fail(Vec::new(), error, &recovered).await;
                self.store.check(committer.head).await
            }
            Err(e) => Err(e),
        };
        let health = match checked {
            Ok(()) => StoreHealth::Ok,
            Err(e) => StoreHealth::of(&e),
        };
        self.set_health(health.clone());
        health
    }

    /// Writes the state in memory into the store, whatever the store holds: the
    /// operator's way back when the store lost this manager's history (emptied, evicted,
    /// restored from an old copy). Returns the store's new head.
    pub async fn reseed(&self) -> Result<(Head, Arc<Snapshot>), StoreError> {
        let mut committer = self.committer.lock().await;
        let current = self.snapshot();
        // Past both histories: nothing that read the store's may take it for its own.
        let stored = self.store.head().await.map_or(0, |h| h.index);
        let head = Head {
            index: current.index.max(stored) + 1,
            commit: rand::random(),
        };
        let state = &current.state;
        let snapshot = mycluster_store::Snapshot {
            head,
            services: state.services.values().cloned().collect(),
            tasks: state.tasks.values().map(|t| t.as_ref().clone()).collect(),
            workers: state.workers.values().cloned().collect(),
            volumes: state.volumes.values().cloned().collect(),
            counters: state.counters,
        };
        if let Err(e) = self.store.replace(&snapshot).await {
            if !e.is_transient() {
                self.set_health(StoreHealth::of(&e));
            }
            return Err(e);
        }
        // Memory is what the store holds now: a commit in doubt is not in either.
        committer.in_doubt = None;
        committer.head = head;
        self.set_health(StoreHealth::Ok);
        let published = self.publish(&current, state.clone(), &[], &[], head.index);
        tracing::warn!(
            "store: reseeded {} from memory ({} services, {} tasks, {} workers, index {})",
            self.store.describe(),
            snapshot.services.len(),
            snapshot.tasks.len(),
            snapshot.workers.len(),
            head.index
        );
        Ok((head, published))
    }

    /// Lets go of the store at a clean stop: waits for a commit under way, refuses any
    /// that comes after, then releases the store (the Redis lease, so the next manager
    /// need not wait for it to run out).
    pub async fn close_store(&self) {
        let _committer = self.committer.lock().await;
        // Not through `set_health`: a clean stop is not an error to log.
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) =
            StoreHealth::Refusing("the manager is stopping".into());
        self.store.release().await;
    }

    /// What the last commit or check found of the store.
    pub fn health(&self) -> StoreHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the store's health, saying so in the log when it changes.
    pub(super) fn set_health(&self, health: StoreHealth) {
        let mut current = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if *current == health {
            return;
        }
        match &health {
            StoreHealth::Ok => {
                tracing::info!("store: {} takes writes again", self.store.describe())
            }
            StoreHealth::Unavailable(why) => tracing::warn!("store: cannot write: {why}"),
            StoreHealth::Refusing(why) => tracing::error!("store: writes stopped: {why}"),
        }
        *current = health;
    }
}
