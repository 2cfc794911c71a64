//! The flags of `service create|update` for where tasks run, what they need, where their
//! data lives and what happens when they exit: `--constraint`, `--spread`,
//! `--reserve-*`/`--limit-*`, `--volume`, `--restart-*` (named as `docker service create`
//! names them). They become the typed fields of a request. On `update`, flags not given
//! keep what the service has, and list flags add to (or, with `-rm`, remove from) its
//! lists. What can be checked here is refused naming the flag; the manager checks the
//! result again.

use anyhow::{anyhow, bail};
use clap::Args;
use mycluster_core::service::{Amount, Bytes, Constraint, Cpus, Resources, RestartCondition};
use mycluster_core::service::{RestartPolicy, Spread, VolumeSpec};
use mycluster_core::span::Span;

/// `--constraint`, `--spread`, resources, volumes and the restart policy.
#[derive(Args, Clone, Debug, Default)]
pub struct PlacementArgs {
    /// Where the tasks may run (repeatable; every one must hold): `ATTR==VALUE` or
    /// `ATTR!=VALUE` over node.name, node.driver, node.host or node.labels.KEY, e.g.
    /// --constraint "node.labels.disk==ssd". On `update` it adds to the service's.
    #[arg(long = "constraint", value_name = "EXPR")]
    pub constraints: Vec<String>,
    /// Spread the replicas evenly over this worker attribute first, e.g.
    /// --spread node.labels.zone (on `update`, --spread "" removes it).
    #[arg(long, value_name = "ATTR")]
    pub spread: Option<String>,
    /// CPUs each task reserves on its worker, e.g. 0.5 (never more than a worker has).
    #[arg(long, value_name = "N")]
    pub reserve_cpus: Option<f64>,
    /// Memory each task reserves on its worker, e.g. 256M, 1.5G.
    #[arg(long, value_name = "SIZE")]
    pub reserve_memory: Option<String>,
    /// The most CPUs a task may use (Docker: a CPU quota; process driver: cgroup cpu.max).
    #[arg(long, value_name = "N")]
    pub limit_cpus: Option<f64>,
    /// The most memory a task may use (more, and it is killed: failed, `OOM killed`).
    #[arg(long, value_name = "SIZE")]
    pub limit_memory: Option<String>,
    /// A volume (repeatable): NAME:TARGET is a volume per slot
    /// (`<service>-<NAME>-<slot>`, kept when the service is removed unless `service rm
    /// --volumes`); /HOST/PATH:TARGET a bind mount (only under the manager's
    /// --allow-bind); `:ro` mounts it read-only. On `update` it adds to (or replaces the
    /// one at TARGET of) the service's.
    #[arg(long = "volume", value_name = "SOURCE:TARGET[:ro]")]
    pub volumes: Vec<String>,
    /// When a task that ends is replaced: any (always, the default), on-failure (a task
    /// that exits 0 is complete and stays so) or none (each slot runs once).
    #[arg(long, value_enum, value_name = "CONDITION")]
    pub restart_condition: Option<Condition>,
    /// The most restarts of a slot after failures in a row before it is given up (0: no
    /// limit): with 2, a slot that keeps failing runs 3 times.
    #[arg(long, value_name = "N")]
    pub restart_max_attempts: Option<u32>,
    /// The wait after the second failure in a row before the slot is started again
    /// (the first is replaced at once), doubled with each next one up to a minute, e.g.
    /// 5s [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub restart_delay: Option<String>,
    /// What happens to a task whose worker is cut off from the manager: replace (the
    /// default: replaced once the worker is declared down, the cut-off copy stopped when
    /// it comes back) or stop (at most one copy: its agent stops it once the lease runs
    /// out, and it is replaced only after the lease, its stop grace period and 1 s).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub on_disconnect: Option<Disconnect>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Disconnect {
    /// Replaced once its worker is declared down.
    Replace,
    /// Stopped by its own agent when the lease runs out; replaced only after that.
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Condition {
    /// Replace every task that ends.
    Any,
    /// Replace a task that failed; one that exited 0 is complete.
    OnFailure,
    /// Replace nothing: each slot runs once.
    None,
}

impl PlacementArgs {
    /// Whether any of these flags was given.
    pub fn any(&self) -> bool {
        !self.constraints.is_empty()
            || self.spread.is_some()
            || self.resources_given()
            || !self.volumes.is_empty()
            || self.restart_given()
            || self.on_disconnect.is_some()
    }

