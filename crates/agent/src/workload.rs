//! What the agent runs for a task: its command and environment as the service gave them,
//! plus what the agent adds so a workload knows who and where it is.
//!
//! Added to the environment, on every driver:
//! - `MYCLUSTER_SERVICE`, `MYCLUSTER_SLOT`, `MYCLUSTER_TASK_ID`;
//! - for a task with ports: `PORT` (where its lowest target port is reached) and
//!   `MYCLUSTER_PORT_<TARGET>` for each target. On the docker driver each container has
//!   an address of its own, so these are the targets themselves; on the process driver
//!   every task shares the host, so the agent gives each its own free ports (see
//!   `ports`). An application that listens on `$PORT` runs unchanged on both;
//! - on the process driver, `MYCLUSTER_SERVED_BY=<host>.<service>.<slot>`: replicas on one
//!   host share its hostname, and the demo names the replica that answered with this.
//!
//! The agent's variables win over the task's own of the same name: the port the agent
//! reports is the one the task must listen on. They are added to what is run, never to
//! the task's `env` as the manager stores and shows it.
//!
//! On the process driver the command's arguments may name these variables — `$PORT`,
//! `${PORT}`, `$MYCLUSTER_PORT_8000`, `${MYCLUSTER_SLOT}`... — and the agent puts their
//! values in, as a shell would (`-- mycluster hello --port '$PORT'` works without one):
//! there the port is the agent's choice, known only when the task starts. Only the
//! variables the agent sets are replaced; any other `$NAME` is left as written; `$$` is a
//! `$` (`$$PORT` gives `$PORT`), for an argument that must keep one before such a name.
//!
//! The task's resources and mounts go to the runtime as the manager resolved them (the
//! limits are enforced there, the volumes named for the task's slot).
//!
//! On the docker driver the arguments are passed as written, as Docker itself does: the
//! ports there are the targets, known when the service is written, and a workload that
//! wants the variables reads its environment (`sh -c 'echo $PORT'` expands them in the
//! container, with the shell's own rules) — replacing them beforehand would change what
//! such a shell script means.

use std::collections::BTreeMap;

use mycluster_core::task::TaskPort;
use mycluster_core::wire::TaskDoc;
use mycluster_core::Driver;
use mycluster_runtime::TaskSpec;

/// The `TaskSpec` that runs `task` on `driver`, reached at `ports` (one per target, as
/// `ports::Ports::assign` gives them); `host` names this host for `MYCLUSTER_SERVED_BY`.
pub fn spec(task: &TaskDoc, ports: &[TaskPort], driver: Driver, host: &str) -> TaskSpec {
    let added = agent_env(task, ports, driver, host);
    let mut env = task.env.clone();
    env.extend(added.iter().map(|(k, v)| (k.clone(), v.clone())));
    TaskSpec {
        task_id: task.id.clone(),
        service: task.service.clone(),
        slot: task.slot,
        image: task.image.clone(),
        command: task.command.as_ref().map(|argv| match driver {
            Driver::Process => expand(argv, &added),
            Driver::Docker | Driver::Sim => argv.clone(),
        }),
        env,
        resources: task.resources,
        mounts: task.mounts.clone(),
    }
}

/// The variables the agent adds to `task`'s environment.
pub fn agent_env(
    task: &TaskDoc,
    ports: &[TaskPort],
    driver: Driver,
    host: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("MYCLUSTER_SERVICE".to_string(), task.service.clone()),
        ("MYCLUSTER_SLOT".to_string(), task.slot.to_string()),
        ("MYCLUSTER_TASK_ID".to_string(), task.id.clone()),
    ]);
    if driver == Driver::Process {
        env.insert(
            "MYCLUSTER_SERVED_BY".into(),
            format!("{host}.{}.{}", task.service, task.slot),
        );
    }
    let mut reached: Vec<(u16, u16)> = ports
        .iter()
        .filter_map(|p| p.port.map(|port| (p.target, port)))
        .collect();
    reached.sort_unstable();
    if let Some((_, first)) = reached.first() {
        env.insert("PORT".into(), first.to_string());
    }
    for (target, port) in reached {
        env.insert(format!("MYCLUSTER_PORT_{target}"), port.to_string());
    }
    env
}

