//! A process workload dies with its agent, whole tree: after `kill -9` of an agent, no
//! process its workloads started is left — not even the children of a shell — so the
//! replacements the monitor starts elsewhere are the only copies that run.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    eventually, ready_workers, unique_mark, workloads, Agent, Api, Manager, Monitor, DEADLINE,
};
use serde_json::json;

/// A number of seconds no other process on the machine has as an argument: this test's
/// `sleep`s are found (and counted) by it.
fn unique_seconds() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = u64::from(nanos) ^ (u64::from(std::process::id()) * 7919);
    (1_000_000 + mixed % 8_000_000).to_string()
}

/// Every live (not zombie) process with an argument equal to `wanted`.
fn with_argument(wanted: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == wanted.as_bytes())
            && !zombie(pid)
        {
            found.push(pid);
        }
    }
    found.sort();
    found
}

/// `(state, parent)` of a process, from `/proc/<pid>/stat`; `None` once it is gone.
fn stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

fn zombie(pid: i32) -> bool {
    stat(pid).is_none_or(|(state, _)| state == 'Z')
}

/// Whether `ancestor` is on `pid`'s chain of parents.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    while let Some((_, parent)) = stat(at) {
        if parent == ancestor {
            return true;
        }
        if parent <= 1 {
            return false;
        }
        at = parent;
    }
    false
}

/// The chain of parents of `pid`, for failure messages.
fn ancestry(pid: i32) -> String {
    let mut chain = vec![pid.to_string()];
    let mut at = pid;
    while let Some((_, parent)) = stat(at) {
        chain.push(parent.to_string());
        if parent <= 1 {
            break;
        }
        at = parent;
    }
    chain.join(" <- ")
}

/// SIGKILLs every process carrying the test's mark when dropped, so that a failing run
/// (or the bug this file is about) leaves nothing behind.
struct KillMarked(String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for workload in workloads(&self.0) {
            // SAFETY: kill(2) on a pid; no memory involved.
            unsafe {
                libc::kill(workload.pid, libc::SIGKILL);
            }
        }
    }
}

async fn running_tasks(api: &Api) -> Vec<String> {
    let tasks = api.ok("/api/v1/tasks?service=tree").await;
    tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running")
        .map(|t| t["worker"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forking_workload_leaves_nothing_when_its_agent_is_killed() {
    let mark = unique_mark("tree");
    // Declared first, so it runs last: after the agents are gone.
    let _cleanup = KillMarked(mark.clone());
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "tree");
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);
    let mut agents: BTreeMap<&str, Agent> = ["w1", "w2"]
        .into_iter()
        .map(|n| (n, Agent::start(&manager.url, n, "process", &[])))
        .collect();
    ready_workers(&api, 2).await;

    // `; true` keeps the shell from exec'ing sleep: each replica is a shell and its child.
    let seconds = unique_seconds();
    let body = json!({
        "service": "tree",
        "command": ["sh", "-c", format!("sleep {seconds}; true")],
        "replicas": 2,
        "env": {"TEST_MARK": mark}
    });
    let reply = api.post("/api/v1/service", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    eventually("both replicas running, one sleep each", || async {
        let mut on = running_tasks(&api).await;
        on.sort();
        (on == ["w1", "w2"] && with_argument(&seconds).len() == 2).then_some(())
    })
    .await;

    agents.remove("w1").unwrap().kill9();
    let survivor = agents["w2"].pid();
    eventually("the monitor to run both replicas on w2", || async {
        (running_tasks(&api).await == ["w2", "w2"]).then_some(())
    })
    .await;

    // The dead agent's sleep must go too, whatever its shell did: exactly the two of the
    // live agent are left, and every process of the service descends from that agent.
    let alone = |sleeps: &[i32]| {
        sleeps.len() == 2
            && sleeps.iter().all(|p| descends_from(*p, survivor))
            && workloads(&mark)
                .iter()
                .all(|w| descends_from(w.pid, survivor))
    };
    let describe = |sleeps: &[i32]| {
        let shown: Vec<String> = sleeps.iter().map(|p| ancestry(*p)).collect();
        format!(
            "sleeps (pid <- parents): {shown:?}; live agent {survivor}; marked: {:?}",
            workloads(&mark)
        )
    };
    let started = Instant::now();
    loop {
        let sleeps = with_argument(&seconds);
        if alone(&sleeps) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the killed agent's processes are still running after {DEADLINE:?}: {}",
            describe(&sleeps)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it stays so: nothing of the dead agent comes back, nothing runs twice.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        let sleeps = with_argument(&seconds);
        assert!(
            sleeps.len() <= 2 && sleeps.iter().all(|p| descends_from(*p, survivor)),
            "{}",
            describe(&sleeps)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