    fn resources_given(&self) -> bool {
        self.reserve_cpus.is_some()
            || self.reserve_memory.is_some()
            || self.limit_cpus.is_some()
            || self.limit_memory.is_some()
    }

    fn restart_given(&self) -> bool {
        self.restart_condition.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_delay.is_some()
    }
}

/// The typed fields the flags ask for: `None` where a flag was not given (the service
/// keeps its own, or a new one gets the default).
#[derive(Debug, Default, PartialEq)]
pub struct Fields {
    pub constraints: Option<Vec<Constraint>>,
    /// `Some("")`: remove the spread (update only).
    pub spread: Option<String>,
    pub resources: Option<Resources>,
    pub volumes: Option<Vec<VolumeSpec>>,
    pub restart: Option<RestartPolicy>,
    pub on_disconnect: Option<mycluster_core::service::OnDisconnect>,
}

/// What the service has now, for `update` (a new service has nothing).
#[derive(Debug, Default)]
pub struct Current<'a> {
    pub constraints: &'a [Constraint],
    pub resources: Resources,
    pub volumes: &'a [VolumeSpec],
    pub restart: Option<RestartPolicy>,
}

/// The fields for `service create`.
pub fn create(args: &PlacementArgs) -> anyhow::Result<Fields> {
    let mut fields = update(args, &[], &[], &Current::default())?;
    // On create an empty spread is no spread.
    fields.spread = fields.spread.filter(|s| !s.is_empty());
    Ok(fields)
}

/// The fields for `service update`: the service's lists with the flags' additions and
/// removals (`--constraint-rm EXPR`, `--volume-rm TARGET`), its resources and restart
/// policy with the fields the flags give.
pub fn update(
    args: &PlacementArgs,
    constraint_rm: &[String],
    volume_rm: &[String],
    current: &Current,
) -> anyhow::Result<Fields> {
    let mut fields = Fields::default();
    if !args.constraints.is_empty() || !constraint_rm.is_empty() {
        let mut list = current.constraints.to_vec();
        for text in constraint_rm {
            let gone = constraint("--constraint-rm", text)?;
            let before = list.len();
            list.retain(|c| *c != gone);
            if list.len() == before {
                bail!("--constraint-rm {text}: the service has no constraint '{gone}'");
            }
        }
        for text in &args.constraints {
            let c = constraint("--constraint", text)?;
            if !list.contains(&c) {
                list.push(c);
            }
        }
        fields.constraints = Some(list);
    }
    if let Some(text) = &args.spread {
        if !text.is_empty() {
            Spread::try_from(text.clone()).map_err(|why| anyhow!("--spread {text}: {why}"))?;
        }
        fields.spread = Some(text.clone());
    }
    if args.resources_given() {
        fields.resources = Some(resources(args, current.resources)?);
    }
    if !args.volumes.is_empty() || !volume_rm.is_empty() {
        let mut list = current.volumes.to_vec();
        for target in volume_rm {
            let before = list.len();
            list.retain(|v| v.target != *target);
            if list.len() == before {
                bail!("--volume-rm {target}: the service mounts nothing at {target}");
            }
        }
        for text in &args.volumes {
            let v = volume(text)?;
            list.retain(|old| old.target != v.target);
            list.push(v);
        }
        fields.volumes = Some(list);
    }
    fields.on_disconnect = args.on_disconnect.map(|d| match d {
        Disconnect::Replace => mycluster_core::service::OnDisconnect::Replace,
        Disconnect::Stop => mycluster_core::service::OnDisconnect::Stop,
    });
    if args.restart_given() {
        fields.restart = Some(restart(args, current.restart.unwrap_or_default())?);
    }
    Ok(fields)
}

fn constraint(flag: &str, text: &str) -> anyhow::Result<Constraint> {
    Constraint::parse(text).map_err(|why| anyhow!("{flag} {text}: {why}"))
}

