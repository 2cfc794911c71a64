//! The checks of a manager's configuration, one place for all its makers: the
//! `mycluster manager` flags, `mycluster dev`, the benchmarks and the tests. A
//! configuration that passes them is one the manager can run with; the messages name the
//! flags that set each value.

use std::time::Duration;

use mycluster_core::commands::CommandError;

use crate::{ApiConfig, ManagerConfig};

/// A configuration value the manager cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--max-body-bytes must be at least 1")]
    MaxBodyBytes,
    #[error("--max-header-bytes must be at least 1024")]
    MaxHeaderBytes,
    #[error("--long-polls-per-client, --max-connections and --max-heartbeats-per-second must be at least 1")]
    Capacity,
    #[error("--request-timeout must be a number of seconds, at least 1")]
    RequestTimeout,
    #[error("--max-wait must be a number of seconds from 0.1 to 3600 (agents long-poll in a loop: 0 would spin them)")]
    MaxWait,
    #[error("--event-history must be at least 1")]
    EventHistory,
    #[error(transparent)]
    Name(#[from] CommandError),
}

impl ApiConfig {
    /// Whether the HTTP layer can serve with these limits (`max_connections` is the
    /// server's: `ManagerConfig::check` looks at both).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_with(1)
    }

    fn check_with(&self, max_connections: usize) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::MaxBodyBytes);
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::MaxHeaderBytes);
        }
        if self.long_polls_per_client == 0
            || max_connections == 0
            || self.max_heartbeats_per_second == 0
        {
            return Err(ConfigError::Capacity);
        }
        if self.request_timeout < Duration::from_secs(1) {
            return Err(ConfigError::RequestTimeout);
        }
        // An agent's long-poll returns at once with a zero wait: it would spin.
        if self.max_wait < Duration::from_millis(100) || self.max_wait > Duration::from_secs(3600) {
            return Err(ConfigError::MaxWait);
        }
        if self.event_history == 0 {
            return Err(ConfigError::EventHistory);
        }
        Ok(())
    }
}

impl ManagerConfig {
    /// A manager of cluster `name` for this host only: a free port on 127.0.0.1, the
    /// embedded store in `data_dir` (a new cluster if it holds none), the default limits,
    /// no authentication and no TLS. Tests and benchmarks start from it
    /// (`ManagerConfig { api, ..ManagerConfig::local(dir, name) }`).
    pub fn local(data_dir: &std::path::Path, name: &str) -> ManagerConfig {
        ManagerConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: data_dir.to_path_buf(),
            name: name.into(),
            store: "embedded".into(),
            create: crate::Create::IfMissing,
            limits: mycluster_core::Limits::default(),
            api: ApiConfig::default(),
            server: crate::ServerLimits::default(),
            reconcile_period: Duration::from_secs(1),
            tls: None,
            local_listen: None,
        }
    }

    /// Whether a manager can run with this configuration; the first value it cannot run
    /// with, in the order the flags are listed. `RunningManager::start` checks it too.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.api.check_with(self.server.max_connections)?;
        mycluster_core::commands::validate_cluster_name(&self.name)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ManagerConfig {
        ManagerConfig::local(std::path::Path::new("/nonexistent"), "test")
    }

    #[test]
    fn defaults_pass() {
        assert_eq!(config().check(), Ok(()));
        assert_eq!(ApiConfig::default().check(), Ok(()));
    }

    #[test]
    fn each_bad_value_is_named() {
        let mut c = config();
        c.api.event_history = 0;
        assert_eq!(c.check(), Err(ConfigError::EventHistory));
        c.api.max_wait = Duration::ZERO;
        assert_eq!(c.check(), Err(ConfigError::MaxWait));
        c.api.request_timeout = Duration::from_millis(999);
        assert_eq!(c.check(), Err(ConfigError::RequestTimeout));
        c.server.max_connections = 0;
        assert_eq!(c.check(), Err(ConfigError::Capacity));
        c.api.max_header_bytes = 1023;
        assert_eq!(c.check(), Err(ConfigError::MaxHeaderBytes));
        c.api.max_body_bytes = 0;
        assert_eq!(c.check(), Err(ConfigError::MaxBodyBytes));

        let mut c = config();
        c.name = "a:b".into();
        assert!(matches!(c.check(), Err(ConfigError::Name(_))));
        c.api.max_wait = Duration::from_secs(3601);
        assert_eq!(c.check(), Err(ConfigError::MaxWait));
    }
}
