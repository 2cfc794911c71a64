//! Log lines in the original's shape — `[2019-06-06 11:28:28,383] {monitor} INFO - ...` —
//! with the role (manager, agent, monitor) where the original named its Python file, so
//! a reader of the original page finds the same lines in ours.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::output::civil_from_days;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); a panic is one log line.
pub fn init(role: &'static str) {
    panic_as_one_line();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(Original { role })
        // A log line that cannot be written (stderr a closed pipe, as in
        // `mycluster ingress 2>&1 | head`) is dropped: reporting it would panic the task
        // that logged, and that may be the one waiting for SIGTERM.
        .log_internal_errors(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
}

/// Says a panic in one log line, with where it happened, instead of the default
/// message and backtrace hint (a backtrace still comes with `RUST_BACKTRACE=1`). A panic
/// inside the storage engine is only a debug line: the store catches it and reports the
/// damage, with what to do, once (see `mycluster_store::EmbeddedStore`).
fn panic_as_one_line() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        let at = location.map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        if location.is_some_and(|l| l.file().contains("/redb-")) {
            tracing::debug!("storage engine panic{at}: {message}");
            return;
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
            return;
        }
        tracing::error!("internal error{at}: {message}");
    }));
}

struct Original {
    /// The role to show for events from outside our role crates.
    role: &'static str,
}

impl<S, N> FormatEvent<S, N> for Original
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let target = event.metadata().target();
        let role = ["manager", "agent", "monitor", "runtime", "store"]
            .into_iter()
            .find(|role| target.starts_with(&format!("mycluster_{role}")))
            .unwrap_or(self.role);
        write!(
            writer,
            "[{}] {{{role}}} {} - ",
            timestamp(SystemTime::now()),
            event.metadata().level()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// `2019-06-06 11:28:28,383` (UTC), as Python's logging printed it.
fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02},{:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_read_like_pythons_logging() {
        let at = UNIX_EPOCH + Duration::from_millis(1_559_820_508_383);
        assert_eq!(super::timestamp(at), "2019-06-06 11:28:28,383");
    }
}