/// `SOURCE:TARGET[:ro|:rw]`.
pub fn volume(text: &str) -> anyhow::Result<VolumeSpec> {
    let usage =
        || anyhow!("--volume {text}: use SOURCE:TARGET[:ro], e.g. data:/data or /srv/www:/www:ro");
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [source, target] => (*source, *target, false),
        [source, target, "ro"] => (*source, *target, true),
        [source, target, "rw"] => (*source, *target, false),
        _ => return Err(usage()),
    };
    if source.is_empty() || !target.starts_with('/') {
        return Err(usage());
    }
    Ok(VolumeSpec {
        source: source.to_string(),
        target: target.to_string(),
        read_only,
    })
}

/// `current` with the fields the flags give, checked as the manager checks them (the
/// message names the flag, not the field).
fn resources(args: &PlacementArgs, current: Resources) -> anyhow::Result<Resources> {
    let cpus = |flag: &str, n: Option<f64>, old: Option<Cpus>| -> anyhow::Result<Option<Cpus>> {
        match n {
            None => Ok(old),
            Some(n) => serde_json::from_value::<Cpus>(serde_json::json!(n))
                .map(Some)
                .map_err(|why| anyhow!("{flag} {n}: {why}")),
        }
    };
    let memory = |flag: &str, text: &Option<String>, old: Option<Bytes>| match text {
        None => Ok(old),
        Some(text) => Bytes::parse(text)
            .map(Some)
            .map_err(|why| anyhow!("{flag}: {why}")),
    };
    let wanted = Resources {
        reservations: Amount {
            cpus: cpus(
                "--reserve-cpus",
                args.reserve_cpus,
                current.reservations.cpus,
            )?,
            memory: memory(
                "--reserve-memory",
                &args.reserve_memory,
                current.reservations.memory,
            )?,
        },
        limits: Amount {
            cpus: cpus("--limit-cpus", args.limit_cpus, current.limits.cpus)?,
            memory: memory("--limit-memory", &args.limit_memory, current.limits.memory)?,
        },
    };
    let body = serde_json::to_value(wanted)?;
    Resources::from_json("resources", &body).map_err(|e| {
        let mut text = e.to_string();
        for (field, flag) in [
            ("'resources.reservations.cpus'", "--reserve-cpus"),
            ("'resources.reservations.memory'", "--reserve-memory"),
            ("'resources.limits.cpus'", "--limit-cpus"),
            ("'resources.limits.memory'", "--limit-memory"),
        ] {
            text = text.replace(&format!("field {field}"), flag);
        }
        anyhow!(text)
    })
}

