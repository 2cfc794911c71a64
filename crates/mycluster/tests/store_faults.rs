//! The embedded store under the faults a real disk has (issue 13): a disk that fills and
//! is freed again, and a store file that is empty, missing, truncated or damaged. The
//! manager must never acknowledge what it did not write, recover without a restart once
//! the disk has room, and refuse a damaged file at start with one clear message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{eventually, manager_refused, unique_mark, Agent, Api, Manager, Monitor};
use serde_json::{json, Value};

fn service(name: &str) -> Value {
    json!({"service": name, "image": "redis:alpine", "replicas": 2})
}

/// A data dir holding a store with a few services, its manager stopped.
async fn data_dir_with_services() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    for i in 0..40 {
        let reply = manager
            .api()
            .post("/api/v1/service?wait=0", &service(&format!("s{i}")))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    assert!(manager.terminate());
    dir
}

fn store_file(dir: &Path) -> PathBuf {
    dir.join("mycluster.redb")
}

/// Starting on `dir` is refused: a non-zero exit, one line naming the file and what to
/// do, and no panic or backtrace.
fn assert_refused_at_start(dir: &Path, why: &str) {
    let (code, stderr) = manager_refused(dir, &[]);
    assert!(
        matches!(code, Some(c) if c != 0),
        "{why}: the manager did not exit with an error (exit {code:?}):\n{stderr}"
    );
    let file = store_file(dir).display().to_string();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{why}: one error line expected:\n{stderr}");
    assert!(errors[0].contains(&file), "{why}: {}", errors[0]);
    assert!(
        errors[0].contains("Restore it from a copy") && errors[0].contains("--init"),
        "{why}: {}",
        errors[0]
    );
    for noise in [
        "panicked",
        "backtrace",
        "RUST_BACKTRACE",
        "waiting for the store",
    ] {
        assert!(!stderr.contains(noise), "{why}: '{noise}' in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_store_is_refused_at_start() {
    let dir = data_dir_with_services().await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(store_file(dir.path()))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 3).unwrap();
    drop(file);
    assert_refused_at_start(dir.path(), "truncated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_a_bad_header_is_refused_at_start() {
    let dir = data_dir_with_services().await;
    let mut bytes = std::fs::read(store_file(dir.path())).unwrap();
    bytes[..64].copy_from_slice(&[0x5a; 64]);
    std::fs::write(store_file(dir.path()), bytes).unwrap();
    assert_refused_at_start(dir.path(), "bad header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_damaged_pages_is_refused_at_start() {
    let dir = data_dir_with_services().await;
    let mut bytes = std::fs::read(store_file(dir.path())).unwrap();
    // The header stays; the B-tree pages behind it get garbage.
    let len = bytes.len();
    for (i, b) in bytes[len / 4..len * 3 / 4].iter_mut().enumerate() {
        *b = b
            .wrapping_mul(7)
            .wrapping_add(13)
            .wrapping_add((i % 251) as u8);
    }
    std::fs::write(store_file(dir.path()), bytes).unwrap();
    assert_refused_at_start(dir.path(), "bad pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_file_is_refused_unless_init() {
    let dir = data_dir_with_services().await;
    std::fs::write(store_file(dir.path()), b"").unwrap();
    assert_refused_at_start(dir.path(), "0 bytes");
    let manager = Manager::start(dir.path(), &["--init"]);
    assert_eq!(manager.api().ok("/api/v1/services").await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_store_in_a_data_dir_that_knew_the_cluster_is_refused_unless_init() {
    // Known by the record a manager leaves in its data dir.
    let dir = data_dir_with_services().await;
    std::fs::remove_file(store_file(dir.path())).unwrap();
    let (code, stderr) = manager_refused(dir.path(), &[]);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("mycluster.redb is missing"), "{stderr}");
    assert!(stderr.contains("--init"), "{stderr}");
    assert!(!store_file(dir.path()).exists(), "an empty store was made");
    // Known by the cluster's tokens in it.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("api-token"),
        "a-token-of-this-cluster-0123456",
    )
    .unwrap();
    let (code, stderr) = manager_refused(other.path(), &[]);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("mycluster.redb is missing"), "{stderr}");
    // --init starts it empty; a new data dir needs nothing.
    let manager = Manager::start(dir.path(), &["--init"]);
    assert_eq!(manager.api().ok("/api/v1/services").await, json!([]));
    let fresh = tempfile::tempdir().unwrap();
    Manager::start(fresh.path(), &[]);
}

/// The disk behind the manager's data dir: a tmpfs of its own, in a mount namespace of
/// its own (so nothing is left mounted if the test dies), reached through the manager's
/// `/proc/<pid>/root`.
struct SmallDisk {
    manager: Manager,
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A manager whose data dir is a 4 MiB tmpfs; `None` (after saying so, or failing
    /// under CI=true) where this machine cannot make one.
    fn start() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "mount -t tmpfs -o size=4m mycluster-test {dir} && exec {bin} manager --listen 127.0.0.1:0 --name test --data-dir {dir}",
            dir = dir.path().display(),
            bin = common::BIN
        );
        let usable = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs -o size=1m t /mnt",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if !usable {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot mount a tmpfs in a mount namespace (unshare -m), and CI=true: the disk-full test must run");
            }
            eprintln!("SKIP: cannot mount a tmpfs in a mount namespace (needs root and unshare)");
            return None;
        }
        let mut command = Command::new("unshare");
        command.args(["-m", "--propagation", "private", "sh", "-c", &script]);
        common::with_tokens(&mut command);
        let manager = Manager::from_command(command);
        Some(SmallDisk { manager, dir })
    }

    /// The data dir as seen from outside the manager's mount namespace.
    fn inside(&self) -> PathBuf {
        Path::new("/proc")
            .join(self.manager.pid().to_string())
            .join("root")
            .join(self.dir.path().strip_prefix("/").unwrap())
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.inside().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = file.write_all(&block).and_then(|()| file.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
                break;
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.inside().join("filler")).unwrap();
    }
}

