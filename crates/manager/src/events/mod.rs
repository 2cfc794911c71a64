//! The event log: a bounded, in-memory history of the events the core derives from each
//! commit (`mycluster_core::events`), numbered, written once as JSON lines, and read by
//! the followers of `GET /api/v1/events`.
//!
//! Fed from one place, `Cluster::publish`, before the commit becomes visible: every
//! commit any reader can see has its events here already, in commit order. The log knows
//! where its history begins — after the commit the manager loaded at (that run's events
//! were said by an earlier one), after the last event it dropped for space, after a
//! stretch it could not number — and refuses (410) a reader who asks for events from
//! before that, rather than hand it a history with a hole in it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use mycluster_core::events::{commit_of, derive, event_index, EVENTS_PER_COMMIT};
use mycluster_core::wire::{EventDoc, Topic};
use mycluster_core::{Change, ClusterState, Millis};
use tokio::sync::watch;

#[cfg(test)]
mod tests;

/// Events kept unless told otherwise (`--event-history`).
pub const DEFAULT_HISTORY: usize = 10_000;

/// One event as it is kept: its number, its topic (to filter on) and its JSON line.
#[derive(Clone, Debug)]
pub struct Held {
    pub index: u64,
    pub topic: Topic,
    /// The `EventDoc`, serialized once for every follower.
    pub json: Arc<str>,
}

/// A read the history cannot answer: events after `asked` are no longer kept (or were
/// never kept by this manager).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    pub asked: u64,
    /// The oldest event kept (`None`: none is).
    pub oldest: Option<u64>,
    /// Where a reader that re-read the state follows from: the last event's index.
    pub resume: u64,
    /// The asked index is past this manager's history (a store restored to an older
    /// copy, a client of another cluster), rather than before it.
    pub ahead: bool,
}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let oldest = match self.oldest {
            Some(index) => format!("the oldest kept is {index}"),
            None => "none is kept yet".to_string(),
        };
        if self.ahead {
            write!(
                f,
                "index {} is past this manager's history ({oldest}): read the state again (GET /api/v1/state) and follow from index {}",
                self.asked, self.resume
            )
        } else {
            write!(
                f,
                "events after {} are no longer kept ({oldest}): read the state again (GET /api/v1/state) and follow from index {}",
                self.asked, self.resume
            )
        }
    }
}

/// What one read gives.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events of the asked topics, oldest first.
    pub events: Vec<Held>,
    /// Where the next read starts: the last event looked at (of any topic).
    pub position: u64,
    /// Whether more events were held past `position` (the read stopped at its limit).
    pub more: bool,
}

pub struct EventLog {
    ring: Mutex<Ring>,
    /// The newest event's index (or the floor): followers wait for it to change.
    latest: watch::Sender<u64>,
}

struct Ring {
    capacity: usize,
    held: VecDeque<Held>,
    /// Every event numbered above this is held (or yet to come); none at or below it.
    floor: u64,
    /// The last commit recorded (at first, the one the manager loaded at).
    head_commit: u64,
}

impl Ring {
    fn newest(&self) -> u64 {
        self.held.back().map_or(self.floor, |h| h.index)
    }

    fn gone(&self, asked: u64, ahead: bool) -> Gone {
        Gone {
            asked,
            oldest: self.held.front().map(|h| h.index),
            resume: self.newest(),
            ahead,
        }
    }

    fn drop_to(&mut self, capacity: usize) {
        while self.held.len() > capacity {
            if let Some(dropped) = self.held.pop_front() {
                self.floor = self.floor.max(dropped.index);
            }
        }
    }
}

