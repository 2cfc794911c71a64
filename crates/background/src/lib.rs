//! The one shape every background loop of MyCluster has: run a step, wait, repeat until a
//! stop signal; on a step's error, log it (with the loop's name) and back off
//! exponentially, bounded, then go on; return only once the loop has ended, saying why.
//!
//! Start reading at [`Loop`]: [`Loop::run`] is the loop, [`Loop::run_with`] the same for
//! a step that keeps state from one step to the next, [`Loop::retry`] the same loop for
//! "try until it works, then hand me the value"; [`run_loop`] and [`retry`] are the
//! shorthands with the defaults. What a step may ask of its loop is [`LoopControl`].
//!
//! Who uses it: the agent's registration and its heartbeat, watch (a long poll:
//! [`LoopControl::Now`]) and sync (woken by a [`Notify`]) loops; the manager's wait for
//! its store at start, orchestrator pass and store keeper; the monitor's pass; the
//! `agent` command's wait for the manager. [`pace`] spaces loops whose step grows with
//! the cluster. `tests/loops.rs` shows each shape on a paused clock, step by step.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a step asks of its loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopControl {
    /// Go on: the next step after the loop's period (or sooner if woken).
    Continue,
    /// Go on at once: the step itself waited (a long poll that answered).
    Now,
    /// Go on, with the next step after this long instead of the period (a server asked
    /// for a different pace).
    After(Duration),
    /// End the loop.
    Stop,
}

/// Why a loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Its stop signal was given (whatever the last step asked).
    Stopped,
    /// A step asked it to end (or, for [`Loop::retry`], the operation succeeded).
    Finished,
}

/// The future of a step that borrows its loop's state ([`Loop::run_with`]). Boxed and
/// `Send`: the loops run in spawned tasks, and the compiler cannot yet prove a borrowing
/// async closure's future `Send` there.
pub type StepFuture<'a, T = LoopControl> =
    Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The longest a failing loop waits between tries, unless told otherwise.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a loop says when a step succeeds after failures.
#[derive(Clone, Debug)]
enum Recovery {
    /// `"{name}: recovered after {n} failed attempts"`.
    Count,
    /// `"{name}: {message}"`.
    Say(String),
    /// Nothing: the step says what it did.
    Quiet,
}

/// A background loop, before it runs: its name (the prefix of its log lines), its
/// period (also the first wait after a failure), its stop signal, and optionally a
/// shorter cap on its backoff, a [`Notify`] that wakes it early, and what it says when
/// it recovers.
#[must_use = "a loop does nothing until run"]
pub struct Loop<'a> {
    name: String,
    period: Duration,
    stop: CancellationToken,
    max_backoff: Duration,
    wake: Option<&'a Notify>,
    recovery: Recovery,
}

