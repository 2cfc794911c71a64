//! Docker test support: the engine gate (a test fails under `CI=true` when the engine is
//! missing, and skips elsewhere), a `FROM scratch` image holding a statically linked
//! `mycluster` built once per run, and cleanup of everything a test labelled.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Whether the Docker engine answers. Under `CI=true` a missing engine is a failure.
pub fn engine_or_skip(test: &str) -> bool {
    let up = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: the Docker engine does not answer, and CI=true: docker tests must run");
        }
        eprintln!("SKIP {test}: the Docker engine does not answer");
    }
    up
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// A statically linked `mycluster` (it runs in a `FROM scratch` image), built once per
/// test process into `target/static`.
pub fn static_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target/static");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--bin",
                "mycluster",
                "--profile",
                "image",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .expect("run cargo to build the static binary");
        assert!(
            status.success(),
            "building the static mycluster binary failed"
        );
        target_dir.join("x86_64-unknown-linux-gnu/image/mycluster")
    })
}

/// The image `mycluster/hello-world:test`, `FROM scratch` with the static binary, whose
/// default command serves "Hello World" on port 8000. Built once per test process.
pub fn test_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let binary = static_binary();
        let context = tempfile::tempdir().expect("tempdir");
        std::fs::copy(binary, context.path().join("mycluster")).expect("copy binary");
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY mycluster /mycluster\nEXPOSE 8000\n\
             ENTRYPOINT [\"/mycluster\"]\nCMD [\"hello\", \"--port\", \"8000\"]\n",
        )
        .expect("Dockerfile");
        let tag = "mycluster/hello-world:test";
        let status = Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(context.path())
            .status()
            .expect("docker build");
        assert!(status.success(), "docker build of {tag} failed");
        tag.to_string()
    })
}

/// `docker ARGS...`: what it printed on stdout, trimmed.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Removes everything labelled with the cluster (containers, networks, volumes) when
/// dropped, whatever state the test left it in: what a `setup` cluster makes.
pub struct Teardown(pub String);

impl Drop for Teardown {
    fn drop(&mut self) {
        let label = format!("label=mycluster.cluster={}", self.0);
        // An agent still running while the list is read may create a workload after it:
        // list again until nothing is left (a few passes at most).
        for _ in 0..10 {
            let ids = docker(&["ps", "-aq", "--filter", &label]);
            if ids.trim().is_empty() {
                break;
            }
            for id in ids.lines() {
                docker(&["rm", "-f", id]);
            }
        }
        for id in docker(&["network", "ls", "-q", "--filter", &label]).lines() {
            docker(&["network", "rm", id]);
        }
        for name in docker(&["volume", "ls", "-q", "--filter", &label]).lines() {
            docker(&["volume", "rm", "-f", name]);
        }
    }
}

/// Removes every container labelled `mycluster.cluster=<cluster>` when dropped, so a
/// failing test leaves nothing behind.
pub struct Cleanup {
    pub cluster: String,
}

impl Cleanup {
    pub fn new(cluster: &str) -> Cleanup {
        let cleanup = Cleanup {
            cluster: cluster.to_string(),
        };
        cleanup.run();
        cleanup
    }

    /// Removes them, listing again until none is left (an agent still running may
    /// create one after a list was read; a few passes at most).
    pub fn run(&self) {
        for _ in 0..10 {
            let ids = containers(&self.cluster);
            if ids.is_empty() {
                break;
            }
            for id in ids {
                let _ = Command::new("docker").args(["rm", "-f", &id]).output();
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// Ids of the containers labelled with this cluster, running or not.
pub fn containers(cluster: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=mycluster.cluster={cluster}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Running containers of this cluster, as (name, worker label).
pub fn running(cluster: &str) -> Vec<(String, String)> {
    let output = Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=mycluster.cluster={cluster}"),
            "--format",
            "{{.Names}}\t{{.Label \"mycluster.worker\"}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, w)| (n.to_string(), w.to_string()))
        .collect()
}

/// A container's IP address on its network (reachable from the host).
pub fn container_ip(container: &str) -> String {
    let output = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