fn restart(args: &PlacementArgs, current: RestartPolicy) -> anyhow::Result<RestartPolicy> {
    let delay = match &args.restart_delay {
        None => current.delay,
        Some(text) => Span::parse(text).map_err(|why| anyhow!("--restart-delay: {why}"))?,
    };
    let max_attempts = match args.restart_max_attempts {
        Some(n) if n > 1_000_000 => {
            bail!("--restart-max-attempts {n}: give 0 (no limit) to 1000000")
        }
        Some(n) => n,
        None => current.max_attempts,
    };
    Ok(RestartPolicy {
        condition: match args.restart_condition {
            None => current.condition,
            Some(Condition::Any) => RestartCondition::Any,
            Some(Condition::OnFailure) => RestartCondition::OnFailure,
            Some(Condition::None) => RestartCondition::None,
        },
        max_attempts,
        delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PlacementArgs {
        PlacementArgs::default()
    }

    #[test]
    fn create_flags_become_typed_fields() {
        let a = PlacementArgs {
            constraints: vec!["node.labels.disk==ssd".into(), "node.name != w1".into()],
            spread: Some("node.labels.zone".into()),
            reserve_cpus: Some(0.5),
            reserve_memory: Some("256M".into()),
            limit_memory: Some("512M".into()),
            volumes: vec!["data:/data".into(), "/srv/www:/www:ro".into()],
            restart_condition: Some(Condition::None),
            on_disconnect: Some(Disconnect::Stop),
            ..args()
        };
        let f = create(&a).expect("valid");
        assert_eq!(
            f.on_disconnect,
            Some(mycluster_core::service::OnDisconnect::Stop)
        );
        let constraints: Vec<String> = f
            .constraints
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(constraints, ["node.labels.disk == ssd", "node.name != w1"]);
        assert_eq!(f.spread.as_deref(), Some("node.labels.zone"));
        let r = f.resources.expect("resources");
        assert_eq!(r.reservations.cpus, Some(Cpus(500)));
        assert_eq!(r.limits.memory, Some(Bytes(512 << 20)));
        let v = f.volumes.expect("volumes");
        assert_eq!((v[1].source.as_str(), v[1].read_only), ("/srv/www", true));
        assert_eq!(
            f.restart.map(|r| (r.condition, r.delay)),
            Some((RestartCondition::None, Span::secs(1)))
        );
        assert_eq!(create(&args()).expect("nothing"), Fields::default());
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        let cases = [
            (
                PlacementArgs {
                    constraints: vec!["disk==ssd".into()],
                    ..args()
                },
                "--constraint disk==ssd",
            ),
            (
                PlacementArgs {
                    spread: Some("zone".into()),
                    ..args()
                },
                "--spread zone",
            ),
            (
                PlacementArgs {
                    reserve_cpus: Some(0.0),
                    ..args()
                },
                "--reserve-cpus 0",
            ),
            (
                PlacementArgs {
                    limit_memory: Some("lots".into()),
                    ..args()
                },
                "--limit-memory",
            ),
            (
                PlacementArgs {
                    reserve_memory: Some("1G".into()),
                    limit_memory: Some("512M".into()),
                    ..args()
                },
                "--reserve-memory must not exceed the limit",
            ),
            (
                PlacementArgs {
                    volumes: vec!["data".into()],
                    ..args()
                },
                "--volume data: use SOURCE:TARGET[:ro]",
            ),
            (
                PlacementArgs {
                    volumes: vec!["data:/d:rx".into()],
                    ..args()
                },
                "--volume data:/d:rx",
            ),
            (
                PlacementArgs {
                    restart_delay: Some("soon".into()),
                    ..args()
                },
                "--restart-delay",
            ),
        ];
        for (a, needle) in cases {
            let e = create(&a).expect_err(needle).to_string();
            assert!(e.starts_with(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn update_adds_removes_and_keeps() {
        let have = vec![Constraint::parse("node.name != w1").expect("valid")];
        let vols = vec![volume("data:/data").expect("valid")];
        let current = Current {
            constraints: &have,
            resources: Resources {
                limits: Amount {
                    cpus: Some(Cpus(2000)),
                    memory: None,
                },
                ..Resources::default()
            },
            volumes: &vols,
            restart: None,
        };
        let a = PlacementArgs {
            constraints: vec!["node.driver==docker".into()],
            reserve_cpus: Some(1.0),
            volumes: vec!["logs:/logs".into()],
            restart_max_attempts: Some(3),
            spread: Some(String::new()),
            ..args()
        };
        let f = update(&a, &["node.name!=w1".into()], &["/data".into()], &current).expect("valid");
        let constraints: Vec<String> = f
            .constraints
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(constraints, ["node.driver == docker"]);
        let r = f.resources.expect("resources");
        assert_eq!(
            (r.reservations.cpus, r.limits.cpus),
            (Some(Cpus(1000)), Some(Cpus(2000)))
        );
        let targets: Vec<&str> = f
            .volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|v| v.target.as_str())
            .collect();
        assert_eq!(targets, ["/logs"]);
        assert_eq!(f.spread.as_deref(), Some(""));
        assert_eq!(
            f.restart.map(|r| (r.condition, r.max_attempts)),
            Some((RestartCondition::Any, 3))
        );
        let e = update(&args(), &["node.name==x".into()], &[], &current).expect_err("absent");
        assert!(e.to_string().contains("has no constraint"), "{e}");
        let e = update(&args(), &[], &["/nope".into()], &current).expect_err("absent");
        assert!(e.to_string().contains("mounts nothing at /nope"), "{e}");
    }
}
