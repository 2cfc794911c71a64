//! The loop shapes of `mycluster-background`, on tokio's paused clock: each test says
//! when steps run, to the millisecond.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mycluster_background::{backoff, pace, retry, run_loop, Ended, Loop, LoopControl};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[test]
fn backoff_doubles_and_is_capped() {
    let p = Duration::from_secs(1);
    assert_eq!(backoff(p, 1), Duration::from_secs(1));
    assert_eq!(backoff(p, 2), Duration::from_secs(2));
    assert_eq!(backoff(p, 4), Duration::from_secs(8));
    assert_eq!(backoff(p, 100), Duration::from_secs(30));
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
    let ended = handle.await.expect("loop ends when stopped");
    assert_eq!(ended, Ended::Stopped);
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
    let ended = run_loop("test", Duration::from_secs(1), stop, || async {
        Ok(LoopControl::Stop)
    })
    .await;
    assert_eq!(ended, Ended::Finished);
}

/// A step that ends its loop because it saw the stop (a long poll cut short) ended by
/// the stop.
#[tokio::test(start_paused = true)]
async fn a_step_that_stops_for_the_stop_is_stopped() {
    let stop = CancellationToken::new();
    let ended = run_loop("test", Duration::from_secs(1), stop.clone(), || {
        stop.cancel();
        async { Ok(LoopControl::Stop) }
    })
    .await;
    assert_eq!(ended, Ended::Stopped);
}

/// A long poll: the step is the wait, so a success goes on at once; a failure backs off
/// from the period as any loop's does. Its state (here, when it ran) is its own.
#[tokio::test(start_paused = true)]
async fn a_step_can_ask_to_go_on_at_once() {
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let mut at: Vec<u128> = Vec::new();
    let ended = Loop::new("test", Duration::from_millis(500), stop)
        .run_with(&mut at, |at| {
            Box::pin(async move {
                at.push(started.elapsed().as_millis());
                match at.len() {
                    // Two polls that each waited 2 s for news.
                    1 | 2 => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        Ok(LoopControl::Now)
                    }
                    3 | 4 => Err("manager down".to_string()),
                    5 => Ok(LoopControl::Now),
                    _ => Ok(LoopControl::Stop),
                }
            })
        })
        .await;
    assert_eq!(ended, Ended::Finished);
    // 0 and 2000 polled, 4000 failed (500 ms), 4500 failed (1 s), 5500 answered at once,
    // 5500 again.
    assert_eq!(at, [0, 2000, 4000, 4500, 5500, 5500]);
}

/// A loop with state runs in a spawned task (the agent's and the monitor's do).
#[tokio::test(start_paused = true)]
async fn a_loop_with_state_can_be_spawned() {
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut steps = 0u32;
            Loop::new("test", Duration::from_secs(1), stop)
                .run_with(&mut steps, |steps| {
                    Box::pin(async move {
                        tokio::task::yield_now().await;
                        *steps += 1;
                        Ok(LoopControl::Continue)
                    })
                })
                .await;
            steps
        }
    });
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    stop.cancel();
    assert_eq!(handle.await.expect("loop ends when stopped"), 3);
}

/// Woken early: during the period, and during a backoff; a wake-up given while a step
/// runs is not lost.
#[tokio::test(start_paused = true)]
async fn a_notify_wakes_the_loop() {
    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let at = Arc::new(Mutex::new(Vec::new()));
    let handle = tokio::spawn({
        let (stop, wake, at) = (stop.clone(), wake.clone(), at.clone());
        async move {
            let started = tokio::time::Instant::now();
            let step = || {
                let n = at
                    .lock()
                    .map(|mut at| {
                        at.push(started.elapsed().as_millis());
                        at.len()
                    })
                    .unwrap_or_default();
                if n == 3 {
                    // The work it launched finishes while it runs.
                    wake.notify_one();
                }
                async move {
                    match n {
                        2 => Err("boom".to_string()),
                        _ => Ok(LoopControl::Continue),
                    }
                }
            };
            Loop::new("test", Duration::from_secs(10), stop)
                .woken_by(&wake)
                .run(step)
                .await
        }
    });
    let calls = || at.lock().map(|at| at.clone()).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls(), [0]);
    // During the period: the step fails at 1 s, then backs off 10 s...
    wake.notify_one();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls(), [0, 1000]);
    // ...which a wake-up cuts short too: the step at 2 s wakes its own loop again.
    wake.notify_one();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls(), [0, 1000, 2000, 2000]);
    // Then the period again.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(calls(), [0, 1000, 2000, 2000, 12000]);
    stop.cancel();
    let ended = handle.await.expect("loop ends when stopped");
    assert_eq!(ended, Ended::Stopped);
}

#[tokio::test(start_paused = true)]
async fn retry_hands_over_the_value_once_it_works() {
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let mut tries = 0;
    let got = retry("test", stop, Duration::from_millis(500), || {
        tries += 1;
        let n = tries;
        async move {
            if n < 4 {
                Err(format!("try {n} failed"))
            } else {
                Ok(n)
            }
        }
    })
    .await;
    assert_eq!(got, Some(4));
    // Waits of 0.5, 1 and 2 s.
    assert_eq!(started.elapsed(), Duration::from_millis(3500));
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_when_stopped_and_keeps_its_cap() {
    let stop = CancellationToken::new();
    let at = Arc::new(Mutex::new(Vec::new()));
    let handle = tokio::spawn({
        let (stop, at) = (stop.clone(), at.clone());
        async move {
            let started = tokio::time::Instant::now();
            Loop::new("test", Duration::from_millis(500), stop)
                .max_backoff(Duration::from_secs(5))
                .retry(|| {
                    if let Ok(mut at) = at.lock() {
                        at.push(started.elapsed().as_millis());
                    }
                    async { Err::<(), _>("unavailable".to_string()) }
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.cancel();
    assert_eq!(handle.await.expect("retry ends when stopped"), None);
    let at = at.lock().map(|at| at.clone()).unwrap_or_default();
    // 0.5, 1, 2, 4, then 5 s at most.
    assert_eq!(at, [0, 500, 1500, 3500, 7500, 12500, 17500, 22500, 27500]);
}
