//! Resource limits for the process driver: each task with limits runs in a cgroup v2
//! group of its own, a child of the agent's group, with `memory.max` (and no swap on top,
//! as the docker driver does) and `cpu.max`; `memory.events` tells an OOM kill apart from
//! any other SIGKILL.
//!
//! That needs a host whose `/sys/fs/cgroup` is cgroup v2 and an agent whose own group it
//! may manage (a delegated tree: systemd's `Delegate=yes`, or a container with a cgroup
//! namespace of its own) and that offers the `memory` and `cpu` controllers. Controllers
//! are handed to child groups only by a group without processes of its own (cgroup v2's
//! "no internal processes" rule), so the agent first moves itself, and the tasks it
//! started, into a leaf child (`mycluster-agent`) — only ever its own processes: a group
//! that holds anything else is refused. What is found out is found once per process.
//! Where any of it is missing, a spec with limits is refused, saying what is missing.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mycluster_core::service::Amount;

/// Where the cgroup v2 hierarchy is mounted on a host that has one.
pub(crate) const ROOT: &str = "/sys/fs/cgroup";

/// `statfs`'s `f_type` of a cgroup v2 mount.
const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// The leaf the agent moves its own processes to.
const AGENT_LEAF: &str = "mycluster-agent";

/// The period of `cpu.max`, in µs (the kernel's default).
const CPU_PERIOD: u64 = 100_000;
/// The smallest quota the kernel accepts, in µs.
const MIN_CPU_QUOTA: u64 = 1_000;

/// Whether the process driver can enforce resource limits on this host, and if not why
/// (a sentence, ending with what to do about it).
pub fn process_limits() -> Result<(), String> {
    delegated().map(drop).map_err(str::to_owned)
}

