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
    /// The kernel's boot id: two machines (or boots) with one host name differ in it.
    #[serde(default)]
    pub boot: String,
    /// Its pid namespace: two containers sharing a host name (`--network host`) differ
    /// in it, as does a container started again.
    #[serde(default)]
    pub pid_ns: String,
    pub pid: u32,
    /// When the process started (clock ticks after boot): a pid used again by another
    /// process differs in it.
    #[serde(default)]
    pub started: u64,
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
            boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|l| l.display().to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            started: process_start(std::process::id()).unwrap_or_default(),
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
    /// this host, this boot, in this pid namespace, and is gone: no live process has its
    /// pid and start time, or it had this process's pid. Anything else (another host,
    /// another container, one of two hosts with the same name) may be alive: only its
    /// lease running out says it is not.
    pub fn may_take_over(&self) -> bool {
        let me = Holder::this_process(&self.role);
        if self.token == me.token {
            return true;
        }
        let here = self.host == me.host
            && !self.boot.is_empty()
            && self.boot == me.boot
            && !self.pid_ns.is_empty()
            && self.pid_ns == me.pid_ns;
        here && (self.pid == me.pid || process_start(self.pid) != Some(self.started))
    }

    /// A stored holder as people read it (or the raw value, if it is not one of ours).
    pub fn shown(value: &str) -> String {
        Holder::decode(value)
            .map_or_else(|| format!("an unknown holder ({value})"), |h| h.to_string())
    }
}

/// When a live process of this pid started (clock ticks after boot); `None` if there is
/// none (a zombie, dead but not yet reaped by its parent, counts as none).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields follow the command name, which is in parentheses and may hold any
    // character: read after the last ')'. Then: state (field 3) ... starttime (22).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields
        .first()
        .is_some_and(|state| state.starts_with(['Z', 'X']))
    {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
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
    Some(read_trimmed("/proc/sys/kernel/hostname"))
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
        assert!(me.started > 0 && !me.boot.is_empty() && !me.pid_ns.is_empty());
        // A store this very process opened before.
        assert!(me.may_take_over());
        let other = |change: &dyn Fn(&mut Holder)| {
            let mut holder = Holder {
                token: "other".into(),
                ..me.clone()
            };
            change(&mut holder);
            holder
        };
        // Another process of this host that no longer exists.
        assert!(other(&|h| h.pid = u32::MAX - 1).may_take_over());
        // A previous run with this process's pid (a restarted process's pid 1).
        assert!(other(&|_| {}).may_take_over());
        // A pid now used by another process: pid 1 exists, but did not start when
        // the holder did.
        assert!(other(&|h| {
            h.pid = 1;
            h.started = u64::MAX;
        })
        .may_take_over());
        // The live process itself is not: pid 1, as it started.
        let init = other(&|h| {
            h.pid = 1;
            h.started = process_start(1).unwrap_or_default();
        });
        assert_eq!(init.may_take_over(), std::process::id() == 1);
        // Another host, another boot, another pid namespace: never at once.
        assert!(!other(&|h| {
            h.pid = u32::MAX - 1;
            h.host = "elsewhere".into();
        })
        .may_take_over());
        assert!(!other(&|h| {
            h.pid = u32::MAX - 1;
            h.boot = "another-boot".into();
        })
        .may_take_over());
        assert!(!other(&|h| h.pid_ns = "pid:[1]".into()).may_take_over());
        // A holder written before these were recorded is not known to be here.
        assert!(!other(&|h| {
            h.pid = u32::MAX - 1;
            h.boot = String::new();
        })
        .may_take_over());
    }
}
