//! One task's health as its probes tell it, as a pure state machine: what a probe's result
//! does to it, and when the next probe is due. The prober (`probers.rs`) feeds it; the
//! plan reads the verdicts it publishes.
//!
//! The rules are Docker's: failures within `start_period` of the start do not count (a
//! pass there counts: the task is healthy, and from then on every failure counts);
//! `retries` failures in a row make the task unhealthy, for good (it is replaced); a pass
//! resets the count. Timing: the first probe runs as soon as the container runs; while
//! the task is `starting` a probe runs every min(`interval`, 1 s) — as Docker's
//! `start_interval` does — so a fresh replica is seen healthy within about a second and a
//! rollout waiting on it moves on; once healthy, every `interval`.

use std::time::Duration;

use mycluster_core::service::{Health, HealthCheck};

/// How often a task that is not yet healthy is probed, at most.
pub const STARTING_INTERVAL: Duration = Duration::from_secs(1);

/// What the agent publishes about one task's container, for the plan to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The container probed: a verdict says nothing of another container of the task.
    pub container_id: String,
    pub health: Health,
    /// Why the last probe failed; `None` once one passed.
    pub message: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Tracker {
    interval: Duration,
    retries: u32,
    start_period: Duration,
    health: Health,
    /// Failures in a row that counted.
    failures: u32,
    last_failure: Option<String>,
}

