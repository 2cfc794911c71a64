//! `mycluster ingress`: the cluster's L4 load balancer on this host (the
//! `mycluster_ingress` crate), with its token found as an agent's is — the join token,
//! so an ingress beside an agent needs no operator's secret — else as a client's.

use std::time::Duration;

use mycluster_core::span::parse_duration;
use mycluster_ingress::IngressConfig;
use mycluster_setup::tokens::{agent_token, client_token};
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, IngressArgs};
use crate::manager::{raise_open_files, stop_on_signal};

pub async fn run(global: &Global, args: IngressArgs) -> anyhow::Result<()> {
    crate::logging::init("ingress");
    let manager = global.manager_url();
    let token = match agent_token(args.join_token_file.as_deref())? {
        Some(token) => Some(token),
        None => client_token(&manager, global.token_file.as_deref())?,
    };
    let config = IngressConfig {
        token,
        pin: global.pin()?,
        listen: args.listen_address,
        connect_timeout: args.connect_timeout,
        cooling: args.cooling,
        ..IngressConfig::new(&manager)
    };
    config.check()?;
    // Each relayed connection holds two sockets.
    raise_open_files();
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    mycluster_ingress::run(config, stop).await?;
    Ok(())
}

/// A duration flag: `250ms`, `3s`, `1m30s` (the spec's notation), or a whole number of
/// seconds, as the API reads one (`core::span::parse_duration`).
pub fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .ok_or_else(|| format!("'{text}' is not a duration: write e.g. 250ms, 3s or 1m30s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert!(duration("-1").is_err());
        assert!(duration("soon").is_err());
    }
}