/// The agent's delegated group, found (and prepared) on first use.
pub(crate) fn delegated() -> Result<&'static Delegated, &'static str> {
    static DELEGATED: OnceLock<Result<Delegated, String>> = OnceLock::new();
    DELEGATED
        .get_or_init(|| {
            let root = Path::new(ROOT);
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            Delegated::detect(root, is_cgroup2(root), &own, own_processes).map_err(|why| {
                format!(
                    "the process driver cannot enforce resource limits here: {why} (run the \
                     agent with a delegated cgroup v2 tree, or remove the service's limits)"
                )
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The agent's own cgroup v2 group, when the host has a cgroup v2 hierarchy at `root`.
pub(crate) fn own_group(root: &Path) -> Option<PathBuf> {
    if !is_cgroup2(root) {
        return None;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let dir = root.join(v2_path(&own)?.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
}

fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) reads a NUL-terminated path and writes into a local we own.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == CGROUP2_MAGIC
    }
}

/// The cgroup v2 line of `/proc/<pid>/cgroup`: `0::<path>`.
fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|path| path.starts_with('/'))
}

/// This process and every process below it (the tasks it started).
fn own_processes() -> BTreeSet<i32> {
    let me = std::process::id() as i32;
    let mut mine = crate::tree::descendants(me);
    mine.insert(me);
    mine
}

/// The agent's group, whose children get the memory and cpu controllers.
#[derive(Debug)]
pub(crate) struct Delegated {
    base: PathBuf,
}

impl Delegated {
    /// Finds the agent's group under `root` (`own` is `/proc/self/cgroup`) and hands its
    /// memory and cpu controllers to its children, moving `mine()` into a leaf first when
    /// the group holds processes.
    fn detect(
        root: &Path,
        cgroup2: bool,
        own: &str,
        mine: impl Fn() -> BTreeSet<i32>,
    ) -> Result<Delegated, String> {
        if !cgroup2 {
            return Err(format!(
                "{} is not a cgroup v2 hierarchy: this host uses cgroup v1, or the hybrid \
                 layout",
                root.display()
            ));
        }
        let path = v2_path(own)
            .ok_or("/proc/self/cgroup names no cgroup v2 group for the agent".to_string())?;
        let base = root.join(path.trim_start_matches('/'));
        let shown = base.display();
        let offered = read_words(&base.join("cgroup.controllers"));
        if !(offered.contains("memory") && offered.contains("cpu")) {
            let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
            return Err(format!(
                "the agent's cgroup {shown} does not offer the memory and cpu controllers \
                 (it offers: {})",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ));
        }
        let subtree = base.join("cgroup.subtree_control");
        let enabled = read_words(&subtree);
        if !(enabled.contains("memory") && enabled.contains("cpu")) {
            match std::fs::write(&subtree, "+memory +cpu") {
                Ok(()) => {}
                // The group holds processes: the agent's own go to a leaf, then again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    move_to_leaf(&base, &mine())?;
                    std::fs::write(&subtree, "+memory +cpu")
                        .map_err(|e| format!("{} is not writable: {e}", subtree.display()))?;
                }
                Err(e) => return Err(format!("{} is not writable: {e}", subtree.display())),
            }
        }
        // A child can be made (the tree is the agent's to write), and removed.
        let probe = base.join(format!("mycluster-probe-{}", std::process::id()));
        std::fs::create_dir(&probe)
            .or_else(|e| match e.kind() {
                ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| format!("{shown} is not writable: cannot create a child group: {e}"))?;
        let _ = std::fs::remove_dir(&probe);
        Ok(Delegated { base })
    }

    /// A new group `name` below the agent's, limited to `limits`.
    pub(crate) fn create(&self, name: &str, limits: &Amount) -> Result<TaskGroup, String> {
        let group = TaskGroup {
            path: self.base.join(group_name(name)),
        };
        match std::fs::create_dir(&group.path) {
            Ok(()) => {}
            // A leftover of the same task, emptied when its processes were killed.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot create the cgroup {}: {e}",
                    group.path.display()
                ))
            }
        }
        if let Err(why) = group.limit(limits) {
            group.remove();
            return Err(why);
        }
        Ok(group)
    }

    /// Removes the empty groups whose names start with `prefix` (left by an agent that
    /// died: the kernel keeps a group until it is removed).
    pub(crate) fn sweep(&self, prefix: &str) {
        let prefix = group_name(prefix);
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                // A group still holding processes refuses (EBUSY): it is not a leftover.
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// Moves `mine` (the agent and its tasks) from `base` into its leaf child; refuses when
/// `base` holds anything else.
fn move_to_leaf(base: &Path, mine: &BTreeSet<i32>) -> Result<(), String> {
    let procs = base.join("cgroup.procs");
    let inside: BTreeSet<i32> = std::fs::read_to_string(&procs)
        .map_err(|e| format!("cannot read {}: {e}", procs.display()))?
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect();
    let others: Vec<String> = inside.difference(mine).map(i32::to_string).collect();
    if !others.is_empty() {
        return Err(format!(
            "the agent's cgroup {} holds processes that are not the agent's ({}), so it \
             cannot hand its controllers to child groups",
            base.display(),
            others.join(", ")
        ));
    }
    let leaf = base.join(AGENT_LEAF);
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "{} is not writable: cannot create {AGENT_LEAF}: {e}",
                base.display()
            ))
        }
    }
    for pid in inside {
        match std::fs::write(leaf.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => {}
            // Ended meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                return Err(format!(
                    "cannot move process {pid} to {}: {e}",
                    leaf.display()
                ))
            }
        }
    }
    Ok(())
}

/// A name the kernel takes for a group: no '/', no control characters, at most 200 bytes.
fn group_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    while out.len() > 200 {
        out.pop();
    }
    out
}

