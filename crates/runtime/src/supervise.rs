//! The supervisor of one process-driver task (`mycluster supervise`): a small,
//! single-threaded program between the agent and the task's command, so that every
//! process the command starts, however deep, ends with the task or with its agent.
//!
//! The agent starts it with `PR_SET_PDEATHSIG(SIGUSR1)` and writes the task (a
//! `Request`) on its stdin. It makes itself a child subreaper, so whatever its
//! descendants orphan is re-parented to it and stays in its tree, starts the command as
//! its child in a process group of its own (its stdout and stderr: the pipes the agent
//! passed as descriptors 3 and 4 when the request says so, for its logs; else nowhere),
//! answers one line on stdout (`started <pid>`,
//! or `failed <reason>` when the command cannot be executed), then waits for signals:
//!
//! - SIGTERM (or SIGINT, SIGHUP, SIGQUIT), a stop: SIGTERM to the command's group, and
//!   after the grace period SIGKILL to the whole tree. The grace is the request's, unless
//!   the stop carries one: the agent sends it with sigqueue(3), the task's own grace in
//!   milliseconds as the signal's value (a task's grace is known when it is stopped, not
//!   only when it starts);
//! - the command's main process ends: whatever it left is killed, and the supervisor exits
//!   with the same status (the same signal, when it was killed by one), so the agent
//!   reports what it would for the command itself;
//! - SIGUSR1, or its parent changed (checked every second, a backstop): the agent is dead,
//!   so the whole tree is killed at once.
//!
//! It ends only when it has no child left, and as a subreaper that means its tree is empty.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::tree;

/// The first field of a request: which format follows.
const MAGIC: &str = "mycluster-supervise/1";

/// How often, at the least, the supervisor checks that its agent is still its parent.
const PARENT_CHECK: Duration = Duration::from_secs(1);
/// How often a tree killed after its grace period is looked at until its main process
/// is reaped.
const KILL_POLL: Duration = Duration::from_millis(50);

/// Exit code when the supervisor itself fails before the command runs (as `docker run`
/// answers 125 when the daemon fails).
const SUPERVISOR_FAILED: i32 = 125;

/// The agent asks for a stop with any of these.
const STOP_SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
/// The agent's death signal (`PR_SET_PDEATHSIG`): kill everything now.
pub(crate) const AGENT_DIED: libc::c_int = libc::SIGUSR1;

/// One task to run, as the agent writes it on the supervisor's stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// Between the SIGTERM of a stop and the SIGKILL of the whole tree.
    pub grace: Duration,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Set in the command's environment, over the supervisor's own.
    pub env: BTreeMap<String, String>,
    /// The command writes its stdout and stderr to the supervisor's descriptors 3 and 4
    /// (the agent's pipes to its log files); without, to /dev/null.
    pub output: bool,
}

/// The descriptors of the command's stdout and stderr, when the request has `output`.
pub(crate) const OUTPUT_FDS: [libc::c_int; 2] = [3, 4];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("an argument or environment variable holds a NUL byte")]
    NulByte,
    #[error("the request is not in the format {MAGIC}")]
    Format,
    #[error("the request has no command")]
    NoCommand,
}

