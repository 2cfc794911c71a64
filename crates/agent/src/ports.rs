//! Where each task's ports are reached on this worker. On the docker driver every
//! container has an address of its own, so a target is reached at itself. On the process
//! driver every task shares the host's network and many replicas of one service run side
//! by side, so the agent gives each task a free port of the host per target, held for as
//! long as the task has a process here: two live tasks are never given one port, even
//! before either listens on it.
//!
//! Ports are chosen from [`RANGE`], below the kernel's default ephemeral range
//! (32768-60999), where outgoing connections do not take ports meanwhile; one is free when
//! it can be bound on every interface now. Another program (or another agent on this
//! host) may still take it before the task binds it: the task then fails to listen, exits,
//! and is replaced with new ports, as any task that crashes at start.
//!
//! A process-driver task never outlives its agent (its supervisor dies with it, and a new
//! agent kills what is left), so what a new agent does not hold it never needs: a report
//! without ports leaves the manager's record as it was.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use mycluster_core::service::Probe;
use mycluster_core::task::TaskPort;
use mycluster_core::wire::TaskDoc;
use mycluster_core::Driver;

/// Where the process driver looks for free ports.
pub const RANGE: Range<u16> = 20_000..32_000;

/// The ports this agent handed out, by task.
#[derive(Default)]
pub struct Ports {
    held: Mutex<BTreeMap<String, Vec<TaskPort>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no free port for task {task} on this host (looked in {}-{}): free some, or run fewer \
     tasks with ports here",
    RANGE.start,
    RANGE.end - 1
)]
pub struct NoFreePort {
    task: String,
}

impl Ports {
    /// Where `task`'s targets are reached when it runs on `driver`: each target itself, or
    /// on the process driver free ports, now held for it (the same ones if it holds
    /// some already).
    pub fn assign(&self, task: &TaskDoc, driver: Driver) -> Result<Vec<TaskPort>, NoFreePort> {
        let targets = targets(task);
        if driver != Driver::Process || targets.is_empty() {
            return Ok(at_targets(&targets));
        }
        let mut held = lock(&self.held);
        if let Some(ports) = held.get(&task.id) {
            return Ok(ports.clone());
        }
        let taken: Vec<u16> = held.values().flatten().filter_map(|p| p.port).collect();
        let start = rand::random_range(RANGE);
        let chosen = choose(targets.len(), start, &taken, bindable).ok_or_else(|| NoFreePort {
            task: task.id.clone(),
        })?;
        let ports: Vec<TaskPort> = targets
            .into_iter()
            .zip(chosen)
            .map(|(target, port)| TaskPort {
                target,
                port: Some(port),
            })
            .collect();
        held.insert(task.id.clone(), ports.clone());
        Ok(ports)
    }

    /// Where `task`'s targets are reached, for a report: as `assign` gave them; empty
    /// when this agent gave it none on the process driver (the manager keeps what it
    /// knows).
    pub fn reached(&self, task: &TaskDoc, driver: Driver) -> Vec<TaskPort> {
        if driver != Driver::Process {
            return at_targets(&targets(task));
        }
        lock(&self.held).get(&task.id).cloned().unwrap_or_default()
    }

    /// Frees the ports of every task `live` does not name (its process is gone).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        lock(&self.held).retain(|task, _| live(task));
    }

    /// Frees a task's ports (its start failed).
    pub fn release(&self, task: &str) {
        lock(&self.held).remove(task);
    }
}

/// `probe` aimed where the task is reached: an HTTP or TCP check of one of its targets
/// goes to the port that target is reached at (the same on the docker driver).
pub fn retarget(probe: &Probe, reached: &[TaskPort]) -> Probe {
    let at = |port: u16| {
        reached
            .iter()
            .find(|p| p.target == port)
            .and_then(|p| p.port)
            .unwrap_or(port)
    };
    match probe {
        Probe::Http { port, path } => Probe::Http {
            port: at(*port),
            path: path.clone(),
        },
        Probe::Tcp { port } => Probe::Tcp { port: at(*port) },
        Probe::Exec(argv) => Probe::Exec(argv.clone()),
    }
}

fn targets(task: &TaskDoc) -> Vec<u16> {
    mycluster_core::service::distinct(task.ports.iter().map(|p| p.target))
}

