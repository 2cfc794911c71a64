//! The checks of the monitor's configuration, one place for all its makers (the
//! `mycluster monitor` flags, `mycluster dev`, the benchmarks); the messages name the
//! flags that set each value.

use std::time::Duration;

use crate::MonitorConfig;

/// A configuration value the monitor cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--interval must be between 0 and 3600 seconds")]
    Interval,
    #[error("--dead-after must be between 0 and 3600 seconds")]
    DeadAfter,
    #[error("--probe-timeout must be between 0 and 3600 seconds")]
    ProbeTimeout,
}

impl MonitorConfig {
    /// Whether the monitor can run with this configuration; the first value it cannot
    /// run with, in the order the flags are listed.
    pub fn check(&self) -> Result<(), ConfigError> {
        // Zero would spin (interval) or suspect every worker at once (the others).
        let valid = |d: Duration| !d.is_zero() && d <= Duration::from_secs(3600);
        if !valid(self.interval) {
            return Err(ConfigError::Interval);
        }
        if !valid(self.dead_after) {
            return Err(ConfigError::DeadAfter);
        }
        if !valid(self.probe_timeout) {
            return Err(ConfigError::ProbeTimeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_each_duration() {
        let config = MonitorConfig::new("http://127.0.0.1:5000");
        assert_eq!(config.check(), Ok(()));
        let bad = MonitorConfig {
            interval: Duration::ZERO,
            ..config.clone()
        };
        assert_eq!(bad.check(), Err(ConfigError::Interval));
        let bad = MonitorConfig {
            dead_after: Duration::from_secs(3601),
            ..config.clone()
        };
        assert_eq!(bad.check(), Err(ConfigError::DeadAfter));
        let bad = MonitorConfig {
            probe_timeout: Duration::ZERO,
            ..config
        };
        assert_eq!(bad.check(), Err(ConfigError::ProbeTimeout));
    }
}