impl Request {
    /// NUL-separated fields: the magic, the grace in milliseconds, `1` or `0` for
    /// `output`, the number of
    /// arguments and the arguments, the number of variables and each name and value. NUL
    /// is the one byte no argument or variable can hold.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, RequestError> {
        let mut fields: Vec<&str> = Vec::new();
        let grace = self.grace.as_millis().to_string();
        let argc = self.command.len().to_string();
        let envc = self.env.len().to_string();
        let output = if self.output { "1" } else { "0" };
        fields.extend([MAGIC, grace.as_str(), output, argc.as_str()]);
        fields.extend(self.command.iter().map(String::as_str));
        fields.push(&envc);
        for (name, value) in &self.env {
            fields.extend([name.as_str(), value.as_str()]);
        }
        let mut out = Vec::new();
        for field in fields {
            if field.contains('\0') {
                return Err(RequestError::NulByte);
            }
            out.extend_from_slice(field.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Request, RequestError> {
        let body = bytes.strip_suffix(&[0]).ok_or(RequestError::Format)?;
        let fields = body
            .split(|b| *b == 0)
            .map(std::str::from_utf8)
            .collect::<Result<Vec<&str>, _>>()
            .map_err(|_| RequestError::Format)?;
        let mut fields = fields.into_iter();
        let mut text = || fields.next().map(str::to_owned).ok_or(RequestError::Format);
        if text()? != MAGIC {
            return Err(RequestError::Format);
        }
        let number = |field: String| field.parse::<u64>().map_err(|_| RequestError::Format);
        let grace = Duration::from_millis(number(text()?)?);
        let output = match text()?.as_str() {
            "1" => true,
            "0" => false,
            _ => return Err(RequestError::Format),
        };
        let argc = number(text()?)?;
        let command = (0..argc).map(|_| text()).collect::<Result<Vec<_>, _>>()?;
        let envc = number(text()?)?;
        let env = (0..envc)
            .map(|_| Ok((text()?, text()?)))
            .collect::<Result<BTreeMap<_, _>, RequestError>>()?;
        if text().is_ok() {
            return Err(RequestError::Format);
        }
        if command.is_empty() {
            return Err(RequestError::NoCommand);
        }
        Ok(Request {
            grace,
            command,
            env,
            output,
        })
    }
}

/// What the supervisor answers on stdout once, before it only waits.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The command runs as this process.
    Started(i32),
    /// It could not be executed, and why (the OS's words).
    Failed(String),
}

impl Reply {
    fn line(&self) -> String {
        match self {
            Reply::Started(pid) => format!("started {pid}\n"),
            // One line: a reason never spans more.
            Reply::Failed(why) => format!("failed {}\n", why.replace('\n', " ")),
        }
    }

    pub(crate) fn parse(line: &str) -> Option<Reply> {
        let line = line.strip_suffix('\n')?;
        if let Some(pid) = line.strip_prefix("started ") {
            return pid.parse().ok().map(Reply::Started);
        }
        line.strip_prefix("failed ")
            .map(|why| Reply::Failed(why.to_owned()))
    }
}

/// Runs the supervisor: reads the request on stdin, runs it, and returns the exit code
/// (or ends by the signal that ended the command). Call it in a process of its own,
/// before any other thread starts: it blocks signals and reaps every child.
pub fn run() -> i32 {
    let signals = Signals::block();
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        let why = std::io::Error::last_os_error();
        answer(&Reply::Failed(format!(
            "the supervisor cannot become a subreaper: {why}"
        )));
        return SUPERVISOR_FAILED;
    }
    // SAFETY: getppid(2) has no preconditions.
    let agent = unsafe { libc::getppid() };
    let mut input = Vec::new();
    let request = match std::io::stdin().read_to_end(&mut input) {
        Ok(_) => Request::decode(&input).map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot read the request: {e}")),
    };
    let request = match request {
        Ok(request) => request,
        Err(why) => {
            answer(&Reply::Failed(format!("the supervisor got no task: {why}")));
            return SUPERVISOR_FAILED;
        }
    };
    let main = match start(&request) {
        Ok(pid) => pid,
        Err(e) => {
            answer(&Reply::Failed(e.to_string()));
            return SUPERVISOR_FAILED;
        }
    };
    answer(&Reply::Started(main));
    let ended = watch(&signals, agent, main, request.grace);
    end_tree(&signals);
    match ended {
        Ended::Command(status) => mirror(status),
        // Nobody is left to read it.
        Ended::AgentDied => 128 + AGENT_DIED,
    }
}

/// One line to the agent. Failing to tell it changes nothing here: an agent that does not
/// read it has gone, and its death signal follows.
fn answer(reply: &Reply) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(reply.line().as_bytes());
    let _ = out.flush();
}

