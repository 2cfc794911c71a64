//! `mycluster`: every role of the cluster in one binary — the manager, and the command
//! line client of its API.

mod agent;
mod bench;
mod cli;
mod hello;
mod image;
mod logging;
mod manager;
mod output;
mod remote;
mod settings;
mod setup;
mod store_copy;
mod tokens;

use clap::Parser;

fn main() {
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
            cli::Command::Monitor(args) => agent::monitor(&cli.global, args).await,
            cli::Command::Hello(args) => hello::run(args).await,
            cli::Command::Bench(args) => bench::run(args).await,
            cli::Command::Store(cli::StoreCommand::Copy(args)) => store_copy::copy(args).await,
            cli::Command::Store(cli::StoreCommand::Reseed) => remote::reseed(&cli.global).await,
            cli::Command::Setup(args) => setup::setup(args).await,
            cli::Command::Manage(args) => setup::manage(args).await,
            cli::Command::Worker(cli::WorkerCommand::Ps { worker }) => {
                remote::worker_ps(&cli.global, &worker).await
            }
            cli::Command::Image(cli::ImageCommand::Demo { aliases, rebuild }) => {
                for line in image::ensure_demo(rebuild, &aliases).await? {
                    println!("{line}");
                }
                Ok(())
            }
            cli::Command::Service(command) => remote::service(&cli.global, command).await,
            cli::Command::State => remote::state(&cli.global).await,
            cli::Command::Stats => remote::stats(&cli.global).await,
            cli::Command::Workers => remote::workers(&cli.global).await,
            cli::Command::Tasks { service } => remote::tasks(&cli.global, service.as_deref()).await,
            cli::Command::Token { name, join } => settings::print_token(name.as_deref(), join),
            cli::Command::Supervise => Err(anyhow::anyhow!(
                "the supervisor runs before the async runtime starts"
            )),
        }
    });
    if let Err(e) = result {
        fail(&e);
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
        .take_while(|l| !l.starts_with("Usage:"))
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
