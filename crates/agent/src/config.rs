//! The checks of an agent's configuration, one place for all its makers (the `mycluster
//! agent` flags, `mycluster dev`, the benchmarks); the messages name the flags that set
//! each value.

use std::time::Duration;

use crate::AgentConfig;

/// A configuration value the agent cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--heartbeat must be between 0 and 60 seconds")]
    Heartbeat,
    #[error("--takeover-wait must be between 0 and 3600 seconds")]
    TakeoverWait,
}

impl AgentConfig {
    /// Whether an agent can run with this configuration; the first value it cannot run
    /// with, in the order the flags are listed.
    pub fn check(&self) -> Result<(), ConfigError> {
        // A zero interval would beat in a busy loop; past a minute the monitor would
        // take a live worker for dead.
        if self.heartbeat.is_zero() || self.heartbeat > Duration::from_secs(60) {
            return Err(ConfigError::Heartbeat);
        }
        if self.takeover_wait > Duration::from_secs(3600) {
            return Err(ConfigError::TakeoverWait);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_heartbeat_and_the_takeover_wait() {
        let config = AgentConfig::new("http://127.0.0.1:5000", "w1");
        assert_eq!(config.check(), Ok(()));
        let bad = AgentConfig {
            heartbeat: Duration::ZERO,
            ..config.clone()
        };
        assert_eq!(bad.check(), Err(ConfigError::Heartbeat));
        let bad = AgentConfig {
            heartbeat: Duration::from_millis(60_001),
            ..config.clone()
        };
        assert_eq!(bad.check(), Err(ConfigError::Heartbeat));
        let bad = AgentConfig {
            takeover_wait: Duration::from_secs(3601),
            ..config
        };
        assert_eq!(bad.check(), Err(ConfigError::TakeoverWait));
    }
}
