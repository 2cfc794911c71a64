//! The ingress's counters: connections accepted, relayed to a replica, and closed because
//! no replica answered (what a client sees as a failed connection), and single connect
//! attempts that failed (what the ingress absorbed by trying the next replica).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    relayed: AtomicU64,
    failed: AtomicU64,
    connect_failures: AtomicU64,
    open: AtomicU64,
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections that reached a replica.
    pub relayed: u64,
    /// Client connections closed because no replica answered (or there was none).
    pub failed: u64,
    /// Connect attempts to a replica that were refused or not answered in time.
    pub connect_failures: u64,
    /// Client connections open now.
    pub open: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            relayed: self.relayed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn relayed(&self) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }
}
