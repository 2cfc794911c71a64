//! The one shape every background loop has: run a step, sleep, repeat until stopped; on
//! error, log and back off exponentially (bounded), then go on.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// What a step asks of its loop.
pub enum LoopControl {
    Continue,
    /// Go on, with the next step after this long instead of the period (a server asked
    /// for a different pace).
    After(Duration),
    Stop,
}

/// The longest a failing loop waits between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `step` every `period` until `stop` is cancelled or a step returns `Stop`. Returns
/// when the loop has ended, so the caller can await it at shutdown.
pub async fn run_loop<F, Fut>(name: &str, period: Duration, stop: CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<LoopControl, String>>,
{
    let mut failures: u32 = 0;
    loop {
        let wait = match step().await {
            Ok(control @ (LoopControl::Continue | LoopControl::After(_))) => {
                if failures > 0 {
                    tracing::info!("{name}: recovered after {failures} failed attempts");
                }
                failures = 0;
                match control {
                    LoopControl::After(wait) => wait,
                    _ => period,
                }
            }
            Ok(LoopControl::Stop) => break,
            Err(e) => {
                failures = failures.saturating_add(1);
                let backoff = backoff(period, failures);
                tracing::warn!("{name}: {e}; retrying in {backoff:?}");
                backoff
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::debug!("{name}: stopped");
}

/// The wait before the next step of a loop whose step takes `took`: `period`, or `share`
/// times the step if that is longer (so the step uses at most 1/`share` of the time),
/// but never longer than `cap` unless `period` is. For loops whose step grows with the
/// cluster: a full reconcile, or reading a list of ten thousand workers.
pub fn pace(period: Duration, took: Duration, share: u32, cap: Duration) -> Duration {
    period.max(took.saturating_mul(share).min(cap))
}

/// `period × 2^(failures-1)`, capped at `MAX_BACKOFF`.
pub fn backoff(period: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    period.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = Duration::from_secs(1);
        assert_eq!(backoff(p, 1), Duration::from_secs(1));
        assert_eq!(backoff(p, 2), Duration::from_secs(2));
        assert_eq!(backoff(p, 4), Duration::from_secs(8));
        assert_eq!(backoff(p, 100), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn runs_until_stopped_and_backs_off_on_errors() {
        let stop = CancellationToken::new();
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let handle = tokio::spawn(run_loop(
            "test",
            Duration::from_secs(1),
            stop.clone(),
            move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err("boom".to_string())
                    } else {
                        Ok(LoopControl::Continue)
                    }
                }
            },
        ));
        // Failures at t=0, 1, 3 (waits 1, 2, 4 s), success at t=7, then every second.
        tokio::time::sleep(Duration::from_millis(6_500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        stop.cancel();
        handle.await.expect("loop ends when stopped");
    }

    #[test]
    fn a_slow_step_spaces_the_next_one() {
        let (period, cap) = (Duration::from_millis(250), Duration::from_secs(5));
        let ms = Duration::from_millis;
        assert_eq!(pace(period, ms(3), 10, cap), period);
        assert_eq!(pace(period, ms(80), 10, cap), ms(800));
        assert_eq!(pace(period, Duration::from_secs(9), 10, cap), cap);
        // A period longer than the cap is kept.
        assert_eq!(
            pace(Duration::from_secs(10), ms(1000), 10, cap),
            Duration::from_secs(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_can_set_the_next_wait() {
        let stop = CancellationToken::new();
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let handle = tokio::spawn(run_loop(
            "test",
            Duration::from_secs(1),
            stop.clone(),
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok(LoopControl::After(Duration::from_secs(10))) }
            },
        ));
        // Steps at t=0, 10, 20: not every second.
        tokio::time::sleep(Duration::from_millis(25_000)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        stop.cancel();
        handle.await.expect("loop ends when stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_can_end_its_loop() {
        let stop = CancellationToken::new();
        run_loop("test", Duration::from_secs(1), stop, || async {
            Ok(LoopControl::Stop)
        })
        .await;
    }
}
