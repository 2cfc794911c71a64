//! The fence's tests: the lease's arithmetic, what an expiry cuts off, which lists are
//! taken, and what a pass may start meanwhile.

use super::*;
use mycluster_core::wire::TaskState;
use mycluster_runtime::ContainerState;

fn task(id: &str, policy: OnDisconnect) -> TaskDoc {
    TaskDoc {
        on_disconnect: policy,
        state: TaskState::Running,
        ..crate::fixtures::task_doc(id)
    }
}

fn list(index: u64, epoch: u64, tasks: &[TaskDoc]) -> List {
    List {
        index,
        epoch,
        lease: DEFAULT_LEASE,
        tasks: tasks.to_vec(),
    }
}

fn ids(tasks: &[TaskDoc]) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_str()).collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn a_lease_is_read_from_the_answer_or_defaults() {
    assert_eq!(lease_of(5.0), secs(5.0));
    assert_eq!(lease_of(2.5), secs(2.5));
    assert_eq!(lease_of(0.0), DEFAULT_LEASE);
    assert_eq!(lease_of(-1.0), DEFAULT_LEASE);
    assert_eq!(lease_of(f64::NAN), DEFAULT_LEASE);
    assert_eq!(lease_of(1e12), MAX_LEASE);
}

#[test]
fn the_lease_counts_from_the_latest_acknowledged_sending() {
    let t0 = Instant::now();
    let mut f = Fencing::default();
    assert_eq!(f.lease_at(t0), LeaseState::Unknown);
    assert!(!f.known());
    f.renewed(t0, Some(secs(5.0)), 1);
    assert!(f.known());
    assert_eq!(f.lease_at(t0 + secs(1.0)), LeaseState::Left(secs(4.0)));
    assert_eq!(f.lease_at(t0 + secs(5.0)), LeaseState::Expired(secs(5.0)));
    // An answer to an older heartbeat, arriving late, does not move the count back.
    f.renewed(t0 + secs(2.0), None, 1);
    f.renewed(t0 + secs(1.0), None, 1);
    assert_eq!(f.lease_at(t0 + secs(3.0)), LeaseState::Left(secs(4.0)));
    assert_eq!(f.lease(), secs(5.0));
}

#[test]
fn an_expiry_cuts_off_the_stop_tasks_once_and_leaves_replace_tasks() {
    let t0 = Instant::now();
    let mut f = Fencing::default();
    f.renewed(t0, Some(secs(5.0)), 1);
    let wanted = [
        task("keep", OnDisconnect::Replace),
        task("single", OnDisconnect::Stop),
        TaskDoc {
            desired_state: DesiredState::Shutdown,
            ..task("leaving", OnDisconnect::Stop)
        },
    ];
    assert!(f.take(&list(1, 1, &wanted), Source::Relist).is_some());
    assert_eq!(f.expire(t0 + secs(4.9), &wanted), None);
    let expiry = f.expire(t0 + secs(5.0), &wanted).expect("expired");
    assert_eq!(expiry.silent_for, secs(5.0));
    let cut: Vec<&str> = expiry.cut.iter().map(|c| c.task.id.as_str()).collect();
    // A stop task the manager asked to stop is stopping already: the plan goes on.
    assert_eq!(cut, ["single"]);
    assert_eq!(
        expiry.cut[0].error,
        "stopped: the worker's lease expired (no answer from the manager for 5.0s)"
    );
    assert_eq!(ids(&expiry.tasks), ["keep", "leaving"]);
    assert!(f.fenced());
    // Once per expiry.
    assert_eq!(f.expire(t0 + secs(6.0), &wanted), None);
    assert!(f.cut("single").is_some());
    assert_eq!(f.unreported().count(), 1);
    assert!(f.report("single"));
    assert!(!f.report("single"));
    // One the fence forgot (the manager no longer wants it): a report does no harm.
    assert!(f.report("unknown"));
    assert_eq!(f.unreported().count(), 0);
}

