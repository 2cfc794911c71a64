//! `mycluster hello`: the demo workload. An HTTP server answering "Hello World" on every
//! path, as the original's `crccheck/hello-world` did on port 8000; `--exit-after` makes
//! it end on its own, to show crash handling.

use std::time::Duration;

use anyhow::Context;
use axum::Router;

use crate::cli::HelloArgs;

pub async fn run(args: HelloArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    let app = Router::new().fallback(|| async { "Hello World\n" });
    let server = axum::serve(listener, app);
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
