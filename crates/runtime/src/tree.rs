//! The process tree as `/proc` shows it: who descends from whom, and how to end a whole
//! subtree. Shared by the task supervisor (which ends its own tree) and the process driver
//! (its backstop when a supervisor does not answer, and the clean-up of a dead agent's
//! leftovers).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One process, as its `/proc/<pid>/stat` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Proc {
    pub pid: i32,
    pub parent: i32,
    /// Ended but not yet reaped: it runs nothing and can start nothing.
    pub zombie: bool,
}

/// Every process visible now. Processes that end while being read are left out.
pub(crate) fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect()
}

/// `/proc/<pid>/stat` of one process; `None` once it is gone.
pub(crate) fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &stat)
}

/// The fields after the command name: the name may hold spaces and parentheses, so
/// they start after the last ')'.
fn parse_stat(pid: i32, stat: &str) -> Option<Proc> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    Some(Proc {
        pid,
        parent,
        zombie: state == "Z" || state == "X",
    })
}

/// The live (not zombie) processes below any of `roots` in `table`, roots excluded.
pub(crate) fn descendants_in(table: &[Proc], roots: &BTreeSet<i32>) -> BTreeSet<i32> {
    let mut children: BTreeMap<i32, Vec<&Proc>> = BTreeMap::new();
    for proc in table {
        children.entry(proc.parent).or_default().push(proc);
    }
    let mut found = BTreeSet::new();
    let mut next: Vec<i32> = roots.iter().copied().collect();
    while let Some(pid) = next.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            // A zombie's children were handed to a reaper when it ended: it has none.
            if !child.zombie && !roots.contains(&child.pid) && found.insert(child.pid) {
                next.push(child.pid);
            }
        }
    }
    found
}

/// The live processes below `root` now.
pub(crate) fn descendants(root: i32) -> BTreeSet<i32> {
    descendants_in(&processes(), &BTreeSet::from([root]))
}

/// `pid` and every process above it, up to PID 1.
pub(crate) fn ancestors_and_self(pid: i32) -> BTreeSet<i32> {
    let mut chain = BTreeSet::from([pid]);
    let mut at = pid;
    while let Some(proc) = read_proc(at) {
        if proc.parent <= 0 || !chain.insert(proc.parent) {
            break;
        }
        at = proc.parent;
    }
    chain
}

pub(crate) fn kill(pid: i32, signal: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill(2) on one pid; no memory involved.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Sends `signal` to one process with `value` attached (sigqueue(3)): the receiver reads
/// it with the signal, where a plain kill(2) carries nothing.
pub(crate) fn queue(pid: i32, signal: libc::c_int, value: usize) {
    if pid > 0 {
        let value = libc::sigval {
            // A number, not a pointer: sigval is a union of the two.
            sival_ptr: value as *mut libc::c_void,
        };
        // SAFETY: sigqueue(3) on one pid, with a value passed by copy.
        unsafe {
            libc::sigqueue(pid, signal, value);
        }
    }
}

/// Signals the process group `leader` leads.
pub(crate) fn kill_group(leader: i32, signal: libc::c_int) {
    if leader > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe {
            libc::kill(-leader, signal);
        }
    }
}

/// How often the loops below look again while killed processes die.
const RESCAN: Duration = Duration::from_millis(10);

/// SIGKILLs everything below `root` until nothing is left, then `root` itself (the
/// caller reaps it). `root` is a task supervisor, a child subreaper: while it lives,
/// anything orphaned below it is re-parented to it and stays in view, so a process
/// forked during the kill is found by the next scan. Gives up on what still lives after
/// `patience` (a process stuck in the kernel dies when it leaves it: SIGKILL is pending).
pub(crate) fn kill_tree(root: i32, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let below = descendants(root);
        if below.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in below {
            kill(pid, libc::SIGKILL);
        }
        std::thread::sleep(RESCAN);
    }
    kill(root, libc::SIGKILL);
}

/// SIGKILLs every process `marked` selects, and everything below those, until a scan
/// finds none alive (or `patience` runs out); never this process or its ancestors.
/// Returns how many processes it signalled.
pub(crate) fn kill_marked(marked: impl Fn(i32) -> bool, patience: Duration) -> usize {
    let spared = ancestors_and_self(std::process::id() as i32);
    let deadline = Instant::now() + patience;
    let mut killed = BTreeSet::new();
    loop {
        let table = processes();
        let roots: BTreeSet<i32> = table
            .iter()
            .filter(|p| !p.zombie && !spared.contains(&p.pid) && marked(p.pid))
            .map(|p| p.pid)
            .collect();
        let mut victims = descendants_in(&table, &roots);
        victims.extend(&roots);
        victims.retain(|pid| !spared.contains(pid));
        if victims.is_empty() || Instant::now() >= deadline {
            return killed.len();
        }
        for &pid in &victims {
            kill(pid, libc::SIGKILL);
        }
        killed.extend(victims);
        std::thread::sleep(RESCAN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_follow_the_last_parenthesis() {
        let stat = "42 (a (weird) name) S 7 42 42 0 -1";
        assert_eq!(
            parse_stat(42, stat),
            Some(Proc {
                pid: 42,
                parent: 7,
                zombie: false
            })
        );
        assert!(parse_stat(43, "43 (x) Z 1 0").is_some_and(|p| p.zombie));
        assert_eq!(parse_stat(44, "garbage"), None);
    }

    #[test]
    fn descendants_are_the_live_subtree() {
        let proc = |pid, parent, zombie| Proc {
            pid,
            parent,
            zombie,
        };
        let table = [
            proc(1, 0, false),
            proc(10, 1, false),
            proc(11, 10, false),
            proc(12, 11, false),
            proc(13, 10, true),
            proc(20, 1, false),
            proc(21, 20, false),
        ];
        assert_eq!(
            descendants_in(&table, &BTreeSet::from([10])),
            BTreeSet::from([11, 12])
        );
        assert_eq!(
            descendants_in(&table, &BTreeSet::from([10, 20])),
            BTreeSet::from([11, 12, 21])
        );
        assert!(descendants_in(&table, &BTreeSet::from([12])).is_empty());
    }

    #[test]
    fn this_process_descends_from_its_parent() {
        let me = std::process::id() as i32;
        // SAFETY: getppid(2) has no preconditions.
        let parent = unsafe { libc::getppid() };
        assert!(descendants(parent).contains(&me));
        let chain = ancestors_and_self(me);
        assert!(chain.contains(&me) && chain.contains(&parent));
    }
}