#[test]
fn only_a_list_fetched_after_a_renewal_lifts_the_fence() {
    let t0 = Instant::now();
    let mut f = Fencing::default();
    f.renewed(t0, None, 1);
    let wanted = [
        task("keep", OnDisconnect::Replace),
        task("single", OnDisconnect::Stop),
    ];
    f.take(&list(1, 1, &wanted), Source::Relist);
    let g = f.generation();
    f.expire(t0 + secs(6.0), &wanted).expect("expired");
    // A pass planned before the expiry starts nothing.
    assert!(!f.may_start(&wanted[0], g));
    // A long-poll's list while fenced: no stop task in sight, none to start.
    let fresh = task("other-single", OnDisconnect::Stop);
    let watched = [wanted[0].clone(), wanted[1].clone(), fresh.clone()];
    let taken = f
        .take(
            &list(2, 1, &watched),
            Source::Watch {
                generation: f.generation(),
            },
        )
        .expect("taken");
    assert_eq!(ids(&taken.tasks), ["keep"]);
    assert!(!f.may_start(&fresh, f.generation()));
    assert!(f.may_start(&wanted[0], f.generation()));
    // Renewed: the agent must fetch its list at once.
    f.renewed(t0 + secs(7.0), None, 1);
    assert!(f.must_relist());
    let taken = f
        .take(&list(3, 1, &watched), Source::Relist)
        .expect("taken");
    assert!(!f.fenced());
    assert!(!f.must_relist());
    // The cut task stays out of sight while the manager still wants it (our report has
    // not reached it); another stop task may start again.
    assert_eq!(ids(&taken.tasks), ["keep", "other-single"]);
    assert!(f.may_start(&fresh, f.generation()));
    assert!(!f.may_start(&wanted[1], f.generation()));
    // Once the manager holds it failed, it is forgotten.
    let failed = TaskDoc {
        state: TaskState::Failed,
        ..wanted[1].clone()
    };
    f.take(&list(4, 1, &[wanted[0].clone(), failed]), Source::Relist);
    assert!(f.cut("single").is_none());
}

#[test]
fn a_long_poll_that_answers_after_another_list_was_published_is_stale() {
    let mut f = Fencing::default();
    let asked = f.generation();
    let a = [task("a", OnDisconnect::Replace)];
    f.take(&list(5, 1, &a), Source::Relist).expect("taken");
    assert_eq!(f.index(), Some(5));
    assert_eq!(
        f.take(&list(4, 1, &[]), Source::Watch { generation: asked }),
        None
    );
    assert_eq!(f.index(), Some(5));
    let now = f.generation();
    assert!(f
        .take(&list(6, 1, &[]), Source::Watch { generation: now })
        .is_some());
}

#[test]
fn a_newer_epoch_holds_the_pass_off_until_its_kills_are_launched() {
    let t0 = Instant::now();
    let mut f = Fencing::default();
    let old = [
        task("a", OnDisconnect::Replace),
        task("b", OnDisconnect::Replace),
    ];
    f.renewed(t0, None, 3);
    f.take(&list(1, 3, &old), Source::Relist);
    assert!(!f.holds_off());
    // Declared down while cut off, now back.
    f.renewed(t0 + secs(1.0), None, 4);
    assert!(f.holds_off());
    assert!(f.must_relist());
    assert!(!f.may_start(&old[0], f.generation()));
    let taken = f
        .take(&list(9, 4, &old[..1]), Source::Relist)
        .expect("taken");
    assert_eq!(taken.epoch_moved, Some((3, 4)));
    assert!(f.holds_off());
    f.killed();
    assert!(!f.holds_off());
    // The same epoch again moves nothing; an older one (a manager that lost its state
    // and registered the worker afresh) kills nothing either.
    let again = f
        .take(&list(10, 4, &old[..1]), Source::Relist)
        .expect("taken");
    assert_eq!(again.epoch_moved, None);
    f.renewed(t0 + secs(2.0), None, 1);
    let reset = f
        .take(&list(1, 1, &old[..1]), Source::Relist)
        .expect("taken");
    assert_eq!(reset.epoch_moved, None);
    assert!(!f.holds_off());
}

#[test]
fn a_new_epoch_kills_the_containers_of_tasks_no_longer_listed() {
    let container = |task: &str| Container {
        task_id: task.into(),
        id: format!("c-{task}"),
        name: format!("web.0.{task}"),
        state: ContainerState::Running,
    };
    let containers = [container("a"), container("b"), container("gone")];
    let listed = [
        task("a", OnDisconnect::Replace),
        TaskDoc {
            desired_state: DesiredState::Shutdown,
            ..task("b", OnDisconnect::Stop)
        },
    ];
    let killed: Vec<&str> = unassigned(&listed, &containers)
        .iter()
        .map(|c| c.task_id.as_str())
        .collect();
    // One the manager asks to stop is the plan's to stop (after its deregister delay).
    assert_eq!(killed, ["gone"]);
}
