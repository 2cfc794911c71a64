//! `mycluster hello`: the demo workload. An HTTP server answering "Hello World" on every
//! path, as the original's `crccheck/hello-world` did on port 8000, with an
//! `X-Served-By: <hostname>` header naming the replica; `--exit-after` makes it end on
//! its own, to show crash handling.

use std::time::Duration;

use anyhow::Context;
use axum::Router;

use tokio_util::sync::CancellationToken;

use crate::cli::HelloArgs;
use crate::manager::stop_on_signal;

pub async fn run(args: HelloArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    // Which replica answered, without changing the body: behind a load balancer a user
    // sees the balancing (`curl -i`). In a container the hostname is the container's.
    let served_by = mycluster_agent::hostname()
        .filter(|h| h.is_ascii())
        .unwrap_or_else(|| "unknown".into());
    let app = Router::new().fallback(move || {
        let served_by = served_by.clone();
        async move { ([("x-served-by", served_by)], "Hello World\n") }
    });
    // As PID 1 of a container, the kernel gives it no default SIGTERM action: without its
    // own handler every `docker stop` would wait out the whole grace period.
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
    match args.exit_after {
        Some(secs) => {
            let wait = Duration::try_from_secs_f64(secs)
                .context("--exit-after must be a positive number")?;
            tokio::select! {
                served = server => served?,
                _ = tokio::time::sleep(wait) => std::process::exit(args.exit_code),
            }
        }
        None => server.await?,
    }
    Ok(())
}
