//! `mycluster`: every role of the cluster in one binary — the manager, an agent, the
//! monitor, a whole `dev` cluster in one process, the demo workload — with the command
//! line client of its API, setup and management of a cluster on a Docker host, state
//! store tools and the benchmarks. This crate parses the command line (`cli`) and wires
//! each role to the library crate that does the work.
//!
//! Start reading at `main` below (which subcommand goes where), then `cli` (every flag
//! and its help). `docs/ARCHITECTURE.md` says which crate holds what.

mod admin_args;
mod agent;
mod auth;
mod cli;
mod events;
mod follow;
mod hello;
mod ingress;
mod join;
mod join_token;
mod logging;
mod logs;
mod manager;
mod output;
mod placement_flags;
mod port_flags;
mod remote;
mod remote_admin;
mod resolve;
mod service_args;
mod spec_flags;
mod store_copy;
mod token;

use clap::Parser;

fn main() {
    // Before any HTTP client is made: reqwest asks for the process's TLS provider.
    mycluster_tls::install_default_provider();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    if matches!(cli.command, cli::Command::Supervise) {
        // A plain single-threaded program: it blocks signals and reaps every child, so it
        // runs before any thread (the async runtime's) exists.
        std::process::exit(mycluster_runtime::supervise::run());
    }
    if cli.command.is_client() {
        // `mycluster tasks | head` should end quietly when head closes the pipe. Only
        // for client commands: a server must not die when a peer hangs up.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Manager(args) => manager::run(&cli.global, args).await,
            cli::Command::Agent(args) => agent::run(&cli.global, args).await,
            cli::Command::Dev(args) => agent::dev(args).await,
            cli::Command::Ingress(args) => ingress::run(&cli.global, args).await,
            cli::Command::Monitor(args) => agent::monitor(&cli.global, args).await,
            cli::Command::Hello(args) => hello::run(args).await,
            cli::Command::Resolve { name } => resolve::run(&name).await,
            cli::Command::Bench(args) => bench(args).await,
            cli::Command::Store(cli::StoreCommand::Copy(args)) => store_copy::copy(args).await,
            cli::Command::Store(cli::StoreCommand::Reseed) => remote::reseed(&cli.global).await,
            cli::Command::Setup(args) => Ok(mycluster_setup::setup(args.options()?).await?),
            cli::Command::Manage(args) => {
                Ok(mycluster_setup::manage(args.command.to_setup(), args.name).await?)
            }
            cli::Command::Worker(command) => remote_admin::worker(&cli.global, command).await,
            cli::Command::Volume(command) => remote_admin::volume(&cli.global, command).await,
            cli::Command::Image(cli::ImageCommand::Demo { aliases, rebuild }) => {
                for line in mycluster_setup::images::ensure_demo(rebuild, &aliases).await? {
                    println!("{line}");
                }
                Ok(())
            }
            cli::Command::Service(command) => remote::service(&cli.global, *command).await,
            cli::Command::Logs(args) => logs::run(&cli.global, args).await,
            cli::Command::State => remote::state(&cli.global).await,
            cli::Command::Stats => remote::stats(&cli.global).await,
            cli::Command::Workers => remote_admin::workers(&cli.global).await,
            cli::Command::Tasks { service } => remote::tasks(&cli.global, service.as_deref()).await,
            cli::Command::Events(args) => events::run(&cli.global, args).await,
            cli::Command::Token { name, ca: true, .. } => crate::token::print_ca(name).await,
            cli::Command::Token {
                name, curl: true, ..
            } => crate::token::print_curl(name).await,
            cli::Command::Token {
                name, join, rotate, ..
            } => {
                let token = if join {
                    join_token::run(&cli.global, name.as_deref(), rotate).await?
                } else {
                    mycluster_setup::settings::token(name.as_deref(), false)?
                };
                println!("{token}");
                Ok(())
            }
            cli::Command::Join(args) => crate::join::run(&cli.global, args).await,
            cli::Command::Supervise => Err(anyhow::anyhow!(
                "the supervisor runs before the async runtime starts"
            )),
        }
    });
    if let Err(e) = result {
        fail(&e);
    }
}

/// `mycluster bench`: the benchmarks, or (internal) one of its hosts of sim agents.
async fn bench(args: cli::BenchArgs) -> anyhow::Result<()> {
    match args.part {
        Some(cli::BenchPart::Agents { from, count }) => {
            manager::raise_open_files();
            let manager = std::env::var("MYCLUSTER_MANAGER")
                .unwrap_or_else(|_| "http://localhost:5000".into());
            Ok(mycluster_bench::host_agents(&manager, from, count).await?)
        }
        None => Ok(mycluster_bench::run(&args.options()).await?),
    }
}

/// A usage error in one line (help and version print as usual), exit 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        // clap's pointer to --help closes a value error; ours says it once.
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let message = message.join(" ");
    let message = message.trim_start_matches("error: ");
    eprintln!("error: {message} (see --help)");
    std::process::exit(2);
}

/// One line on stderr and a non-zero exit: what a script and a person both need.
fn fail(error: &anyhow::Error) -> ! {
    let causes: Vec<String> = error.chain().map(ToString::to_string).collect();
    let mut line = causes[0].clone();
    for cause in &causes[1..] {
        if !line.contains(cause.as_str()) {
            line = format!("{line}: {cause}");
        }
    }
    eprintln!("error: {line}");
    std::process::exit(1);
}