impl<'a> Loop<'a> {
    pub fn new(name: impl Into<String>, period: Duration, stop: CancellationToken) -> Loop<'a> {
        Loop {
            name: name.into(),
            period,
            stop,
            max_backoff: MAX_BACKOFF,
            wake: None,
            recovery: Recovery::Count,
        }
    }

    /// Waits at most `cap` between failed tries (30 s unless told).
    pub fn max_backoff(mut self, cap: Duration) -> Loop<'a> {
        self.max_backoff = cap;
        self
    }

    /// Also runs the next step as soon as `wake` is notified, during the period or a
    /// backoff alike (work that finished, a new assignment). A notification given while
    /// a step runs is kept for the wait that follows it (see [`Notify::notify_one`]).
    pub fn woken_by(mut self, wake: &'a Notify) -> Loop<'a> {
        self.wake = Some(wake);
        self
    }

    /// Says `"{name}: {message}"` when a step succeeds after failures, instead of
    /// counting them.
    pub fn on_recovery(mut self, message: impl Into<String>) -> Loop<'a> {
        self.recovery = Recovery::Say(message.into());
        self
    }

    /// Says nothing when a step succeeds after failures.
    pub fn quiet_recovery(mut self) -> Loop<'a> {
        self.recovery = Recovery::Quiet;
        self
    }

    /// Runs `step` until the stop signal is given or a step returns
    /// [`LoopControl::Stop`]. A step that fails is logged as `"{name}: {error}; retrying
    /// in {wait}"`, and the next one waits `period × 2^(failures-1)` (capped) instead of
    /// what the last success asked. Returns once the loop has ended, and why; a step
    /// under way when the stop comes is finished first (a step that must not hold up a
    /// stop watches the signal itself).
    pub async fn run<F, Fut>(self, step: F) -> Ended
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<LoopControl, String>> + Send,
    {
        self.drive(&mut Plain(step, PhantomData)).await
    }

    /// [`Loop::run`] for a step that keeps state from one step to the next: it is given
    /// `state` each time, and its future may borrow it (and only it: what else it needs
    /// it owns, or `state` holds).
    pub async fn run_with<S, F>(self, state: &mut S, step: F) -> Ended
    where
        S: Send,
        F: for<'s> FnMut(&'s mut S) -> StepFuture<'s>,
    {
        self.drive(&mut WithState { state, step }).await
    }

    /// Tries `op` until it succeeds and returns its value; `None` if the stop signal
    /// came first. A failure is logged and backed off as in [`Loop::run`]; the success
    /// is not announced (the value is the news: its caller says what it got). An error
    /// that must end the tries is a value too: `Ok(Err(fatal))`.
    pub async fn retry<T, F, Fut>(self, op: F) -> Option<T>
    where
        T: Send,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>> + Send,
    {
        let mut value = None;
        self.drive(&mut Until {
            op,
            value: &mut value,
            _fut: PhantomData,
        })
        .await;
        value
    }

    /// The loop itself, whatever shape its step has.
    async fn drive(self, step: &mut impl Step) -> Ended {
        let mut failures: u32 = 0;
        let ended = loop {
            let wait = match step.next().await {
                // Ending is news enough: no recovery line.
                Ok(LoopControl::Stop) => break Ended::Finished,
                Ok(control) => {
                    if failures > 0 {
                        match &self.recovery {
                            Recovery::Count => tracing::info!(
                                "{}: recovered after {failures} failed attempts",
                                self.name
                            ),
                            Recovery::Say(message) => tracing::info!("{}: {message}", self.name),
                            Recovery::Quiet => {}
                        }
                    }
                    failures = 0;
                    match control {
                        LoopControl::After(wait) => wait,
                        LoopControl::Now => Duration::ZERO,
                        _ => self.period,
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(self.period, failures).min(self.max_backoff);
                    tracing::warn!("{}: {e}; retrying in {wait:?}", self.name);
                    wait
                }
            };
            if self.stop.is_cancelled() {
                break Ended::Stopped;
            }
            if wait.is_zero() {
                // At once, but after the tasks waiting for this thread: a step that has
                // its answer ready must not keep it to itself.
                tokio::task::yield_now().await;
                continue;
            }
            let woken = async {
                match self.wake {
                    Some(wake) => wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break Ended::Stopped,
                _ = tokio::time::sleep(wait) => {}
                _ = woken => {}
            }
        };
        // A step that asked to end because the stop came ended by the stop.
        let ended = match ended {
            Ended::Finished if self.stop.is_cancelled() => Ended::Stopped,
            ended => ended,
        };
        match ended {
            Ended::Stopped => tracing::debug!("{}: stopped", self.name),
            Ended::Finished => tracing::debug!("{}: finished", self.name),
        }
        ended
    }
}

/// One step of a loop, however its caller wrote it: the three adapters below.
trait Step {
    fn next(&mut self) -> StepFuture<'_>;
}

/// A step that keeps nothing between steps. (`fn() -> Fut` in the marker ties the
/// future's lifetime to the adapter's without making it less `Send`.)
struct Plain<F, Fut>(F, PhantomData<fn() -> Fut>);

impl<F, Fut> Step for Plain<F, Fut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<LoopControl, String>> + Send,
{
    fn next(&mut self) -> StepFuture<'_> {
        Box::pin((self.0)())
    }
}

struct WithState<'a, S, F> {
    state: &'a mut S,
    step: F,
}

impl<S, F> Step for WithState<'_, S, F>
where
    S: Send,
    F: for<'s> FnMut(&'s mut S) -> StepFuture<'s>,
{
    fn next(&mut self) -> StepFuture<'_> {
        (self.step)(self.state)
    }
}

/// [`Loop::retry`]'s step: ends its loop with the operation's first value.
struct Until<'v, T, F, Fut> {
    op: F,
    value: &'v mut Option<T>,
    _fut: PhantomData<fn() -> Fut>,
}

impl<T, F, Fut> Step for Until<'_, T, F, Fut>
where
    T: Send,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>> + Send,
{
    fn next(&mut self) -> StepFuture<'_> {
        let tried = (self.op)();
        let value = &mut *self.value;
        Box::pin(async move {
            *value = Some(tried.await?);
            Ok(LoopControl::Stop)
        })
    }
}

/// Runs `step` every `period` until `stop` is cancelled or a step returns `Stop`: a
/// [`Loop`] with the defaults (see [`Loop::run`]).
pub async fn run_loop<F, Fut>(
    name: &str,
    period: Duration,
    stop: CancellationToken,
    step: F,
) -> Ended
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<LoopControl, String>> + Send,
{
    Loop::new(name, period, stop).run(step).await
}

/// Tries `op` until it succeeds, waiting `first_wait` after the first failure and twice
/// as long after each next one (at most 30 s); the value, or `None` if stopped first
/// (see [`Loop::retry`]).
pub async fn retry<T, F, Fut>(
    name: &str,
    stop: CancellationToken,
    first_wait: Duration,
    op: F,
) -> Option<T>
where
    T: Send,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>> + Send,
{
    Loop::new(name, first_wait, stop).retry(op).await
}

/// The wait before the next step of a loop whose step takes `took`: `period`, or `share`
/// times the step if that is longer (so the step uses at most 1/`share` of the time),
/// but never longer than `cap` unless `period` is. For loops whose step grows with the
/// cluster: a full reconcile, or reading a list of ten thousand workers.
pub fn pace(period: Duration, took: Duration, share: u32, cap: Duration) -> Duration {
    period.max(took.saturating_mul(share).min(cap))
}

/// `period × 2^(failures-1)`, capped at 30 s.
pub fn backoff(period: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    period.saturating_mul(factor).min(MAX_BACKOFF)
}
