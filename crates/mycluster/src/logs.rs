//! `mycluster logs <service>`: every replica's lines, merged by the manager and printed
//! as they come (`GET /api/v1/service/<name>/logs`); each line starts with
//! `<service>.<slot>@<worker> | `.

use std::io::Write;

use anyhow::Context;
use mycluster_core::logs::LogRequest;
use mycluster_core::wire::LogsQuery;

use crate::cli::Global;

#[derive(clap::Args, Clone, Debug)]
pub struct LogsArgs {
    /// The service.
    pub service: String,
    /// Keep printing lines as they are written, those of replicas started meanwhile
    /// included, until interrupted (or the service is deleted).
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each replica (`all`: every line).
    #[arg(long, value_name = "N")]
    pub tail: Option<String>,
    /// Only lines written since T: an RFC 3339 time (2026-11-24T19:25:45Z), Unix seconds
    /// (1764012345), or a duration before now (10m, 1h30m).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Show each line's time (RFC 3339, UTC) after its replica.
    #[arg(short, long)]
    pub timestamps: bool,
}

pub async fn run(global: &Global, args: LogsArgs) -> anyhow::Result<()> {
    let query = LogsQuery {
        follow: args.follow.then(|| "true".to_string()),
        tail: args.tail,
        // As given: a duration counts back from the manager's clock.
        since: args.since,
        timestamps: args.timestamps.then(|| "true".to_string()),
    };
    // The manager's own check, here first: a bad value is one line, before any call.
    LogRequest::read(&query, 0).map_err(|why| anyhow::anyhow!("{}", flag_words(&why)))?;
    let client = crate::remote::client(global)?;
    let mut logs = client.service_logs(&args.service, &query).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = logs.next().await? {
        out.write_all(&chunk).context("cannot write the logs")?;
        out.flush().context("cannot write the logs")?;
    }
    Ok(())
}

/// The query's words as the command's flags (`tail '-1'` reads `--tail '-1'`).
fn flag_words(why: &str) -> String {
    for name in ["tail", "since"] {
        if let Some(rest) = why.strip_prefix(name) {
            return format!("--{name}{rest}");
        }
    }
    why.to_string()
}
