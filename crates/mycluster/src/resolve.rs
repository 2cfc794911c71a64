//! `mycluster resolve NAME`: the addresses a name resolves to, as a workload sees them.
//! Our images hold nothing but this binary (no shell, no `nslookup`), so this is how a
//! user checks discovery from inside a container: on the cluster network a service's
//! name resolves to its replicas (Docker's embedded DNS, which answers an alias the
//! agents give every replica).

use std::net::IpAddr;

use anyhow::bail;

/// Prints each address `name` resolves to, once, in the resolver's order.
pub async fn run(name: &str) -> anyhow::Result<()> {
    let found = match tokio::net::lookup_host((name, 0)).await {
        Ok(found) => found,
        Err(e) => bail!(
            "'{name}' does not resolve ({e}): a service's name resolves only from a container \
             on the cluster network, once the service has running replicas"
        ),
    };
    // The resolver answers each address once per socket type: say each once.
    let mut addresses: Vec<IpAddr> = Vec::new();
    for address in found.map(|a| a.ip()) {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        bail!("'{name}' resolves to no address");
    }
    for address in addresses {
        println!("{address}");
    }
    Ok(())
}
