//! How far a service got towards what it asks for, from its tasks as `GET /api/v1/tasks`
//! shows them: what `mycluster service create|update|scale` wait for and report. A
//! service *cannot make progress* when one of its replicas failed since the change was
//! made (a command that does not exist, a container that crashes at once) or cannot be
//! placed on any worker: waiting longer would not help, so the CLI says why at once.
//!
//! A service whose restart condition is `on-failure` or `none` is batch work: a slot
//! whose task exited 0 is `complete` and stays so (it is not replaced), and counts as
//! done, so waiting on a job that finished neither hangs nor fails ("3/3 complete").

use std::collections::{BTreeMap, BTreeSet};

use crate::service::RestartCondition;
use crate::wire::TaskDoc;
use crate::{DesiredState, TaskState};

/// The state of a service's replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub wanted: u32,
    /// Replicas running now.
    pub running: u32,
    /// Replicas wanted and on their way (pending for a worker that is there, assigned,
    /// starting).
    pub starting: u32,
    /// Slots whose task completed (exited 0) and that are not restarted: done, for a
    /// service whose restart condition is `on-failure` or `none`.
    pub complete: u32,
    /// Why replicas cannot make progress (each reason once), empty if none is known.
    pub stuck: Vec<String>,
}

impl Progress {
    /// `tasks` are the service's tasks now; `known` the ids of its tasks from before the
    /// change (their failures are old news).
    pub fn of(wanted: u32, tasks: &[TaskDoc], known: &BTreeSet<String>) -> Progress {
        Progress::with_restart(wanted, RestartCondition::Any, tasks, known)
    }

    /// As `of`, for a service whose restart condition is `restart`: under `on-failure`
    /// and `none`, a wanted slot whose task completed and that has no other task on its
    /// way counts as done.
    pub fn with_restart(
        wanted: u32,
        restart: RestartCondition,
        tasks: &[TaskDoc],
        known: &BTreeSet<String>,
    ) -> Progress {
        let mut progress = Progress {
            wanted,
            running: 0,
            starting: 0,
            complete: 0,
            stuck: Vec::new(),
        };
        if restart != RestartCondition::Any {
            let busy: BTreeSet<u32> = tasks
                .iter()
                .filter(|t| t.desired_state == DesiredState::Running && !t.state.is_terminal())
                .map(|t| t.slot)
                .collect();
            let done: BTreeSet<u32> = tasks
                .iter()
                .filter(|t| t.state == TaskState::Complete && t.slot < wanted)
                .filter(|t| !busy.contains(&t.slot))
                .map(|t| t.slot)
                .collect();
            progress.complete = u32::try_from(done.len()).unwrap_or(u32::MAX);
        }
        // Why, and which replicas it holds back ("0 on w1"; none for a reason that is
        // about the service, not a replica).
        let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for task in tasks {
            let (state, desired) = (task.state, task.desired_state);
            let wanted_running = desired == DesiredState::Running;
            match state {
                TaskState::Running if wanted_running => progress.running += 1,
                TaskState::Pending if wanted_running && unplaceable(task) => {
                    reasons.entry(task.message.clone()).or_default();
                }
                TaskState::Pending | TaskState::Assigned | TaskState::Starting
                    if wanted_running =>
                {
                    progress.starting += 1
                }
                TaskState::Failed if !known.contains(&task.id) => {
                    let why = task
                        .error
                        .clone()
                        .filter(|e| !e.is_empty())
                        .or_else(|| task.exit_code.map(|c| format!("exited with code {c}")))
                        .unwrap_or_else(|| "failed".into());
                    let on = task
                        .worker
                        .as_deref()
                        .map_or(String::new(), |w| format!(" on {w}"));
                    reasons
                        .entry(why)
                        .or_default()
                        .push(format!("{}{on}", task.slot));
                }
                _ => {}
            }
        }
        progress.stuck = reasons
            .into_iter()
            .map(|(why, who)| match who.len() {
                0 => why,
                1 => format!("replica {}: {why}", who[0]),
                _ => format!("replicas {}: {why}", who.join(", ")),
            })
            .collect();
        progress
    }

    /// Every wanted replica runs (or, for batch work, completed).
    pub fn is_done(&self) -> bool {
        self.running.saturating_add(self.complete) >= self.wanted
    }

    /// Not done, and known not to get there by waiting.
    pub fn is_stuck(&self) -> bool {
        !self.is_done() && !self.stuck.is_empty()
    }

    /// "2 of 3 running, 1 starting", for people; "3/3 complete" for batch work that
    /// finished, "1 of 3 running, 2 complete" for some on its way.
    pub fn summary(&self) -> String {
        if self.complete > 0 && self.running == 0 && self.starting == 0 {
            return format!("{}/{} complete", self.complete, self.wanted);
        }
        let mut text = format!("{} of {} running", self.running, self.wanted);
        if self.complete > 0 {
            text.push_str(&format!(", {} complete", self.complete));
        }
        if self.starting > 0 {
            text.push_str(&format!(", {} starting", self.starting));
        }
        text
    }
}