fn at_targets(targets: &[u16]) -> Vec<TaskPort> {
    targets
        .iter()
        .map(|&target| TaskPort {
            target,
            port: Some(target),
        })
        .collect()
}

/// `count` distinct ports of [`RANGE`], walking from `start` (wrapping around), that are
/// not `taken` and that `free` accepts; `None` if the range has too few.
fn choose(count: usize, start: u16, taken: &[u16], free: impl Fn(u16) -> bool) -> Option<Vec<u16>> {
    let size = RANGE.end - RANGE.start;
    let offset = start.saturating_sub(RANGE.start) % size;
    let mut chosen = Vec::with_capacity(count);
    for i in 0..size {
        if chosen.len() == count {
            break;
        }
        let port = RANGE.start + (offset + i) % size;
        if !taken.contains(&port) && free(port) {
            chosen.push(port);
        }
    }
    (chosen.len() == count).then_some(chosen)
}

/// Whether `port` can be listened on, on every interface, now.
fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, targets: &[u16]) -> TaskDoc {
        TaskDoc {
            image: None,
            command: Some(vec!["serve".into()]),
            ports: targets
                .iter()
                .map(|&target| TaskPort { target, port: None })
                .collect(),
            ..crate::fixtures::task_doc(id)
        }
    }

    #[test]
    fn choosing_skips_taken_and_busy_ports_and_wraps_around() {
        let last = RANGE.end - 1;
        let busy = |port: u16| port != RANGE.start + 1;
        assert_eq!(
            choose(3, last, &[RANGE.start], busy),
            Some(vec![last, RANGE.start + 2, RANGE.start + 3])
        );
        assert_eq!(choose(1, 0, &[], |_| false), None);
        let all: Vec<u16> = RANGE.collect();
        assert_eq!(choose(1, RANGE.start, &all, |_| true), None);
    }

    #[test]
    fn checks_of_a_target_probe_where_it_is_reached() {
        let reached = [TaskPort {
            target: 8000,
            port: Some(41000),
        }];
        let http = Probe::Http {
            port: 8000,
            path: "/healthz".into(),
        };
        assert_eq!(
            retarget(&http, &reached),
            Probe::Http {
                port: 41000,
                path: "/healthz".into()
            }
        );
        assert_eq!(
            retarget(&Probe::Tcp { port: 8000 }, &reached),
            Probe::Tcp { port: 41000 }
        );
        // A port the task does not name, or no ports known: as written.
        assert_eq!(
            retarget(&Probe::Tcp { port: 9000 }, &reached),
            Probe::Tcp { port: 9000 }
        );
        assert_eq!(retarget(&http, &[]), http);
    }

    #[test]
    fn docker_tasks_are_reached_at_their_targets() {
        let ports = Ports::default();
        let t = task("a", &[9000, 8000, 9000]);
        let want = vec![
            TaskPort {
                target: 8000,
                port: Some(8000),
            },
            TaskPort {
                target: 9000,
                port: Some(9000),
            },
        ];
        assert_eq!(ports.assign(&t, Driver::Docker), Ok(want.clone()));
        assert_eq!(ports.reached(&t, Driver::Docker), want);
        assert_eq!(ports.assign(&task("b", &[]), Driver::Process), Ok(vec![]));
    }

    #[test]
    fn process_tasks_get_distinct_free_ports_held_until_released() {
        let ports = Ports::default();
        let (a, b) = (task("a", &[8000, 9000]), task("b", &[8000]));
        let of_a = ports.assign(&a, Driver::Process).expect("ports for a");
        let of_b = ports.assign(&b, Driver::Process).expect("ports for b");
        let mut all: Vec<u16> = of_a.iter().chain(&of_b).filter_map(|p| p.port).collect();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|p| RANGE.contains(p)), "{all:?}");
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3, "one port per target, none shared");
        assert_eq!(
            of_a.iter().map(|p| p.target).collect::<Vec<_>>(),
            [8000, 9000]
        );
        // Asked again (a start tried again): the same ports.
        assert_eq!(ports.assign(&a, Driver::Process), Ok(of_a.clone()));
        assert_eq!(ports.reached(&a, Driver::Process), of_a);
        ports.retain(|task| task == "a");
        assert!(ports.reached(&b, Driver::Process).is_empty());
        ports.release("a");
        assert!(ports.reached(&a, Driver::Process).is_empty());
    }
}