/// Starts the command as this process's child, in a process group of its own.
fn start(request: &Request) -> std::io::Result<i32> {
    let (stdout, stderr) = match request.output {
        true => (output(OUTPUT_FDS[0])?, output(OUTPUT_FDS[1])?),
        false => (Stdio::null(), Stdio::null()),
    };
    let mut command = Command::new(&request.command[0]);
    command
        .args(&request.command[1..])
        .envs(&request.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    // SAFETY: getpid(2) has no preconditions.
    let supervisor = unsafe { libc::getpid() };
    // SAFETY: only async-signal-safe calls (sigemptyset, sigprocmask, prctl, getppid)
    // between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The supervisor blocks the signals it waits for; the command starts with none
            // blocked, as it would from a shell.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died between fork and prctl: do not outlive it.
            if libc::getppid() != supervisor {
                // No allocation after fork: a plain OS error.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    // Dropping the handle neither kills nor waits: the supervisor reaps with waitpid.
    let child = command.spawn()?;
    Ok(child.id() as i32)
}

/// The pipe the agent passed as descriptor `fd`, for the command's output. Closed on
/// exec: the command gets it as its stdout or stderr only, and the supervisor's own copy
/// closes with the `Command` (so the pipe ends when the command's processes end).
fn output(fd: libc::c_int) -> std::io::Result<Stdio> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(2) on a descriptor number; fails cleanly when it is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(std::io::Error::other(format!(
            "no output pipe at descriptor {fd}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the agent passed it for this very use, and nothing else here owns it.
    Ok(Stdio::from(unsafe {
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }))
}

enum Ended {
    /// The command's main process ended with this wait status.
    Command(libc::c_int),
    AgentDied,
}

/// Waits until the command's main process ends or the agent dies, handling stops.
fn watch(signals: &Signals, agent: i32, main: i32, grace: Duration) -> Ended {
    let mut kill_at: Option<Instant> = None;
    let mut killed_at: Option<Instant> = None;
    loop {
        if let Some(status) = reap(main) {
            return Ended::Command(status);
        }
        let now = Instant::now();
        // Never a busy loop: once the grace is over, the tree is killed and the main
        // process looked for every `KILL_POLL` until it is reaped.
        let timeout = kill_at
            .map_or(PARENT_CHECK, |at| {
                at.saturating_duration_since(now).min(PARENT_CHECK)
            })
            .max(KILL_POLL);
        match signals.wait(timeout) {
            Some(Received {
                signal: AGENT_DIED, ..
            }) => return Ended::AgentDied,
            Some(Received {
                signal,
                grace: given,
            }) if STOP_SIGNALS.contains(&signal) && kill_at.is_none() => {
                tree::kill_group(main, libc::SIGTERM);
                kill_at = Some(crate::later(given.unwrap_or(grace)));
            }
            // SIGCHLD, a repeated stop, or the timeout: look again below.
            _ => {}
        }
        // SAFETY: getppid(2) has no preconditions.
        if unsafe { libc::getppid() } != agent {
            return Ended::AgentDied;
        }
        let now = Instant::now();
        let due = kill_at.is_some_and(|at| now >= at);
        // Once, then again each second for what was forked meanwhile (a process stuck in
        // the kernel dies when it leaves it).
        if due && killed_at.is_none_or(|at| now - at >= PARENT_CHECK) {
            kill_everything();
            killed_at = Some(now);
        }
    }
}

/// Reaps every child that has ended (orphans handed to this subreaper included); the
/// wait status of `main` if it is among them.
fn reap(main: i32) -> Option<libc::c_int> {
    let mut found = None;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid(2) writes the status into a local we own.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == main {
            found = Some(status);
        }
    }
}

/// SIGKILLs every process below this one.
fn kill_everything() {
    // SAFETY: getpid(2) has no preconditions.
    let me = unsafe { libc::getpid() };
    for pid in tree::descendants(me) {
        tree::kill(pid, libc::SIGKILL);
    }
}

/// Kills and reaps until no child is left. As a subreaper, anything orphaned below comes
/// back to this process, so no child left means no descendant left.
fn end_tree(signals: &Signals) {
    loop {
        kill_everything();
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid(2) writes the status into a local we own.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                continue;
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                return;
            }
            break;
        }
        // Children remain: wait for the next to end (or look again soon, for one that
        // was forked while the others were being killed).
        signals.wait(Duration::from_millis(50));
    }
}

/// The exit code for the command's wait status; ends this process by the same signal
/// when a signal ended the command.
fn mirror(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        return libc::WEXITSTATUS(status);
    }
    if !libc::WIFSIGNALED(status) {
        return SUPERVISOR_FAILED;
    }
    let signal = libc::WTERMSIG(status);
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit(2) reads a local; signal(2), sigprocmask(2) and raise(3) with
    // plain values. The core limit keeps a re-raised SIGSEGV or SIGABRT from dumping the
    // supervisor's core: the command's was dumped already, if any.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(signal, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::raise(signal);
    }
    // A signal whose default is not to end a process cannot have ended the command.
    128 + signal
}