/// A pending task the scheduler could not place says so in its message.
fn unplaceable(task: &TaskDoc) -> bool {
    crate::schedule::is_unplaceable(&task.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, slot: u32, desired: &str, state: &str) -> TaskDoc {
        TaskDoc {
            healthcheck: None,
            health: None,
            health_message: None,
            id: id.into(),
            service: "web".into(),
            slot,
            image: None,
            command: None,
            env: Default::default(),
            worker: Some("w1".into()),
            desired_state: DesiredState::parse(desired).expect("a desired state"),
            state: TaskState::parse(state).expect("a task state"),
            message: String::new(),
            container_id: None,
            exit_code: None,
            error: None,
            created_at: 0.0,
            updated_at: 0.0,
            ports: Vec::new(),
            address: None,
            stop_grace_period: crate::service::DEFAULT_STOP_GRACE_PERIOD,
            resources: Default::default(),
            mounts: Vec::new(),
            moving: None,
            on_disconnect: Default::default(),
        }
    }

    #[test]
    fn all_running_is_done() {
        let tasks = [
            task("a", 0, "running", "running"),
            task("b", 1, "running", "running"),
        ];
        let p = Progress::of(2, &tasks, &BTreeSet::new());
        assert!(p.is_done() && !p.is_stuck());
        assert_eq!(p.summary(), "2 of 2 running");
    }

    #[test]
    fn starting_replicas_are_progress_not_a_failure() {
        let tasks = [
            task("a", 0, "running", "running"),
            task("b", 1, "running", "starting"),
            // An old replica being stopped is not counted.
            task("c", 1, "shutdown", "running"),
        ];
        let p = Progress::of(2, &tasks, &BTreeSet::new());
        assert!(!p.is_done() && !p.is_stuck());
        assert_eq!(p.summary(), "1 of 2 running, 1 starting");
    }

    #[test]
    fn a_new_failure_is_stuck_with_its_reason_once() {
        let failed = |id: &str, slot| TaskDoc {
            error: Some("cannot run '/no/such/binary': No such file or directory".into()),
            ..task(id, slot, "running", "failed")
        };
        let tasks = [
            failed("a", 0),
            failed("b", 1),
            task("c", 0, "running", "pending"),
        ];
        let p = Progress::of(2, &tasks, &BTreeSet::new());
        assert!(p.is_stuck());
        assert_eq!(
            p.stuck,
            ["replicas 0 on w1, 1 on w1: cannot run '/no/such/binary': No such file or directory"]
        );
    }

    #[test]
    fn an_old_failure_is_not_news() {
        let tasks = [
            TaskDoc {
                exit_code: Some(3),
                ..task("old", 0, "running", "failed")
            },
            task("new", 0, "running", "starting"),
        ];
        let known = BTreeSet::from(["old".to_string()]);
        assert!(!Progress::of(1, &tasks, &known).is_stuck());
        let p = Progress::of(1, &tasks, &BTreeSet::new());
        assert_eq!(p.stuck, ["replica 0 on w1: exited with code 3"]);
    }

    #[test]
    fn an_unplaceable_replica_is_stuck() {
        let tasks = [TaskDoc {
            message: "no worker can take it: 2 cannot run it (the process driver needs a command)"
                .into(),
            worker: None,
            ..task("a", 0, "running", "pending")
        }];
        let p = Progress::of(1, &tasks, &BTreeSet::new());
        assert!(p.is_stuck());
        assert_eq!(
            p.stuck,
            ["no worker can take it: 2 cannot run it (the process driver needs a command)"]
        );
    }

    #[test]
    fn batch_work_that_completed_is_done() {
        let done = |id: &str, slot| TaskDoc {
            exit_code: Some(0),
            ..task(id, slot, "running", "complete")
        };
        let tasks = [done("a", 0), done("b", 1), done("c", 2)];
        let none = Progress::with_restart(3, RestartCondition::None, &tasks, &BTreeSet::new());
        assert!(none.is_done() && !none.is_stuck());
        assert_eq!(none.summary(), "3/3 complete");
        let on_failure =
            Progress::with_restart(3, RestartCondition::OnFailure, &tasks, &BTreeSet::new());
        assert!(on_failure.is_done());
        // Under `any` a completed task is replaced: not done until it runs again.
        let any = Progress::of(3, &tasks, &BTreeSet::new());
        assert!(!any.is_done() && !any.is_stuck());
        assert_eq!(any.summary(), "0 of 3 running");
        // Some on their way.
        let tasks = [
            done("a", 0),
            task("b", 1, "running", "running"),
            task("c", 2, "running", "starting"),
        ];
        let p = Progress::with_restart(3, RestartCondition::None, &tasks, &BTreeSet::new());
        assert!(!p.is_done());
        assert_eq!(p.summary(), "1 of 3 running, 1 complete, 1 starting");
        // A slot that completed and was started again is not done twice.
        let tasks = [done("a", 0), task("a2", 0, "running", "starting")];
        let p = Progress::with_restart(1, RestartCondition::OnFailure, &tasks, &BTreeSet::new());
        assert_eq!((p.complete, p.is_done()), (0, false));
    }

    #[test]
    fn scaled_to_zero_is_done() {
        let p = Progress::of(0, &[task("a", 0, "shutdown", "running")], &BTreeSet::new());
        assert!(p.is_done());
    }
}