impl EventLog {
    /// An empty history for a manager that loaded the state at commit `loaded_at`: the
    /// events of that commit and those before it were said by an earlier run.
    pub fn new(loaded_at: u64, capacity: usize) -> EventLog {
        // The last index the loaded commit could have had: a reader who stopped inside
        // that commit (its events said by the earlier run) may have missed the rest of it.
        // Commit 0 is the empty state no one made: a new cluster's history is whole.
        let floor = match loaded_at {
            0 => 0,
            _ => loaded_at
                .saturating_mul(EVENTS_PER_COMMIT)
                .saturating_add(EVENTS_PER_COMMIT - 1),
        };
        EventLog {
            ring: Mutex::new(Ring {
                capacity: capacity.max(1),
                held: VecDeque::new(),
                floor,
                head_commit: loaded_at,
            }),
            latest: watch::channel(floor).0,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps at most `capacity` events (at least one), dropping the oldest.
    pub fn set_capacity(&self, capacity: usize) {
        let mut ring = self.ring();
        ring.capacity = capacity.max(1);
        let capacity = ring.capacity;
        ring.drop_to(capacity);
    }

    /// Records the events of commit `commit`, which made `changes` on `before`, at
    /// `time`, and wakes the followers.
    pub fn record(&self, before: &ClusterState, changes: &[Change], commit: u64, time: Millis) {
        let events = if changes.is_empty() {
            Vec::new()
        } else {
            derive(before, changes)
        };
        let mut ring = self.ring();
        ring.head_commit = ring.head_commit.max(commit);
        if events.is_empty() {
            return;
        }
        let numbered: Option<Vec<u64>> = (0..events.len())
            .map(|position| event_index(commit, position))
            .collect();
        let Some(numbered) = numbered else {
            // More events than one commit is numbered for: none of them can be said
            // in order, so the history starts after this commit.
            tracing::warn!(
                "events: commit {commit} made {} events, more than can be numbered: the history starts after it",
                events.len()
            );
            let last = commit
                .saturating_mul(EVENTS_PER_COMMIT)
                .saturating_add(EVENTS_PER_COMMIT - 1);
            ring.held.clear();
            ring.floor = ring.floor.max(last);
            let newest = ring.newest();
            drop(ring);
            self.latest.send_replace(newest);
            return;
        };
        let seconds = time as f64 / 1000.0;
        for (event, index) in events.into_iter().zip(numbered) {
            let doc = EventDoc {
                index,
                commit,
                time: seconds,
                topic: event.topic(),
                event,
            };
            match serde_json::to_string(&doc) {
                Ok(json) => ring.held.push_back(Held {
                    index,
                    topic: doc.topic,
                    json: json.into(),
                }),
                // Cannot happen with these types; if it did, the index is skipped (a
                // reader resumes by index, not by count).
                Err(e) => tracing::error!("events: cannot write event {index}: {e}"),
            }
        }
        let capacity = ring.capacity;
        ring.drop_to(capacity);
        let newest = ring.newest();
        drop(ring);
        self.latest.send_replace(newest);
    }

    /// Whether events after `index` can all be given: `Err` says why not.
    pub fn check(&self, index: u64) -> Result<(), Gone> {
        let ring = self.ring();
        Self::check_in(&ring, index)
    }

    fn check_in(ring: &Ring, index: u64) -> Result<(), Gone> {
        if index < ring.floor {
            return Err(ring.gone(index, false));
        }
        if commit_of(index) > ring.head_commit {
            return Err(ring.gone(index, true));
        }
        Ok(())
    }

    /// Where a reader that asked for no index starts: before the oldest event held.
    pub fn start(&self) -> u64 {
        self.ring().floor
    }

    /// The newest event's index (the floor when none is held).
    pub fn newest(&self) -> u64 {
        self.ring().newest()
    }

    /// Up to `limit` events after `position` (of `topics`; all when empty), none past
    /// `until`. `Err` if some of them are no longer held.
    pub fn read(
        &self,
        position: u64,
        topics: &[Topic],
        limit: usize,
        until: Option<u64>,
    ) -> Result<Batch, Gone> {
        let ring = self.ring();
        Self::check_in(&ring, position)?;
        let first = ring.held.partition_point(|h| h.index <= position);
        let mut batch = Batch {
            events: Vec::new(),
            position,
            more: false,
        };
        for (looked, held) in ring.held.iter().skip(first).enumerate() {
            if until.is_some_and(|until| held.index > until) {
                break;
            }
            if looked >= limit {
                batch.more = true;
                break;
            }
            batch.position = held.index;
            if topics.is_empty() || topics.contains(&held.topic) {
                batch.events.push(held.clone());
            }
        }
        Ok(batch)
    }

    /// Changes whenever events are recorded (or the history moves on).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// How many events are held now.
    pub fn len(&self) -> usize {
        self.ring().held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
