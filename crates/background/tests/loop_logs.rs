//! What the background loops log, on tokio's paused clock. In a test binary of its own:
//! tracing caches, per call site, whether anyone listens, and a test on another thread of
//! the same binary hitting a call site first with no subscriber could leave this test's
//! (thread-local) subscriber without some of its lines.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mycluster_background::{retry, run_loop, Loop, LoopControl};
use tokio_util::sync::CancellationToken;

/// Collects what is logged while it lives (this thread only: a current-thread test).
struct Logs {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    fn capture() -> Logs {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Writer(writer.clone()))
            .with_max_level(tracing::Level::INFO)
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .finish();
        Logs {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        let bytes = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            lines.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A step that follows `plan` (an error, or what to ask), then stops.
fn steps(
    plan: &'static [Result<LoopControl, &'static str>],
) -> impl FnMut() -> std::future::Ready<Result<LoopControl, String>> {
    let mut n = 0;
    move || {
        let next = plan.get(n).copied().unwrap_or(Ok(LoopControl::Stop));
        n += 1;
        std::future::ready(next.map_err(str::to_string))
    }
}

/// Every line names the loop; what a recovery says is the loop's choice.
#[tokio::test(start_paused = true)]
async fn log_lines_carry_the_loop_name() {
    let logs = Logs::capture();
    let stop = CancellationToken::new();
    let counted = steps(&[Err("boom"), Err("boom"), Ok(LoopControl::Continue)]);
    run_loop("counted", Duration::from_millis(500), stop.clone(), counted).await;
    Loop::new("said", Duration::from_millis(500), stop.clone())
        .on_recovery("the manager answers again")
        .run(steps(&[
            Err("cannot get tasks: down"),
            Ok(LoopControl::Now),
        ]))
        .await;
    Loop::new("quiet", Duration::from_millis(500), stop.clone())
        .quiet_recovery()
        .run(steps(&[Err("sync: down"), Ok(LoopControl::Continue)]))
        .await;
    let mut n = 0;
    let got = retry("waiting", stop, Duration::from_secs(1), || {
        n += 1;
        std::future::ready(if n == 1 {
            Err("no answer".to_string())
        } else {
            Ok(n)
        })
    })
    .await;
    assert_eq!(got, Some(2));
    let text = logs.text();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "WARN counted: boom; retrying in 500ms",
            "WARN counted: boom; retrying in 1s",
            "INFO counted: recovered after 2 failed attempts",
            "WARN said: cannot get tasks: down; retrying in 500ms",
            "INFO said: the manager answers again",
            "WARN quiet: sync: down; retrying in 500ms",
            "WARN waiting: no answer; retrying in 1s",
        ][..],
        "{text}"
    );
}
