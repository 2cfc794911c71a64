//! What tests that need the Docker engine share: a gate that skips them (or, with
//! `CI=true`, fails them) when no engine answers, a small test image built locally (no
//! registry is reachable), and a guard that removes containers by label when a test ends,
//! however it ends.
//!
//! Standard library only, so tests of other crates can include it with
//! `#[path = "../../runtime/tests/support/mod.rs"] mod support;`.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Labels test-made containers that carry none of the cluster's labels, so the cleanup
/// can still find them.
pub const TEST_OWNER_LABEL: &str = "mycluster.test-owner";

/// The repository of the test image; its tag is a hash of what it is built from.
pub const TEST_IMAGE_REPO: &str = "mycluster-test/runtime";

/// The test image's only program, `/prog` (its entrypoint; the default command is `sleep`):
/// - `sleep`: waits for a signal; SIGTERM or SIGINT end it with 0 (as PID 1 of a container
///   it would otherwise ignore them, and every stop would take the whole grace period);
/// - `exit N`: exits with N;
/// - `env NAME VALUE`: exits 0 if `$NAME` is `VALUE`, else 1;
/// - `say N TEXT`: prints TEXT on stdout and exits with N;
/// - `serve PORT`: answers every connection on PORT with `HTTP/1.0 200 OK` and "ok";
/// - `stubborn`: ignores SIGTERM and waits: only SIGKILL ends it;
/// - `allocate MIB`: allocates and touches MIB MiB of memory, then waits as `sleep` does;
/// - `count PATH`: adds one to the number in PATH (0 when missing), writes it back
///   (synced), and exits with the new number;
/// - `write PATH`: writes PATH and exits 0, or 1 if it cannot.
///
/// Anything else exits with 2.
pub const TEST_PROGRAM: &str = r#"#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_signal(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "sleep") == 0) {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        for (;;) pause();
    }
    if (strcmp(argv[1], "stubborn") == 0) {
        signal(SIGTERM, SIG_IGN);
        for (;;) pause();
    }
    if (strcmp(argv[1], "allocate") == 0 && argc == 3) {
        size_t size = (size_t)atol(argv[2]) << 20;
        char *memory = malloc(size);
        if (memory == NULL) return 4;
        for (size_t i = 0; i < size; i += 4096) memory[i] = 1;
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        for (;;) pause();
    }
    if (strcmp(argv[1], "count") == 0 && argc == 3) {
        int n = 0;
        FILE *f = fopen(argv[2], "r");
        if (f != NULL) {
            if (fscanf(f, "%d", &n) != 1) n = 0;
            fclose(f);
        }
        n++;
        f = fopen(argv[2], "w");
        if (f == NULL) return 100;
        fprintf(f, "%d\n", n);
        fflush(f);
        fsync(fileno(f));
        fclose(f);
        return n;
    }
    if (strcmp(argv[1], "write") == 0 && argc == 3) {
        FILE *f = fopen(argv[2], "w");
        if (f == NULL) return 1;
        int ok = fputs("written\n", f) >= 0;
        return fclose(f) == 0 && ok ? 0 : 1;
    }
    if (strcmp(argv[1], "exit") == 0 && argc == 3) return atoi(argv[2]);
    if (strcmp(argv[1], "env") == 0 && argc == 4) {
        const char *value = getenv(argv[2]);
        return value != NULL && strcmp(value, argv[3]) == 0 ? 0 : 1;
    }
    if (strcmp(argv[1], "say") == 0 && argc == 4) {
        puts(argv[3]);
        return atoi(argv[2]);
    }
    if (strcmp(argv[1], "serve") == 0 && argc == 3) {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[2]));
        if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) return 3;
        const char *answer = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for (;;) {
            int c = accept(s, NULL, NULL);
            if (c < 0) continue;
            write(c, answer, strlen(answer));
            close(c);
        }
    }
    return 2;
}
"#;

const TEST_DOCKERFILE: &str =
    "FROM scratch\nCOPY prog /prog\nENTRYPOINT [\"/prog\"]\nCMD [\"sleep\"]\n";

/// How long a docker CLI call may take before the engine counts as wedged.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
const GATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the Docker engine answers. If not: with `CI=true` the test fails here; otherwise
/// it prints why `test` is skipped and returns false, and the test should return.
pub fn docker_ready(test: &str) -> bool {
    static ENGINE: OnceLock<Result<(), String>> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        run_with_timeout(
            &["version", "--format", "{{.Server.APIVersion}}"],
            GATE_TIMEOUT,
        )
        .map(|_| ())
    });
    match engine {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: the Docker engine does not answer and CI=true: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: the Docker engine does not answer ({why}); \
                 set CI=true to make this a failure"
            );
            false
        }
    }
}