fn read_words(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// One task's group.
#[derive(Debug)]
pub(crate) struct TaskGroup {
    path: PathBuf,
}

impl TaskGroup {
    fn limit(&self, limits: &Amount) -> Result<(), String> {
        let write = |file: &str, value: String| {
            std::fs::write(self.path.join(file), &value).map_err(|e| {
                format!(
                    "cannot write {value} to {}/{file}: {e}",
                    self.path.display()
                )
            })
        };
        if let Some(memory) = limits.memory {
            write("memory.max", memory.0.to_string())?;
            // No swap on top of the limit (a kernel without swap accounting has no file).
            match write("memory.swap.max", "0".into()) {
                Err(_) if !self.path.join("memory.swap.max").exists() => {}
                other => other?,
            }
        }
        if let Some(cpus) = limits.cpus {
            let quota = cpus.0.saturating_mul(CPU_PERIOD / 1000).max(MIN_CPU_QUOTA);
            write("cpu.max", format!("{quota} {CPU_PERIOD}"))?;
        }
        Ok(())
    }

    /// Moves process `pid` (a task's supervisor, before it starts the command: what it
    /// starts is born inside) into the group.
    pub(crate) fn add(&self, pid: i32) -> Result<(), String> {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).map_err(|e| {
            format!(
                "cannot move process {pid} into the cgroup {}: {e}",
                self.path.display()
            )
        })
    }

    /// Whether the kernel killed a process of the group for going over `memory.max`.
    pub(crate) fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.path.join("memory.events"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix("oom_kill "))
            .any(|count| count.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// Removes the group once its processes are gone (the kernel refuses before).
    pub(crate) fn remove(&self) {
        match std::fs::remove_dir(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "process driver: cannot remove the cgroup {}: {e}",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycluster_core::service::{Bytes, Cpus};

    /// A directory laid out as the agent's delegated group would be.
    fn tree(controllers: &str, enabled: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path().join("system.slice/agent.service");
        std::fs::create_dir_all(&base).expect("mkdir");
        std::fs::write(base.join("cgroup.controllers"), controllers).expect("write");
        std::fs::write(base.join("cgroup.subtree_control"), enabled).expect("write");
        (root, base)
    }

    const OWN: &str = "0::/system.slice/agent.service\n";

    #[test]
    fn cgroup_v1_is_refused_by_name() {
        let (root, _) = tree("cpu memory", "");
        let why = Delegated::detect(root.path(), false, OWN, BTreeSet::new).unwrap_err();
        assert!(why.contains("is not a cgroup v2 hierarchy"), "{why}");
        let why = Delegated::detect(root.path(), true, "1:cpu:/\n", BTreeSet::new).unwrap_err();
        assert!(why.contains("no cgroup v2 group"), "{why}");
    }

    #[test]
    fn missing_controllers_are_named() {
        let (root, _) = tree("pids io", "");
        let why = Delegated::detect(root.path(), true, OWN, BTreeSet::new).unwrap_err();
        assert!(
            why.contains("does not offer the memory and cpu controllers"),
            "{why}"
        );
        assert!(why.contains("it offers: io, pids"), "{why}");
    }

    #[test]
    fn a_delegated_group_gets_task_groups_with_limits() {
        let (root, base) = tree("cpuset cpu io memory pids", "cpu memory");
        let delegated = Delegated::detect(root.path(), true, OWN, BTreeSet::new).expect("ok");
        let limits = Amount {
            cpus: Some(Cpus(500)),
            memory: Some(Bytes(64 << 20)),
        };
        let group = delegated.create("c-w-t/1", &limits).expect("group");
        let dir = base.join("c-w-t_1");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert!(!group.oom_killed());
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("write");
        assert!(group.oom_killed());
        // A tiny share still gets the least quota the kernel takes.
        let tiny = Amount {
            cpus: Some(Cpus(1)),
            memory: None,
        };
        delegated.create("tiny", &tiny).expect("group");
        assert_eq!(
            std::fs::read_to_string(base.join("tiny/cpu.max")).expect("cpu.max"),
            "1000 100000"
        );
        // Removal of leftovers: an empty group goes (the fake files keep these, as
        // processes would keep a real one).
        std::fs::create_dir(base.join("c-w-old")).expect("mkdir");
        delegated.sweep("c-w-");
        assert!(!base.join("c-w-old").exists());
        assert!(dir.exists());
    }

    #[test]
    fn proc_cgroup_lines_are_read() {
        assert_eq!(v2_path("0::/a/b\n"), Some("/a/b"));
        assert_eq!(v2_path("4:memory:/x\n0::/\n"), Some("/"));
        assert_eq!(v2_path("4:memory:/x\n"), None);
    }

    /// What this machine allows, printed for the record (`--nocapture`).
    #[test]
    fn this_host_either_allows_limits_or_says_why() {
        match process_limits() {
            Ok(()) => eprintln!("this host lets the process driver enforce limits"),
            Err(why) => {
                eprintln!("{why}");
                assert!(why.starts_with("the process driver cannot enforce resource limits here: "));
            }
        }
    }
}
