//! Who holds a cluster's store. One manager per cluster per store: two managers writing
//! one cluster's keys would each see only their own changes and overwrite each other's
//! index. The embedded store is held through its file lock; the Redis store through a
//! lease key whose value is the holder below, renewed while the holder runs.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A process holding (or asking for) a cluster's store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Random for each process (the same for every holder one process makes): whether
    /// two holders are the same process.
    pub token: String,
    /// What holds it: `manager`, `store copy`...
    pub role: String,
    /// The host it runs on (in a container: the container's host name).
    pub host: String,
    pub pid: u32,
    /// When it started holding, in milliseconds since the Unix epoch.
    pub since: u64,
}

impl Holder {
    /// This process, as `role`.
    pub fn this_process(role: &str) -> Holder {
        Holder {
            token: process_token().to_string(),
            role: role.to_string(),
            host: host_name(),
            pid: std::process::id(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The value stored for it (compared whole by the store).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored value back; `None` if it is not one of ours.
    pub fn decode(text: &str) -> Option<Holder> {
        serde_json::from_str(text).ok()
    }

    /// Whether this process may take the holder's place at once, without waiting for its
    /// lease to run out: it is this very process (a store opened again), or it ran on
    /// this host and is gone — no process has its pid any more, or it had this process's
    /// pid (a manager restarted in its container is pid 1 again). Another host's holder
    /// may be alive: only its lease running out says it is not.
    pub fn may_take_over(&self) -> bool {
        let me = Holder::this_process(&self.role);
        if self.token == me.token {
            return true;
        }
        self.host == me.host && (self.pid == me.pid || !process_lives(self.pid))
    }
}

/// Whether a process of this pid runs on this host (a zombie, dead but not yet reaped
/// by its parent, does not).
fn process_lives(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any
        // character: read after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// This process's token, made once.
fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| format!("{:032x}", rand::random::<u128>()))
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {} on host {} (pid {}, since {})",
            self.role,
            self.host,
            self.pid,
            mycluster_core::time::unix_time(self.since / 1000)
        )
    }
}

/// This host's name, as the kernel has it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_round_trips_and_names_itself() {
        let holder = Holder::this_process("manager");
        assert_eq!(Holder::decode(&holder.encode()), Some(holder.clone()));
        let shown = holder.to_string();
        assert!(shown.starts_with("a manager on host "), "{shown}");
        assert!(
            shown.contains(&format!("pid {}", std::process::id())),
            "{shown}"
        );
        assert_eq!(Holder::decode("not json"), None);
    }

    #[test]
    fn only_this_process_or_a_gone_one_of_this_host_is_taken_over_at_once() {
        let me = Holder::this_process("manager");
        // A store this very process opened before.
        assert!(me.may_take_over());
        // Another process of this host that no longer exists.
        let dead = Holder {
            token: "other".into(),
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(dead.may_take_over());
        // A previous run with this process's pid (a restarted container's pid 1).
        let previous = Holder {
            token: "previous".into(),
            ..me.clone()
        };
        assert!(previous.may_take_over());
        // A live process of this host is not: pid 1 exists everywhere.
        let live = Holder {
            token: "other".into(),
            pid: 1,
            ..me.clone()
        };
        assert_eq!(live.may_take_over(), std::process::id() == 1);
        // Another host's holder never is.
        let remote = Holder {
            token: "other".into(),
            host: "elsewhere".into(),
            pid: u32::MAX - 1,
            ..me
        };
        assert!(!remote.may_take_over());
    }
}
