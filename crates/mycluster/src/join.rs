//! `mycluster join`: another host becomes a worker of a cluster. It checks what can be
//! checked before anything runs — the token is a join token (`MCJT1-<CA digest>-
//! <secret>`, which pins the manager's CA), the Docker engine answers (docker driver),
//! the manager answers through TLS certified by that CA — then runs the agent exactly
//! as `mycluster agent` does (`agent::serve`), its credential kept in its data dir. Or,
//! with `--print-systemd-unit`, prints a unit that runs this very command as a service.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, FromArgMatches};
use mycluster_client::Client;
use mycluster_runtime::DockerRuntime;
use mycluster_setup::secret::{read_secret, JOIN_TOKEN_ENV};
use mycluster_tls::JoinToken;

use crate::cli::{AgentArgs, Global};

/// Where the unit's environment file (holding the join token) goes.
const UNIT_ENV_FILE: &str = "/etc/mycluster/join.env";

#[derive(Args, Clone, Debug)]
#[command(
    after_help = "The manager is the global --manager: its TLS port as this host \
reaches it, e.g. --manager https://manager.example:5443 (`mycluster token --curl` on the \
manager's host shows it). The token comes from `mycluster token --join` there."
)]
pub struct JoinArgs {
    /// The join token, MCJT1-<CA digest>-<secret> (`mycluster token --join` on the
    /// manager's host); it names the CA the manager must be certified by [default:
    /// $MYCLUSTER_JOIN_TOKEN, else --join-token-file].
    #[arg(long, env = JOIN_TOKEN_ENV, hide_env_values = true, value_name = "MCJT1-…")]
    pub token: Option<String>,
    /// A file holding the join token (instead of --token, which `ps` shows).
    #[arg(long, env = "MYCLUSTER_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// This worker's name, unique in the cluster [default: this host's name].
    #[arg(long)]
    pub name: Option<String>,
    /// What runs the tasks: containers on this host's Docker engine, or processes.
    #[arg(long, value_enum, default_value = "docker")]
    pub driver: JoinDriver,
    /// The agent's own directory: it keeps the worker's credential there (given at its
    /// first registration: without it the name cannot register again) and, with the
    /// process driver, the tasks' logs [default: the agent's,
    /// $HOME/.local/share/mycluster/agents/<cluster>/<name>].
    #[arg(long, env = "MYCLUSTER_AGENT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where this agent's port listens: its health (the monitor probes it), metrics, and
    /// its tasks' logs (the manager reads them over TLS) [default: the agent's,
    /// 0.0.0.0:7000, or $MYCLUSTER_AGENT_LISTEN].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The host:port at which the manager and the monitor reach this agent's port, when
    /// this host's name does not lead there from them (a NAT, a published port)
    /// [default: the agent's, this host's name and the port, or $MYCLUSTER_ADVERTISE].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Print a systemd unit that runs this join as a service (the token in an
    /// environment file, mode 0600) and exit without joining.
    #[arg(long)]
    pub print_systemd_unit: bool,
}

impl JoinArgs {
    /// The agent's own flags this join passes on, as words of its command line.
    fn agent_flags(&self) -> Vec<String> {
        let mut words = Vec::new();
        for (flag, value) in [("--listen", &self.listen), ("--advertise", &self.advertise)] {
            if let Some(value) = value {
                words.extend([flag.to_string(), value.clone()]);
            }
        }
        words
    }
}

/// The drivers a joining host may run (the sim driver is for benchmarks only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinDriver {
    /// Containers on this host's Docker engine (unix socket, or DOCKER_HOST).
    Docker,
    /// The services' commands as process trees under a supervisor.
    Process,
}

impl JoinDriver {
    fn name(self) -> &'static str {
        match self {
            JoinDriver::Docker => "docker",
            JoinDriver::Process => "process",
        }
    }
}

pub async fn run(global: &Global, args: JoinArgs) -> anyhow::Result<()> {
    let manager = global.manager.clone().context(
        "give the manager's TLS address: --manager https://HOST:PORT (`mycluster token --curl` on its host shows it)",
    )?;
    if !manager.starts_with("https://") {
        bail!("--manager {manager}: join over TLS only, https://HOST:PORT (the manager's TLS port): a join token must not cross the network in the clear");
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            mycluster_agent::hostname().context("this host has no name to join as: give --name")?
        }
    };
    if args.print_systemd_unit {
        print!("{}", systemd_unit(&manager, &name, &args)?);
        return Ok(());
    }
    let text = match (&args.token, &args.join_token_file) {
        (Some(token), _) => token.trim().to_string(),
        (None, Some(path)) => read_secret(path)?,
        (None, None) => bail!("give the join token: --token MCJT1-… (or $MYCLUSTER_JOIN_TOKEN, --join-token-file); `mycluster token --join` prints it on the manager's host"),
    };
    if !JoinToken::is_join_token(&text) {
        bail!("the token is not a join token: it starts with MCJT1- and names the manager's CA (`mycluster token --join` on the manager's host prints one); an API token or a bare secret cannot check the manager");
    }
    let token = JoinToken::parse(&text).context("the join token")?;
    crate::logging::init("agent");
    if args.driver == JoinDriver::Docker {
        if !DockerRuntime::available().await {
            bail!("the Docker engine does not answer (/var/run/docker.sock, or $DOCKER_HOST): start it, or join with --driver process");
        }
        println!("Docker engine: answers");
    }
    let health = Client::new(&manager, Duration::from_secs(10))?
        .with_token(Some(text.clone()))
        .health()
        .await
        .with_context(|| {
            format!(
                "the manager at {manager} did not answer through TLS certified by the CA {} (the token's)",
                token.ca
            )
        })?;
    println!(
        "Manager {manager}: answers over TLS, certified by the cluster CA {}; cluster '{}'",
        token.ca, health.cluster
    );
    println!("Joining as worker '{name}' ({} driver)", args.driver.name());
    let mut argv = vec![
        "agent".to_string(),
        "--name".into(),
        name,
        "--driver".into(),
        args.driver.name().into(),
        "--cluster".into(),
        health.cluster,
    ];
    if let Some(dir) = &args.data_dir {
        argv.push("--data-dir".into());
        argv.push(dir.display().to_string());
    }
    argv.extend(args.agent_flags());
    // `mycluster agent`'s own flags, defaults and environment: the same agent.
    let matches =
        AgentArgs::augment_args(clap::Command::new("agent")).try_get_matches_from(argv)?;
    let agent = AgentArgs::from_arg_matches(&matches)?;
    crate::agent::serve(&manager, Some(token.ca), Some(text), agent).await
}

