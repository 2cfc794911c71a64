//! `mycluster token --ca` and `--curl`: what an operator needs to reach a cluster set up
//! here with curl — the CA's certificate saved beside the cluster's settings (fetched
//! from its manager when missing), and ready curl lines for this host (plain HTTP on the
//! local port) and for other hosts (HTTPS on the TLS port, checked against that CA).

use std::path::PathBuf;

use mycluster_setup::ca::learn_ca;
use mycluster_setup::settings::{ca_path, named_or_current, Settings};

/// The saved cluster (`name`, else the one set up last) and its CA file, fetched and
/// saved first if missing.
async fn with_ca(name: Option<&str>) -> anyhow::Result<(Settings, PathBuf)> {
    let mut settings = named_or_current(name)?;
    let path = ca_path(&settings.name);
    if !path.exists() {
        learn_ca(&mut settings).await?;
    }
    Ok((settings, path))
}

/// `mycluster token --ca`: the path of the CA's certificate, for `curl --cacert`.
pub async fn print_ca(name: Option<String>) -> anyhow::Result<()> {
    let (_, path) = with_ca(name.as_deref()).await?;
    println!("{}", path.display());
    Ok(())
}

/// `mycluster token --curl`: a curl line for this host and one for other hosts.
pub async fn print_curl(name: Option<String>) -> anyhow::Result<()> {
    let (settings, path) = with_ca(name.as_deref()).await?;
    let header = settings
        .token
        .as_deref()
        .map(|token| format!("-H \"Authorization: Bearer {token}\" "))
        .unwrap_or_default();
    let host = mycluster_agent::hostname().unwrap_or_else(|| "<this host's name>".into());
    println!(
        "# On this host:\ncurl {header}http://localhost:{port}/api/v1/state\n\
         # From another host (copy {ca} there first; HTTPS only):\n\
         curl --cacert {ca} {header}https://{host}:{tls}/api/v1/state",
        port = settings.port,
        ca = path.display(),
        tls = settings.public_tls_port(),
    );
    Ok(())
}
