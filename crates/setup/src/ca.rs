//! The cluster CA as `setup` and the CLI see it. The manager makes the CA on its first
//! start (in its data volume, so it outlives the container); setup learns its
//! certificate from the running manager — `GET /api/v1/cluster/ca` over the host's local
//! port, with the API token — and saves it beside the cluster's settings (for `curl
//! --cacert`) with its digest in them (what the CLI, the monitor, the agents' join token
//! and the ingress pin). Also the names the manager's certificate carries, so `curl
//! --cacert` from another host accepts it.

use std::path::PathBuf;
use std::time::Duration;

use mycluster_client::Client;
use mycluster_tls::Pin;

use crate::error::SetupError;
use crate::settings::{save, save_ca, Settings};

/// The IPv4 address this host reaches the world from: what another host most likely
/// dials. Found by routing a UDP socket (no packet is sent); none without a route.
fn primary_ipv4() -> Option<String> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("198.51.100.1", 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// The names the manager's certificate is made for, beyond those it always has
/// (localhost, loopback, its container's name): its container's name on the cluster
/// network, and this host's name and address, as other hosts reach the TLS port.
pub fn advertised_names(manager: &str) -> Vec<String> {
    let mut names = vec![manager.to_string()];
    names.extend(mycluster_runtime::hostname());
    names.extend(primary_ipv4());
    names.dedup();
    names
}

/// Learns the cluster CA from the manager at the settings' local port and saves it
/// (`ca.pem` beside the settings, its digest in them, the settings saved); returns
/// where it is and its digest.
pub async fn learn_ca(settings: &mut Settings) -> Result<(PathBuf, Pin), SetupError> {
    let client = Client::new(&settings.manager_url(), Duration::from_secs(10))?
        .with_token(settings.token.clone());
    let pem = match client.cluster_ca().await {
        Ok(pem) => pem,
        Err(e) if e.status() == Some(404) => return Err(SetupError::NoCa(settings.name.clone())),
        Err(e) => return Err(e.into()),
    };
    let pin = Pin::of_pem(&pem, "the manager's CA certificate")?;
    let path = save_ca(&settings.name, &pem)?;
    settings.ca_sha256 = Some(pin.to_string());
    save(settings)?;
    Ok((path, pin))
}
