//! What a worker's host has and which host it is, as its agent registers it: the CPUs
//! and memory tasks may reserve (unless the agent is told otherwise), and an id that
//! workers on the same host share — they share its volumes.
//!
//! For the process and sim drivers that is the machine the agent runs on: its CPUs (the
//! agent's cgroup v2 `cpu.max`, when it caps them below the machine's), its memory
//! (`/proc/meminfo`, or the agent's cgroup `memory.max` when lower), and its
//! `/etc/machine-id` (else its hostname). The docker driver asks its engine instead
//! (`docker info`: `NCPU`, `MemTotal`, `ID`), which is what its containers run on.

use std::path::Path;

use mycluster_core::service::{Bytes, Cpus};

/// A host's capacity and identity; a size it could not tell is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The same for every worker on this host: its Docker engine's id, or the machine's.
    pub id: String,
    pub cpus: Option<Cpus>,
    pub memory: Option<Bytes>,
}

impl HostFacts {
    /// The machine this process runs on.
    pub fn local() -> HostFacts {
        let own = crate::cgroup::own_group(Path::new(crate::cgroup::ROOT));
        let read = |name: &str| {
            own.as_ref()
                .and_then(|dir| std::fs::read_to_string(dir.join(name)).ok())
        };
        let machine_cpus = std::thread::available_parallelism()
            .ok()
            .and_then(|n| u64::try_from(n.get()).ok())
            .map(|n| Cpus(n.saturating_mul(1000)));
        let capped_cpus = read("cpu.max").and_then(|text| cpu_max(&text));
        let cpus = match (machine_cpus, capped_cpus) {
            (Some(machine), Some(capped)) => Some(machine.min(capped)),
            (machine, capped) => machine.or(capped),
        };
        let machine_memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text));
        let capped_memory = read("memory.max").and_then(|text| text.trim().parse().ok().map(Bytes));
        let memory = match (machine_memory, capped_memory) {
            (Some(machine), Some(capped)) => Some(machine.min(capped)),
            (machine, capped) => machine.or(capped),
        };
        HostFacts {
            id: machine_id(),
            cpus,
            memory,
        }
    }
}

/// This host's name (in a container: the container's, which Docker sets to its short
/// id).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
}

/// `/etc/machine-id`, else the hostname, else "localhost".
fn machine_id() -> String {
    ["/etc/machine-id", "/proc/sys/kernel/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_string())
        .find(|id| !id.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `MemTotal` of `/proc/meminfo` (in kB there).
fn mem_total(meminfo: &str) -> Option<Bytes> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Bytes(kib.saturating_mul(1024)))
}

/// A cgroup v2 `cpu.max` ("<quota> <period>" in µs, or "max <period>": no cap) as CPUs.
fn cpu_max(text: &str) -> Option<Cpus> {
    let mut parts = text.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next().unwrap_or("100000").parse().ok()?;
    if period == 0 {
        return None;
    }
    Some(Cpus((quota.saturating_mul(1000) / period).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_cpu_max_are_read() {
        let meminfo = "MemTotal:       24684092 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(Bytes(24684092 * 1024)));
        assert_eq!(mem_total("nothing"), None);
        assert_eq!(cpu_max("150000 100000\n"), Some(Cpus(1500)));
        assert_eq!(cpu_max("50000 100000"), Some(Cpus(500)));
        assert_eq!(cpu_max("max 100000\n"), None);
        assert_eq!(cpu_max("10 0"), None);
    }

    #[test]
    fn this_machine_has_cpus_memory_and_an_id() {
        let facts = HostFacts::local();
        assert!(!facts.id.is_empty());
        assert!(facts.cpus.is_some_and(|c| c.0 >= 1), "{facts:?}");
        assert!(facts.memory.is_some_and(|m| m.0 > 0), "{facts:?}");
    }
}
