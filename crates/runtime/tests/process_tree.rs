//! The process driver ends a task's whole process tree — whatever the command forked,
//! double-forked or moved to a session of its own — when the task is stopped, when its
//! command ends, and when the agent dies by SIGKILL; and a new agent ends what an old one
//! left. Processes are found by a unique argument (`sleep <unique seconds>`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mycluster_runtime::{
    Container, ContainerRuntime, ContainerState, Identity, ProcessRuntime, Supervisor, TaskSpec,
};

/// Generous: a slow machine must not fail a test.
const DEADLINE: Duration = Duration::from_secs(60);

/// The agent role of this test binary (see `agent_process`): the seconds its tasks sleep.
const AGENT_SECONDS: &str = "MYCLUSTER_TEST_AGENT_SECONDS";
/// ... and the cluster it runs them for.
const AGENT_CLUSTER: &str = "MYCLUSTER_TEST_AGENT_CLUSTER";
/// What the agent role prints once its tasks run.
const AGENT_READY: &str = "agent-ready";

fn supervisor() -> Supervisor {
    Supervisor::new(env!("CARGO_BIN_EXE_mycluster-supervise"), [""; 0])
}

/// A number of seconds no other process on the machine has as an argument.
fn unique_seconds() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = u64::from(nanos) ^ (u64::from(std::process::id()) * 7919);
    (1_000_000 + mixed % 8_000_000).to_string()
}

fn identity(cluster: &str) -> Identity {
    Identity {
        cluster: cluster.into(),
        worker: "w".into(),
    }
}

fn unique_cluster(test: &str) -> String {
    format!("tree-{test}-{}-{}", std::process::id(), unique_seconds())
}

fn task(id: &str, script: &str) -> TaskSpec {
    TaskSpec {
        task_id: id.into(),
        service: "tree".into(),
        slot: 0,
        image: None,
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        env: BTreeMap::new(),
        resources: Default::default(),
        mounts: Vec::new(),
    }
}

/// `(state, parent, process group)` of a process; `None` once it is gone.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, parent, group))
}

fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| state != 'Z')
}

fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    while let Some((_, parent, _)) = stat(at) {
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

/// Every live process with an argument equal to `wanted`.
fn with_argument(wanted: &str) -> Vec<i32> {
    let mut found: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| line.split(|b| *b == 0).any(|arg| arg == wanted.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect();
    found.sort();
    found
}

/// Every live process whose environment holds `variable`.
fn with_variable(variable: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == variable.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// SIGKILLs, when dropped, every process of the test: with its cluster's mark, or with its
/// unique argument. A failing test (or the bug it looks for) leaves nothing running.
struct Cleanup {
    cluster: String,
    seconds: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let marked = with_variable(&format!("MYCLUSTER_CLUSTER={}", self.cluster));
        for pid in marked.into_iter().chain(with_argument(&self.seconds)) {
            // SAFETY: kill(2) on a pid; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A child process, SIGKILLed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn exited(runtime: &ProcessRuntime, task_id: &str) -> ContainerState {
    let started = Instant::now();
    loop {
        let list = runtime.list().await.expect("list");
        let state = list
            .iter()
            .find(|c| c.task_id == task_id)
            .map(|c| c.state.clone());
        if let Some(state @ ContainerState::Exited { .. }) = state {
            return state;
        }
        assert!(started.elapsed() < DEADLINE, "{task_id} never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_of(container_id: &str) -> i32 {
    container_id
        .strip_prefix("pid-")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("not a process id: {container_id}"))
}

/// Not a test by itself: the agent that `a_killed_agent_leaves_no_process_of_its_tasks`
/// runs (this test binary again, told by the environment) and SIGKILLs. It starts two
/// tasks that fork, says so, and waits to be killed.
#[tokio::test]
#[ignore = "the agent of a_killed_agent_leaves_no_process_of_its_tasks; runs only as that"]
async fn agent_process() {
    let (Ok(seconds), Ok(cluster)) = (std::env::var(AGENT_SECONDS), std::env::var(AGENT_CLUSTER))
    else {
        return;
    };
    let runtime = ProcessRuntime::new(identity(&cluster), supervisor());
    for id in ["a", "b"] {
        // `; true` keeps the shell from exec'ing sleep: the shell forks it.
        let spec = task(id, &format!("sleep {seconds}; true"));
        runtime.start(&spec).await.expect("start");
    }
    println!("{AGENT_READY}");
    std::future::pending::<()>().await;
}

#[test]
fn a_killed_agent_leaves_no_process_of_its_tasks() {
    let seconds = unique_seconds();
    let cluster = unique_cluster("agent");
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
        seconds: seconds.clone(),
    };
    let mut agent = Killed(
        Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "agent_process", "--ignored", "--nocapture"])
            .env(AGENT_SECONDS, &seconds)
            .env(AGENT_CLUSTER, &cluster)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the agent"),
    );
    let stdout = agent.0.stdout.take().expect("its stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == AGENT_READY);
    assert!(ready, "the agent ended before its tasks ran");
    let agent_pid = agent.0.id() as i32;
    wait_until("both tasks' sleeps", || with_argument(&seconds).len() == 2);
    for pid in with_argument(&seconds) {
        assert!(descends_from(pid, agent_pid), "{pid} is the agent's");
    }

    // SIGKILL: the agent can do nothing more.
    drop(agent);
    wait_until("every process of the tasks to end with the agent", || {
        with_argument(&seconds).is_empty()
            && with_variable(&format!("MYCLUSTER_CLUSTER={cluster}")).is_empty()
    });
}

/// `sh -c` with a grandchild that leaves the command's process group and is orphaned
/// (a double fork): it writes its pid to `file`, then sleeps `seconds`.
fn escaping(seconds: &str, file: &std::path::Path, then: &str) -> String {
    format!(
        "(setsid sh -c 'echo $$ > \"$0\"; exec sleep {seconds}' '{}' &); \
         while [ ! -s '{}' ]; do sleep 0.01; done; {then}",
        file.display(),
        file.display()
    )
}

fn read_pid(file: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(file).expect("the grandchild's pid");
    text.trim().parse().expect("a pid")
}

#[tokio::test]
async fn a_stop_ends_a_grandchild_that_left_the_group_and_its_parent() {
    let seconds = unique_seconds();
    let cluster = unique_cluster("stop");
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
        seconds: seconds.clone(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("grandchild");
    let runtime = ProcessRuntime::new(identity(&cluster), supervisor());
    let script = escaping(&seconds, &file, "exec sleep 300");
    let id = runtime.start(&task("t", &script)).await.expect("start");
    let main = pid_of(&id);
    wait_until("the grandchild", || file.exists() && alive(read_pid(&file)));
    let grandchild = read_pid(&file);
    wait_until("the grandchild to sleep", || {
        with_argument(&seconds) == [grandchild]
    });
    // It escaped as a group kill or a parent's death signal would miss it: another process
    // group, and its parent gone (it was handed to the supervisor, the command's parent).
    let (_, parent, group) = stat(grandchild).expect("the grandchild");
    let (_, supervisor, _) = stat(main).expect("the command");
    assert_ne!(group, main, "the grandchild left the command's group");
    assert_eq!(parent, supervisor, "the grandchild was re-parented");

    let container = runtime
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|c| c.task_id == "t")
        .expect("listed");
    runtime.remove(&container, None).await.expect("remove");
    // The supervisor exits only once its tree is empty, and the stop waits for it.
    assert!(!alive(grandchild), "the grandchild outlived the stop");
    assert!(with_argument(&seconds).is_empty());
    assert!(!alive(main));
    assert!(runtime.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn a_command_that_ends_takes_what_it_left_and_its_exit_code_is_reported() {
    let seconds = unique_seconds();
    let cluster = unique_cluster("ends");
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
        seconds: seconds.clone(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("grandchild");
    let runtime = ProcessRuntime::new(identity(&cluster), supervisor());
    let script = escaping(&seconds, &file, "exit 3");
    runtime.start(&task("t", &script)).await.expect("start");
    let state = exited(&runtime, "t").await;
    assert_eq!(
        state,
        ContainerState::Exited {
            code: 3,
            error: None
        }
    );
    // The command waited for the grandchild's pid before it exited: it was there. The
    // task is reported ended once the supervisor exits, after its tree.
    assert!(!alive(read_pid(&file)), "the grandchild outlived the task");
    assert!(with_argument(&seconds).is_empty());
}

#[tokio::test]
async fn a_command_killed_by_a_signal_is_reported_as_such() {
    let cluster = unique_cluster("signal");
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
        seconds: unique_seconds(),
    };
    let runtime = ProcessRuntime::new(identity(&cluster), supervisor());
    for (id, signal) in [("kill", 9), ("term", 15), ("usr2", 12)] {
        let script = format!("kill -{signal} $$");
        runtime.start(&task(id, &script)).await.expect("start");
        assert_eq!(
            exited(&runtime, id).await,
            ContainerState::Exited {
                code: 128 + signal,
                error: Some(format!("killed by signal {signal}"))
            },
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_new_agent_ends_the_trees_an_old_one_left_marked_or_not() {
    let seconds = unique_seconds();
    let cluster = unique_cluster("leftovers");
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
        seconds: seconds.clone(),
    };
    let first = ProcessRuntime::new(identity(&cluster), supervisor());
    // The sleep drops the marks from its environment: only the tree leads to it.
    let script = format!("env -u MYCLUSTER_CLUSTER -u MYCLUSTER_WORKER sleep {seconds}; true");
    let id = first.start(&task("t", &script)).await.expect("start");
    let main = pid_of(&id);
    // `env` has the same arguments until it execs `sleep`: wait for the `sleep` itself.
    wait_until("the unmarked sleep", || {
        let found = with_argument(&seconds);
        found.len() == 1
            && std::fs::read_to_string(format!("/proc/{}/comm", found[0]))
                .is_ok_and(|comm| comm.trim() == "sleep")
    });
    let sleep = with_argument(&seconds)[0];
    assert!(!with_variable(&format!("MYCLUSTER_CLUSTER={cluster}")).contains(&sleep));
    // Forget the first runtime without stopping anything, as a crashed agent would (its
    // supervisors are alive here: the test process, their parent, lives on).
    std::mem::forget(first);

    let second = ProcessRuntime::new(identity(&cluster), supervisor());
    assert!(
        alive(sleep),
        "nothing is killed before the new runtime is used"
    );
    let listed: Vec<Container> = second.list().await.expect("list");
    assert!(listed.is_empty());
    wait_until("the old tree to be gone", || !alive(sleep) && !alive(main));
    assert!(with_variable(&format!("MYCLUSTER_CLUSTER={cluster}")).is_empty());
}

#[tokio::test]
async fn a_stop_kills_the_whole_tree_after_the_grace_when_sigterm_is_ignored() {
    let seconds = unique_seconds();
    let cluster = unique_cluster("grace");
    let _cleanup = Cleanup {
        cluster: cluster.clone(),
        seconds: seconds.clone(),
    };
    let runtime = ProcessRuntime::new(identity(&cluster), supervisor());
    // An ignored signal stays ignored across fork and exec: the sleep ignores it too.
    let script = format!("trap '' TERM; sleep {seconds}; true");
    let id = runtime.start(&task("t", &script)).await.expect("start");
    wait_until("the sleep", || with_argument(&seconds).len() == 1);
    let sleep = with_argument(&seconds)[0];
    let container = Container {
        task_id: "t".into(),
        id,
        name: String::new(),
        state: ContainerState::Running,
    };
    let asked = Instant::now();
    runtime.remove(&container, None).await.expect("remove");
    // Nothing could end them before the SIGKILL that follows the 5 s grace.
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(!alive(sleep), "the sleep outlived the stop");
    assert!(with_argument(&seconds).is_empty());
}