/// A systemd unit that runs this join as a service: the token in an environment file
/// (not on the command line, which `ps` and `systemctl status` show).
fn systemd_unit(manager: &str, name: &str, args: &JoinArgs) -> anyhow::Result<String> {
    let binary = std::env::current_exe().context("cannot find this program's path")?;
    // A service has no $HOME: the data dir (the worker's credential) must be named.
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/mycluster/agents").join(name));
    let mut words = vec![
        binary.display().to_string(),
        "join".into(),
        "--manager".into(),
        manager.into(),
        "--name".into(),
        name.into(),
        "--driver".into(),
        args.driver.name().into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    words.extend(args.agent_flags());
    let exec = words
        .iter()
        .map(|word| quote(word))
        .collect::<Vec<_>>()
        .join(" ");
    let docker = match args.driver {
        JoinDriver::Docker => {
            "After=docker.service network-online.target\nRequires=docker.service\n"
        }
        JoinDriver::Process => "After=network-online.target\n",
    };
    Ok(format!(
        "# /etc/systemd/system/mycluster-agent.service\n\
         # First put the join token in {UNIT_ENV_FILE}, readable by root only:\n\
         #   install -d -m 0700 /etc/mycluster\n\
         #   install -m 0600 /dev/null {UNIT_ENV_FILE}\n\
         #   echo '{JOIN_TOKEN_ENV}=MCJT1-…' > {UNIT_ENV_FILE}   # `mycluster token --join` on the manager's host\n\
         # then: systemctl daemon-reload && systemctl enable --now mycluster-agent\n\
         [Unit]\n\
         Description=MyCluster agent: worker {name} of the cluster at {manager}\n\
         {docker}\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         EnvironmentFile={UNIT_ENV_FILE}\n\
         ExecStart={exec}\n\
         Restart=always\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    ))
}

/// A word of ExecStart, double-quoted when systemd would split or expand it.
fn quote(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
    {
        word.to_string()
    } else {
        format!(
            "\"{}\"",
            word.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "$$")
                .replace('%', "%%")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(driver: JoinDriver) -> JoinArgs {
        JoinArgs {
            token: None,
            join_token_file: None,
            name: None,
            driver,
            data_dir: None,
            listen: None,
            advertise: None,
            print_systemd_unit: true,
        }
    }

    #[test]
    fn the_unit_runs_the_same_join_with_the_token_in_a_file() {
        let unit = systemd_unit("https://m.example:5443", "w1", &args(JoinDriver::Docker))
            .expect("a unit");
        assert!(unit.contains("After=docker.service"), "{unit}");
        assert!(
            unit.contains("EnvironmentFile=/etc/mycluster/join.env"),
            "{unit}"
        );
        assert!(unit.contains("Restart=always"), "{unit}");
        let exec = unit
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .expect("ExecStart");
        assert!(
            exec.ends_with(
                " join --manager https://m.example:5443 --name w1 --driver docker --data-dir /var/lib/mycluster/agents/w1"
            ),
            "{exec}"
        );
        assert!(!unit.contains("--token"), "{unit}");
        let process = systemd_unit("https://m:1", "w", &args(JoinDriver::Process)).expect("unit");
        assert!(!process.contains("docker.service"), "{process}");
        // Where the agent listens and is reached, when given, go into the unit too.
        let behind_nat = JoinArgs {
            listen: Some("0.0.0.0:7100".into()),
            advertise: Some("gw.example:17100".into()),
            ..args(JoinDriver::Docker)
        };
        let unit = systemd_unit("https://m:1", "w", &behind_nat).expect("unit");
        assert!(
            unit.contains(" --listen 0.0.0.0:7100 --advertise gw.example:17100\n"),
            "{unit}"
        );
    }

    #[test]
    fn words_systemd_would_split_are_quoted() {
        assert_eq!(quote("/usr/bin/mycluster"), "/usr/bin/mycluster");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("$x%"), "\"$$x%%\"");
    }
}