/// `argv` with `$NAME` and `${NAME}` replaced by `vars[NAME]` wherever NAME is one of
/// `vars`, and `$$` by `$`; everything else as written.
pub fn expand(argv: &[String], vars: &BTreeMap<String, String>) -> Vec<String> {
    argv.iter().map(|arg| expand_one(arg, vars)).collect()
}

fn expand_one(arg: &str, vars: &BTreeMap<String, String>) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        // `$$`: a `$` that starts nothing.
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
            continue;
        }
        // `${NAME}`: the name is what the braces hold.
        if let Some(braced) = after.strip_prefix('{') {
            if let Some(end) = braced.find('}') {
                if let Some(value) = vars.get(&braced[..end]) {
                    out.push_str(value);
                    rest = &braced[end + 1..];
                    continue;
                }
            }
        } else {
            // `$NAME`: the longest name, so `$PORTS` is not `$PORT` followed by "S".
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            if let Some(value) = vars.get(&after[..end]) {
                out.push_str(value);
                rest = &after[end..];
                continue;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(targets: &[u16]) -> TaskDoc {
        TaskDoc {
            slot: 2,
            image: None,
            command: Some(
                ["mycluster", "hello", "--port", "$PORT"]
                    .map(String::from)
                    .to_vec(),
            ),
            env: BTreeMap::from([
                ("GREETING".to_string(), "hi".to_string()),
                ("PORT".to_string(), "1".to_string()),
            ]),
            ports: targets
                .iter()
                .map(|&target| TaskPort { target, port: None })
                .collect(),
            ..crate::fixtures::task_doc("t123")
        }
    }

    fn reached(pairs: &[(u16, u16)]) -> Vec<TaskPort> {
        pairs
            .iter()
            .map(|&(target, port)| TaskPort {
                target,
                port: Some(port),
            })
            .collect()
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_process_driver_passes_each_tasks_own_ports() {
        let t = task(&[9000, 8000]);
        let ports = reached(&[(9000, 41001), (8000, 41000)]);
        let spec = spec(&t, &ports, Driver::Process, "box");
        assert_eq!(
            spec.env,
            vars(&[
                ("GREETING", "hi"),
                ("MYCLUSTER_PORT_8000", "41000"),
                ("MYCLUSTER_PORT_9000", "41001"),
                ("MYCLUSTER_SERVED_BY", "box.web.2"),
                ("MYCLUSTER_SERVICE", "web"),
                ("MYCLUSTER_SLOT", "2"),
                ("MYCLUSTER_TASK_ID", "t123"),
                // The lowest target's, over the task's own PORT.
                ("PORT", "41000"),
            ])
        );
        assert_eq!(
            spec.command,
            Some(
                ["mycluster", "hello", "--port", "41000"]
                    .map(String::from)
                    .to_vec()
            )
        );
        // What the manager stores is untouched.
        assert_eq!(t.env, vars(&[("GREETING", "hi"), ("PORT", "1")]));
        assert_eq!((spec.task_id.as_str(), spec.slot), ("t123", 2));
    }

    #[test]
    fn only_the_process_driver_expands_the_command() {
        let mut t = task(&[8000]);
        let script = "for PORT in 1 2; do echo $PORT; done";
        t.command = Some(["sh", "-c", script].map(String::from).to_vec());
        let ports = reached(&[(8000, 8000)]);
        // Docker never expands argv: the shell in the container does, with its own rules.
        for driver in [Driver::Docker, Driver::Sim] {
            let run = spec(&t, &ports, driver, "box");
            assert_eq!(run.command, t.command, "{driver:?}");
            assert_eq!(run.env.get("PORT").map(String::as_str), Some("8000"));
        }
        let run = spec(&t, &reached(&[(8000, 41000)]), Driver::Process, "box");
        assert_eq!(
            run.command.as_ref().map(|c| c[2].as_str()),
            Some("for PORT in 1 2; do echo 41000; done")
        );
        // Kept for the shell with `$$`.
        t.command = Some(
            ["sh", "-c", "for PORT in 1 2; do echo $$PORT; done"]
                .map(String::from)
                .to_vec(),
        );
        let run = spec(&t, &reached(&[(8000, 41000)]), Driver::Process, "box");
        assert_eq!(run.command.as_ref().map(|c| c[2].as_str()), Some(script));
    }

    #[test]
    fn the_docker_driver_passes_the_targets_and_no_served_by() {
        let t = task(&[8000]);
        let env = agent_env(&t, &reached(&[(8000, 8000)]), Driver::Docker, "box");
        assert_eq!(
            env,
            vars(&[
                ("MYCLUSTER_PORT_8000", "8000"),
                ("MYCLUSTER_SERVICE", "web"),
                ("MYCLUSTER_SLOT", "2"),
                ("MYCLUSTER_TASK_ID", "t123"),
                ("PORT", "8000"),
            ])
        );
    }

    #[test]
    fn the_tasks_limits_and_mounts_reach_the_runtime() {
        use mycluster_core::service::{Amount, Bytes, Mount, MountKind, Resources};
        let resources = Resources {
            reservations: Amount::default(),
            limits: Amount {
                cpus: None,
                memory: Some(Bytes(64 << 20)),
            },
        };
        let mounts = vec![Mount {
            kind: MountKind::Volume,
            source: "web-data-2".into(),
            target: "/data".into(),
            read_only: true,
        }];
        let t = TaskDoc {
            resources,
            mounts: mounts.clone(),
            ..task(&[])
        };
        let run = spec(&t, &[], Driver::Docker, "box");
        assert_eq!(run.resources, resources);
        assert_eq!(run.mounts, mounts);
    }

    #[test]
    fn a_task_without_ports_gets_no_port_variables() {
        let t = task(&[]);
        let spec = spec(&t, &[], Driver::Process, "box");
        // Its own PORT stays, and so does the `$PORT` nobody set for it.
        assert_eq!(spec.env.get("PORT").map(String::as_str), Some("1"));
        assert!(!spec.env.keys().any(|k| k.starts_with("MYCLUSTER_PORT_")));
        assert_eq!(spec.command.as_ref().map(|c| c[3].as_str()), Some("$PORT"));
    }

    #[test]
    fn only_the_agents_variables_are_expanded() {
        let v = vars(&[
            ("PORT", "41000"),
            ("MYCLUSTER_PORT_8000", "41000"),
            ("MYCLUSTER_SLOT", "2"),
        ]);
        let cases = [
            ("$PORT", "41000"),
            ("${PORT}", "41000"),
            ("--listen=0.0.0.0:$PORT", "--listen=0.0.0.0:41000"),
            ("${PORT}0", "410000"),
            ("$MYCLUSTER_PORT_8000/x", "41000/x"),
            ("${MYCLUSTER_PORT_8000}", "41000"),
            ("a$MYCLUSTER_SLOT-$PORT", "a2-41000"),
            // Not ours, or not a name: as written.
            ("$PORTS", "$PORTS"),
            ("$HOME", "$HOME"),
            ("${HOME}", "${HOME}"),
            ("${PORT", "${PORT"),
            ("$", "$"),
            ("50$", "50$"),
            // `$$` is a `$`, which starts no name.
            ("$$PORT", "$PORT"),
            ("$${PORT}", "${PORT}"),
            ("$$$PORT", "$41000"),
            ("$$", "$"),
            ("a$$b", "a$b"),
            ("$$$$PORT", "$$PORT"),
            ("$MYCLUSTER_PORT_9000", "$MYCLUSTER_PORT_9000"),
            ("plain", "plain"),
            ("é$PORTé", "é41000é"),
        ];
        for (arg, want) in cases {
            assert_eq!(expand_one(arg, &v), want, "{arg}");
        }
    }
}