/// Runs the docker CLI; its trimmed stdout, or what went wrong.
pub fn docker(args: &[&str]) -> Result<String, String> {
    run_with_timeout(args, CLI_TIMEOUT)
}

/// The test image (`mycluster-test/runtime:<hash>`), built on first use in this process
/// unless the engine already has that tag. Panics when it cannot be built: every test
/// that asks for it needs it.
pub fn test_image() -> String {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    match IMAGE.get_or_init(build_test_image) {
        Ok(image) => image.clone(),
        Err(why) => panic!("cannot build the test image: {why}"),
    }
}

/// A name no other test, process or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// Removes (`docker rm -f`) every container carrying all of its labels when dropped —
/// also when the test panics.
pub struct Cleanup {
    labels: Vec<String>,
}

impl Cleanup {
    /// Everything labelled with all of `labels` (`key`, `value`).
    pub fn by_labels(labels: &[(&str, &str)]) -> Cleanup {
        assert!(
            !labels.is_empty(),
            "a cleanup without labels would remove every container"
        );
        Cleanup {
            labels: labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        }
    }

    pub fn by_label(key: &str, value: &str) -> Cleanup {
        Cleanup::by_labels(&[(key, value)])
    }

    /// Removes the containers now; returns how many there were.
    pub fn run(&self) -> usize {
        let filters: Vec<String> = self.labels.iter().map(|l| format!("label={l}")).collect();
        let mut args = vec!["ps", "-aq"];
        for filter in &filters {
            args.extend(["--filter", filter.as_str()]);
        }
        let ids = match docker(&args) {
            Ok(ids) => ids,
            Err(why) => {
                eprintln!("cleanup {:?}: cannot list containers: {why}", self.labels);
                return 0;
            }
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut rm = vec!["rm", "-f"];
            rm.extend(&ids);
            if let Err(why) = docker(&rm) {
                eprintln!("cleanup {:?}: {why}", self.labels);
            }
        }
        ids.len()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// Removes (`docker volume rm -f`) every volume carrying a label when dropped — also
/// when the test panics. Declare it before the containers' `Cleanup`: a volume in use is
/// removed only once its containers are.
pub struct VolumeCleanup {
    label: String,
}

impl VolumeCleanup {
    pub fn by_label(key: &str, value: &str) -> VolumeCleanup {
        VolumeCleanup {
            label: format!("{key}={value}"),
        }
    }
}

impl Drop for VolumeCleanup {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        match docker(&["volume", "ls", "-q", "--filter", &filter]) {
            Ok(names) => {
                for name in names.split_whitespace() {
                    if let Err(why) = docker(&["volume", "rm", "-f", name]) {
                        eprintln!("cleanup of volumes {}: {why}", self.label);
                    }
                }
            }
            Err(why) => eprintln!("cleanup of volumes {}: cannot list them: {why}", self.label),
        }
    }
}

fn build_test_image() -> Result<String, String> {
    let image = format!(
        "{TEST_IMAGE_REPO}:{:016x}",
        fnv1a(&[TEST_PROGRAM, TEST_DOCKERFILE])
    );
    if docker(&["image", "inspect", "--format", "{{.Id}}", &image]).is_ok() {
        return Ok(image);
    }
    let dir = std::env::temp_dir().join(unique("mycluster-test-image"));
    let built = build_in(&dir, &image);
    let _ = std::fs::remove_dir_all(&dir);
    built.map(|()| image)
}

fn build_in(dir: &Path, image: &str) -> Result<(), String> {
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let source = write("prog.c", TEST_PROGRAM)?;
    write("Dockerfile", TEST_DOCKERFILE)?;
    let output = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("prog"))
        .arg(&source)
        .output()
        .map_err(|e| format!("cannot run gcc: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "gcc failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let context = dir.to_string_lossy();
    docker(&["build", "-q", "-t", image, &context]).map(|_| ())
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Runs `docker args`, killing it after `timeout` so a wedged engine fails a test
/// instead of hanging it.
fn run_with_timeout(args: &[&str], timeout: Duration) -> Result<String, String> {
    let shown = format!("docker {}", args.join(" "));
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    // Read both pipes on their own threads: a full pipe would block the child forever.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{shown}` took more than {timeout:?}"));
            }
            Err(e) => return Err(format!("`{shown}`: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(stdout.trim().to_string())
    } else {
        Err(format!("`{shown}` failed ({status}): {}", stderr.trim()))
    }
}
