//! The `--health-*` and `--update-*` flags as the typed health check and update policy
//! of a request. Flags not given keep what the service has (the API replaces a whole
//! `healthcheck` or `update`, so the CLI merges here). The manager checks the result
//! again, naming the field; what can be checked here is refused naming the flag.

use anyhow::{bail, Context};
use mycluster_core::span::Span;
use mycluster_core::wire::{FailureAction, HealthCheck, Probe, UpdateOrder, UpdatePolicy};

use crate::service_args::{HealthArgs, OnFailure, Order, UpdateArgs};

/// The health check the flags ask for over `current` (the service's, if any); `None`
/// when no --health-* flag was given.
pub fn healthcheck(
    args: &HealthArgs,
    current: Option<&HealthCheck>,
) -> anyhow::Result<Option<HealthCheck>> {
    if !args.any() {
        return Ok(None);
    }
    let probe = if let Some(http) = &args.health_http {
        let (port, path) = match http.split_once('/') {
            Some((port, path)) => (port, format!("/{path}")),
            None => (http.as_str(), "/".to_string()),
        };
        Probe::Http {
            port: port.parse().ok().filter(|p| *p > 0).with_context(|| {
                format!("--health-http {http}: use PORT or PORT/PATH, e.g. 8000/healthz")
            })?,
            path,
        }
    } else if let Some(port) = args.health_tcp {
        Probe::Tcp { port }
    } else if let Some(cmd) = &args.health_cmd {
        let argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        if argv.is_empty() {
            bail!("--health-cmd needs a command, e.g. --health-cmd \"pg_isready -q\"");
        }
        Probe::Exec(argv)
    } else {
        match current {
            Some(check) => check.probe.clone(),
            None => bail!(
                "the --health-* timing flags need a probe: --health-http PORT[/PATH], --health-tcp PORT or --health-cmd \"CMD ARGS\""
            ),
        }
    };
    let base = match current {
        Some(check) => HealthCheck {
            probe,
            ..check.clone()
        },
        None => HealthCheck::new(probe),
    };
    Ok(Some(HealthCheck {
        interval: span("--health-interval", &args.health_interval, base.interval)?,
        timeout: span("--health-timeout", &args.health_timeout, base.timeout)?,
        retries: args.health_retries.unwrap_or(base.retries),
        start_period: span(
            "--health-start-period",
            &args.health_start_period,
            base.start_period,
        )?,
        probe: base.probe,
    }))
}

/// The update policy the flags ask for over `current` (the service's, if it is not the
/// default); `None` when no --update-* flag was given.
pub fn update_policy(
    args: &UpdateArgs,
    current: Option<&UpdatePolicy>,
) -> anyhow::Result<Option<UpdatePolicy>> {
    if !args.any() {
        return Ok(None);
    }
    let base = current.copied().unwrap_or_default();
    let max_failure_ratio = match args.update_max_failure_ratio {
        None => base.max_failure_ratio,
        Some(r) if (0.0..=1.0).contains(&r) => mycluster_core::service::Ratio(r),
        Some(r) => bail!("--update-max-failure-ratio {r}: give a number from 0 to 1"),
    };
    Ok(Some(UpdatePolicy {
        parallelism: args.update_parallelism.unwrap_or(base.parallelism),
        delay: span("--update-delay", &args.update_delay, base.delay)?,
        order: match args.update_order {
            None => base.order,
            Some(Order::StartFirst) => UpdateOrder::StartFirst,
            Some(Order::StopFirst) => UpdateOrder::StopFirst,
        },
        monitor: span("--update-monitor", &args.update_monitor, base.monitor)?,
        failure_action: match args.update_failure_action {
            None => base.failure_action,
            Some(OnFailure::Rollback) => FailureAction::Rollback,
            Some(OnFailure::Pause) => FailureAction::Pause,
            Some(OnFailure::Continue) => FailureAction::Continue,
        },
        max_failure_ratio,
    }))
}

/// A duration flag ("5s", "500ms"), or `default` when not given.
fn span(flag: &str, value: &Option<String>, default: Span) -> anyhow::Result<Span> {
    match value {
        None => Ok(default),
        Some(text) => Span::parse(text).map_err(|why| anyhow::anyhow!("{flag}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_flag_makes_a_check_with_the_default_timing() {
        let args = HealthArgs {
            health_http: Some("8000/healthz".into()),
            health_retries: Some(5),
            ..HealthArgs::default()
        };
        let check = healthcheck(&args, None).expect("valid").expect("a check");
        assert_eq!(
            check.probe,
            Probe::Http {
                port: 8000,
                path: "/healthz".into()
            }
        );
        assert_eq!((check.retries, check.interval), (5, Span::secs(5)));
        let args = HealthArgs {
            health_cmd: Some("pg_isready  -q".into()),
            ..HealthArgs::default()
        };
        let check = healthcheck(&args, None).expect("valid").expect("a check");
        assert_eq!(
            check.probe,
            Probe::Exec(vec!["pg_isready".into(), "-q".into()])
        );
    }

    #[test]
    fn timing_alone_changes_the_current_check_and_needs_one() {
        let args = HealthArgs {
            health_interval: Some("1s".into()),
            ..HealthArgs::default()
        };
        let err = healthcheck(&args, None).expect_err("no probe");
        assert!(err.to_string().contains("need a probe"), "{err}");
        let current = HealthCheck::new(Probe::Tcp { port: 5432 });
        let check = healthcheck(&args, Some(&current))
            .expect("valid")
            .expect("a check");
        assert_eq!(
            (check.probe, check.interval),
            (Probe::Tcp { port: 5432 }, Span::secs(1))
        );
        let bad = HealthArgs {
            health_http: Some("web".into()),
            ..HealthArgs::default()
        };
        assert!(healthcheck(&bad, None).is_err());
        assert_eq!(healthcheck(&HealthArgs::default(), None).ok(), Some(None));
    }

    #[test]
    fn update_flags_change_only_what_they_name() {
        let current = UpdatePolicy {
            parallelism: 3,
            ..UpdatePolicy::default()
        };
        let args = UpdateArgs {
            update_order: Some(Order::StopFirst),
            update_delay: Some("2s".into()),
            ..UpdateArgs::default()
        };
        let policy = update_policy(&args, Some(&current))
            .expect("valid")
            .expect("a policy");
        assert_eq!(
            (policy.parallelism, policy.order, policy.delay),
            (3, UpdateOrder::StopFirst, Span::secs(2))
        );
        let bad = UpdateArgs {
            update_max_failure_ratio: Some(1.5),
            ..UpdateArgs::default()
        };
        assert!(update_policy(&bad, None).is_err());
        let bad = UpdateArgs {
            update_monitor: Some("soon".into()),
            ..UpdateArgs::default()
        };
        let err = update_policy(&bad, None).expect_err("bad duration");
        assert!(err.to_string().starts_with("--update-monitor"), "{err}");
    }
}
