//! Removing the volumes the manager asks this worker's host to remove (`remove_volumes`
//! in its task list: volumes of a service removed with `--volumes`, that no task uses).
//!
//! Each is tried once per list the manager sends: a volume still in use (a container of
//! the slot not yet removed, here or on another worker of the same host) is tried again
//! when the next list arrives — at the latest when a long-poll runs out, so within its
//! wait. A removed volume is named in the next status report (`removed_volumes`), and
//! again in each one after until a report is accepted; the manager then drops it from
//! the list.

use std::collections::BTreeSet;

use mycluster_runtime::RuntimeError;

use crate::{lock, Shared};

/// What the manager asked, and what became of it.
#[derive(Debug, Default)]
pub(crate) struct Removals {
    /// The latest list's volumes.
    asked: Vec<String>,
    /// Tried since that list arrived, removed or not.
    tried: BTreeSet<String>,
    /// Removed, and not yet in an accepted report.
    unreported: BTreeSet<String>,
}

impl Removals {
    /// A new list arrived: every volume on it may be tried again.
    pub(crate) fn asked(&mut self, volumes: Vec<String>) {
        self.asked = volumes;
        self.tried.clear();
    }

    /// The volumes to try now (each once per list), marked tried.
    fn due(&mut self) -> Vec<String> {
        let due: Vec<String> = self
            .asked
            .iter()
            .filter(|v| !self.tried.contains(*v) && !self.unreported.contains(*v))
            .cloned()
            .collect();
        self.tried.extend(due.iter().cloned());
        due
    }

    fn removed(&mut self, volume: String) {
        self.unreported.insert(volume);
    }

    fn unreported(&self) -> Vec<String> {
        self.unreported.iter().cloned().collect()
    }

    /// A report naming `volumes` was accepted.
    pub(crate) fn reported(&mut self, volumes: &[String]) {
        for volume in volumes {
            self.unreported.remove(volume);
        }
    }
}

/// Removes the volumes due now; returns every volume removed and not yet reported.
pub(crate) async fn remove_due(shared: &Shared) -> Vec<String> {
    let due = lock(&shared.volumes).due();
    let name = &shared.config.name;
    for volume in due {
        match shared.runtime.remove_volume(&volume).await {
            Ok(()) => {
                tracing::info!("agent {name}: removed volume {volume}");
                lock(&shared.volumes).removed(volume);
            }
            Err(RuntimeError::InUse(why)) => {
                tracing::info!("agent {name}: {why}; trying again with the next task list")
            }
            Err(e) => tracing::warn!(
                "agent {name}: cannot remove volume {volume}: {e}; trying again with the next \
                 task list"
            ),
        }
    }
    lock(&shared.volumes).unreported()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_volume_is_tried_once_per_list_and_reported_until_accepted() {
        let mut r = Removals::default();
        assert!(r.due().is_empty());
        r.asked(names(&["a-data-0", "a-data-1"]));
        assert_eq!(r.due(), names(&["a-data-0", "a-data-1"]));
        // Not again within the same list.
        assert!(r.due().is_empty());
        r.removed("a-data-0".into());
        assert_eq!(r.unreported(), names(&["a-data-0"]));
        // The report failed: still unreported; a new list (the manager has not heard)
        // tries only the one that is still there.
        r.asked(names(&["a-data-0", "a-data-1"]));
        assert_eq!(r.due(), names(&["a-data-1"]));
        r.removed("a-data-1".into());
        assert_eq!(r.unreported(), names(&["a-data-0", "a-data-1"]));
        r.reported(&names(&["a-data-0", "a-data-1"]));
        assert!(r.unreported().is_empty());
        r.asked(Vec::new());
        assert!(r.due().is_empty());
    }
}