/// The signals the supervisor waits for, blocked so they queue instead of acting.
struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    fn block() -> Signals {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before any use;
        // sigprocmask(2) reads it. This process has one thread, so the mask is the
        // process's.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in STOP_SIGNALS.into_iter().chain([AGENT_DIED, libc::SIGCHLD]) {
                libc::sigaddset(&mut set, signal);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// The next of the signals, or `None` after `timeout` (or an interruption).
    fn wait(&self, timeout: Duration) -> Option<Received> {
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below 10^9: fits any c_long.
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: siginfo_t is plain data; sigtimedwait(2) reads the set and the timeout
        // and writes the siginfo, all locals or owned. si_value is read only for a signal
        // sent by sigqueue (SI_QUEUE), the one case where the kernel filled it in.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let signal = libc::sigtimedwait(&self.set, &mut info, &timeout);
            if signal <= 0 {
                return None;
            }
            let grace = (info.si_code == libc::SI_QUEUE)
                .then(|| Duration::from_millis(info.si_value().sival_ptr as usize as u64));
            Some(Received { signal, grace })
        }
    }
}

/// A signal, and the grace a stop sent with sigqueue(3) carries.
struct Received {
    signal: libc::c_int,
    grace: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            grace: Duration::from_millis(1500),
            command: vec!["sh".into(), "-c".into(), "echo 'a b'\n=x".into(), "".into()],
            env: BTreeMap::from([
                ("A".to_string(), "1=2".to_string()),
                ("EMPTY".to_string(), String::new()),
            ]),
            output: true,
        }
    }

    #[test]
    fn a_request_survives_encoding() {
        let bytes = request().encode().expect("encode");
        assert_eq!(Request::decode(&bytes), Ok(request()));
    }

    #[test]
    fn a_nul_byte_is_refused_not_mangled() {
        let mut bad = request();
        bad.command.push("a\0b".into());
        assert_eq!(bad.encode(), Err(RequestError::NulByte));
        let mut bad = request();
        bad.env.insert("K".into(), "v\0".into());
        assert_eq!(bad.encode(), Err(RequestError::NulByte));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = request().encode().expect("encode");
        assert_eq!(
            Request::decode(&good[..good.len() - 1]),
            Err(RequestError::Format)
        );
        assert_eq!(Request::decode(b"other\0"), Err(RequestError::Format));
        let mut longer = good.clone();
        longer.extend_from_slice(b"extra\0");
        assert_eq!(Request::decode(&longer), Err(RequestError::Format));
        let empty = Request {
            command: Vec::new(),
            ..request()
        };
        let bytes = empty.encode().expect("encode");
        assert_eq!(Request::decode(&bytes), Err(RequestError::NoCommand));
    }

    #[test]
    fn replies_are_one_line_each() {
        for reply in [
            Reply::Started(42),
            Reply::Failed("No such file or directory (os error 2)".into()),
        ] {
            assert_eq!(Reply::parse(&reply.line()), Some(reply));
        }
        assert_eq!(
            Reply::parse(&Reply::Failed("two\nlines".into()).line()),
            Some(Reply::Failed("two lines".into()))
        );
        assert_eq!(Reply::parse("started x\n"), None);
        assert_eq!(Reply::parse("started 1"), None);
    }
}
