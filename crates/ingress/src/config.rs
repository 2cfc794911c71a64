//! The ingress's configuration and its checks, one place for all its makers (the
//! `mycluster ingress` flags, `mycluster dev`, the tests); the messages name the flags
//! that set each value.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// The manager whose route table the ingress serves (`http://host:port`).
    pub manager: String,
    /// The cluster's join token (what an agent presents) or its API token; none for a
    /// manager without authentication.
    pub token: Option<String>,
    /// The cluster CA an `https://` manager must be certified by (a join token of the
    /// MCJT1 form carries it too).
    pub pin: Option<mycluster_tls::Pin>,
    /// The address each published port is bound on (every address: `0.0.0.0`).
    pub listen: IpAddr,
    /// How long a replica has to accept a connection before the next one is tried.
    pub connect_timeout: Duration,
    /// How long a replica that did not take a connection is tried only after the others.
    pub cooling: Duration,
    /// How long one long-poll of the route table waits for a change.
    pub poll_wait: Duration,
}

impl IngressConfig {
    /// Every port on every address, a 250 ms connect timeout, 3 s of cooling, 30 s
    /// long-polls.
    pub fn new(manager: &str) -> IngressConfig {
        IngressConfig {
            manager: manager.to_string(),
            token: None,
            pin: None,
            listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connect_timeout: Duration::from_millis(250),
            cooling: Duration::from_secs(3),
            poll_wait: Duration::from_secs(30),
        }
    }

    /// Whether the ingress can run with this configuration; the first value it cannot
    /// run with, in the order the flags are listed.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() || self.connect_timeout > Duration::from_secs(60) {
            return Err(ConfigError::ConnectTimeout);
        }
        if self.cooling > Duration::from_secs(3600) {
            return Err(ConfigError::Cooling);
        }
        // The manager caps a long-poll's wait anyway; a zero wait would spin.
        if self.poll_wait < Duration::from_millis(100) || self.poll_wait > Duration::from_secs(300)
        {
            return Err(ConfigError::PollWait);
        }
        Ok(())
    }
}

/// A configuration value the ingress cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--connect-timeout must be more than 0 and at most 60s (e.g. 250ms)")]
    ConnectTimeout,
    #[error("--cooling must be at most 1h (0 turns it off)")]
    Cooling,
    #[error("the route table's long-poll wait must be between 100ms and 5m")]
    PollWait,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_each_duration() {
        let config = IngressConfig::new("http://127.0.0.1:5000");
        assert_eq!(config.check(), Ok(()));
        let bad = IngressConfig {
            connect_timeout: Duration::ZERO,
            ..config.clone()
        };
        assert_eq!(bad.check(), Err(ConfigError::ConnectTimeout));
        let off = IngressConfig {
            cooling: Duration::ZERO,
            ..config.clone()
        };
        assert_eq!(off.check(), Ok(()));
        let bad = IngressConfig {
            cooling: Duration::from_secs(3601),
            ..config.clone()
        };
        assert_eq!(bad.check(), Err(ConfigError::Cooling));
        let bad = IngressConfig {
            poll_wait: Duration::ZERO,
            ..config
        };
        assert_eq!(bad.check(), Err(ConfigError::PollWait));
    }
}