fn libc_enospc() -> i32 {
    28
}

async fn worker_status(api: &Api, worker: &str) -> String {
    api.ok(&format!("/api/v1/workers/{worker}")).await["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_then_writes_and_relocations_resume_without_a_restart() {
    let Some(disk) = SmallDisk::start() else {
        return;
    };
    let api = disk.manager.api();
    let url = disk.manager.url.clone();
    let pid = disk.manager.pid();
    let w1 = Agent::start(&url, "disk_worker_1", "process", &[]);
    let w2 = Agent::start(&url, "disk_worker_2", "process", &[]);
    common::ready_workers(&api, 2).await;
    let monitor = Monitor::start(&url);
    let mark = unique_mark("disk");
    let body = json!({"service": "sleeper", "command": ["sleep", "3600"], "replicas": 2,
                      "env": {"TEST_MARK": mark}});
    assert_eq!(api.post("/api/v1/service", &body).await.status, 201);
    eventually("a replica on each worker", || async {
        let on: std::collections::BTreeSet<String> = common::workloads(&mark)
            .into_iter()
            .map(|w| w.worker)
            .collect();
        (on.len() == 2).then_some(())
    })
    .await;

    disk.fill();
    // A change that still fits in pages the store's file had freed is written (and
    // durable); the first that needs the disk is refused, not acknowledged.
    let mut refused = None;
    for i in 0..100 {
        let reply = api
            .post("/api/v1/service?wait=0", &service(&format!("during-{i}")))
            .await;
        match reply.status {
            201 => continue,
            503 => {
                refused = Some(reply.body["message"].as_str().unwrap().to_string());
                break;
            }
            other => panic!("create during-{i}: {other} {}", reply.body),
        }
    }
    let message = refused.expect("100 creates on a full disk were all acknowledged");
    assert!(message.contains("No space left on device"), "{message}");
    // From then on nothing is written until the disk has room.
    let health = api.get("/healthz").await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.body["status"], "degraded");
    let reply = api
        .post("/api/v1/service?wait=0", &service("refused"))
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);

    // A worker dies while the disk is full: its relocation cannot be written yet, but
    // the living worker's heartbeats keep it ready meanwhile (they need no write).
    w2.kill9();
    eventually(
        "the monitor to try to relocate disk_worker_2's services",
        || async {
            monitor
                .log_text()
                .contains("Could not relocate the services of disk_worker_2")
                .then_some(())
        },
    )
    .await;
    assert_eq!(worker_status(&api, "disk_worker_1").await, "ready");
    assert_eq!(worker_status(&api, "disk_worker_2").await, "ready");
    assert_eq!(api.get("/healthz").await.status, 503);

    // Room again: the same manager writes again, and the relocation goes through.
    disk.free();
    eventually("disk_worker_2 declared down", || async {
        (worker_status(&api, "disk_worker_2").await == "down").then_some(())
    })
    .await;
    eventually("both replicas on disk_worker_1", || async {
        let on: Vec<String> = common::workloads(&mark)
            .into_iter()
            .map(|w| w.worker)
            .collect();
        (on == ["disk_worker_1", "disk_worker_1"]).then_some(())
    })
    .await;
    assert_eq!(
        api.post("/api/v1/service?wait=0", &service("after"))
            .await
            .status,
        201
    );
    assert_eq!(api.ok("/healthz").await["status"], "ok");
    assert_eq!(disk.manager.pid(), pid);
    let log = disk.manager.log_text();
    assert!(log.contains("reopened and verified"), "{log}");
    drop(w1);
}