impl Tracker {
    /// A tracker for a container that just started, or that the agent adopts: a task the
    /// manager already holds healthy (an agent restarted under it) stays healthy until its
    /// probes say otherwise, rather than going back to `starting`.
    pub fn new(check: &HealthCheck, known: Option<Health>) -> Tracker {
        Tracker {
            interval: Duration::from_millis(check.interval.millis()),
            retries: check.retries.max(1),
            start_period: Duration::from_millis(check.start_period.millis()),
            health: match known {
                Some(Health::Healthy) => Health::Healthy,
                _ => Health::Starting,
            },
            failures: 0,
            last_failure: None,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Why the last probe failed, if it did.
    pub fn message(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Takes a probe's result, `since_start` after the container was first seen running;
    /// returns whether the health changed.
    pub fn observe(&mut self, since_start: Duration, result: Result<(), String>) -> bool {
        // Unhealthy is final: the task is replaced, not nursed back.
        if self.health == Health::Unhealthy {
            return false;
        }
        let before = self.health;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.last_failure = None;
                self.health = Health::Healthy;
            }
            Err(why) => {
                self.last_failure = Some(why);
                let grace = self.health == Health::Starting && since_start < self.start_period;
                if !grace {
                    self.failures = self.failures.saturating_add(1);
                    if self.failures >= self.retries {
                        self.health = Health::Unhealthy;
                    }
                }
            }
        }
        self.health != before
    }

    /// How long after a probe the next one runs; `None` once unhealthy (no more probes).
    pub fn next_probe(&self) -> Option<Duration> {
        match self.health {
            Health::Starting => Some(self.interval.min(STARTING_INTERVAL)),
            Health::Healthy => Some(self.interval),
            Health::Unhealthy => None,
        }
    }

    pub fn verdict(&self, container_id: &str) -> Verdict {
        Verdict {
            container_id: container_id.to_string(),
            health: self.health,
            message: self.last_failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use mycluster_core::service::Probe;
    use mycluster_core::span::Span;

    use super::*;

    fn check(interval_ms: u64, retries: u32, start_period_ms: u64) -> HealthCheck {
        HealthCheck {
            interval: Span(interval_ms),
            retries,
            start_period: Span(start_period_ms),
            ..HealthCheck::new(Probe::Tcp { port: 80 })
        }
    }

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn fail(why: &str) -> Result<(), String> {
        Err(why.to_string())
    }

    #[test]
    fn a_pass_makes_a_starting_task_healthy() {
        let mut t = Tracker::new(&check(5000, 3, 0), None);
        assert_eq!(t.health(), Health::Starting);
        assert!(t.observe(secs(0), Ok(())));
        assert_eq!(t.health(), Health::Healthy);
        assert!(!t.observe(secs(5), Ok(())), "no change, no news");
        assert_eq!(t.message(), None);
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy_for_good() {
        let mut t = Tracker::new(&check(5000, 3, 0), None);
        assert!(t.observe(secs(0), Ok(())));
        assert!(!t.observe(secs(5), fail("connection refused")));
        assert!(!t.observe(secs(10), fail("connection refused")));
        assert_eq!(t.health(), Health::Healthy);
        assert_eq!(t.message(), Some("connection refused"));
        assert!(t.observe(secs(15), fail("answered 500")));
        assert_eq!(t.health(), Health::Unhealthy);
        assert_eq!(t.message(), Some("answered 500"));
        // Final: a pass does not bring it back, and there is no next probe.
        assert!(!t.observe(secs(20), Ok(())));
        assert_eq!(t.health(), Health::Unhealthy);
        assert_eq!(t.next_probe(), None);
        assert_eq!(
            t.verdict("c1"),
            Verdict {
                container_id: "c1".into(),
                health: Health::Unhealthy,
                message: Some("answered 500".into()),
            }
        );
    }

    #[test]
    fn a_pass_resets_the_count() {
        let mut t = Tracker::new(&check(1000, 2, 0), None);
        t.observe(secs(0), fail("a"));
        t.observe(secs(1), Ok(()));
        t.observe(secs(2), fail("b"));
        assert_eq!(t.health(), Health::Healthy);
        t.observe(secs(3), fail("c"));
        assert_eq!(t.health(), Health::Unhealthy);
    }

    #[test]
    fn a_task_that_never_passes_goes_from_starting_to_unhealthy() {
        let mut t = Tracker::new(&check(1000, 2, 0), None);
        assert!(!t.observe(secs(0), fail("refused")));
        assert_eq!(t.health(), Health::Starting);
        assert!(t.observe(secs(1), fail("refused")));
        assert_eq!(t.health(), Health::Unhealthy);
    }

    #[test]
    fn failures_within_the_start_period_do_not_count() {
        let mut t = Tracker::new(&check(1000, 1, 10_000), None);
        for s in 0..10 {
            assert!(!t.observe(secs(s), fail("not yet")));
        }
        assert_eq!(t.health(), Health::Starting);
        assert_eq!(t.message(), Some("not yet"), "the reason is still told");
        assert!(t.observe(secs(10), fail("still not")));
        assert_eq!(t.health(), Health::Unhealthy);
    }

    #[test]
    fn once_healthy_the_start_period_no_longer_covers_failures() {
        let mut t = Tracker::new(&check(1000, 1, 60_000), None);
        t.observe(secs(1), Ok(()));
        assert!(t.observe(secs(2), fail("broke")));
        assert_eq!(t.health(), Health::Unhealthy);
    }

    #[test]
    fn a_starting_task_is_probed_every_second_at_most_then_every_interval() {
        let mut t = Tracker::new(&check(30_000, 3, 0), None);
        assert_eq!(t.next_probe(), Some(STARTING_INTERVAL));
        t.observe(secs(0), Ok(()));
        assert_eq!(t.next_probe(), Some(secs(30)));
        let fast = Tracker::new(&check(200, 3, 0), None);
        assert_eq!(fast.next_probe(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn an_adopted_healthy_task_stays_healthy() {
        let t = Tracker::new(&check(5000, 3, 0), Some(Health::Healthy));
        assert_eq!(t.health(), Health::Healthy);
        assert_eq!(t.next_probe(), Some(secs(5)));
        let t = Tracker::new(&check(5000, 3, 0), Some(Health::Unhealthy));
        assert_eq!(t.health(), Health::Starting);
    }
}
