//! The process driver's log files: lines of both streams in order, `tail`, `since`,
//! following new lines, rotation within the bound, and the files gone with the task.

// Only its helpers are used here, not its cases.
#[allow(dead_code, unused_imports)]
mod conformance;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conformance::{collect, spec, wait_for};
use mycluster_runtime::{
    Container, ContainerRuntime, ContainerState, Identity, LogFiles, LogOptions, OutputStream,
    ProcessRuntime, Supervisor,
};

fn runtime(test: &str, files: LogFiles) -> ProcessRuntime {
    let identity = Identity {
        cluster: format!("logs-{test}-{}", std::process::id()),
        worker: "w1".into(),
    };
    ProcessRuntime::new(
        identity,
        Supervisor::new(env!("CARGO_BIN_EXE_mycluster-supervise"), [""; 0]),
    )
    .with_logs(files)
}

async fn started(runtime: &ProcessRuntime, task: &str, script: &str) -> Container {
    runtime
        .start(&spec(task, None, Some(vec!["sh", "-c", script])))
        .await
        .expect("start");
    let list = wait_for(runtime, "the task", |l| l.iter().any(|c| c.task_id == task)).await;
    list.into_iter()
        .find(|c| c.task_id == task)
        .expect("listed")
}

/// Waits (generously) until `check` holds of the task's lines.
async fn lines_until(
    runtime: &ProcessRuntime,
    container: &Container,
    what: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let started = Instant::now();
    loop {
        let lines = collect(runtime.logs(container, &LogOptions::default()).await)
            .await
            .expect("logs");
        let texts: Vec<String> = lines.into_iter().map(|l| l.text).collect();
        if check(&texts) {
            return texts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_streams_in_order_with_tail_and_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime("order", LogFiles::new(dir.path()));
    let script = "echo one; echo two >&2; sleep 0.2; echo three; printf 'no end of line'";
    let container = started(&runtime, "t1", script).await;
    wait_for(&runtime, "the task to exit", |l| {
        l.iter()
            .any(|c| matches!(c.state, ContainerState::Exited { .. }))
    })
    .await;
    let all = collect(
        runtime
            .logs(
                &container,
                &LogOptions {
                    follow: true,
                    ..LogOptions::default()
                },
            )
            .await,
    )
    .await
    .expect("logs");
    let texts: Vec<(&str, OutputStream)> =
        all.iter().map(|l| (l.text.as_str(), l.stream)).collect();
    assert_eq!(texts[2], ("three", OutputStream::Stdout), "{texts:?}");
    assert_eq!(
        texts[3],
        ("no end of line", OutputStream::Stdout),
        "{texts:?}"
    );
    assert!(
        texts[..2].contains(&("one", OutputStream::Stdout)),
        "{texts:?}"
    );
    assert!(
        texts[..2].contains(&("two", OutputStream::Stderr)),
        "{texts:?}"
    );
    assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
    let tail = LogOptions {
        tail: Some(2),
        ..LogOptions::default()
    };
    let last: Vec<String> = collect(runtime.logs(&container, &tail).await)
        .await
        .expect("logs")
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(last, ["three", "no end of line"]);
    let since = LogOptions {
        since: Some(all[2].time),
        ..LogOptions::default()
    };
    let after: Vec<String> = collect(runtime.logs(&container, &since).await)
        .await
        .expect("logs")
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(after, ["three", "no end of line"]);
    // Removed with the task.
    let task_dir = dir.path().join("t1");
    assert!(task_dir.join("stdout.log").exists());
    runtime.remove(&container, None).await.expect("remove");
    let deadline = Instant::now() + Duration::from_secs(60);
    while task_dir.exists() {
        assert!(Instant::now() < deadline, "the logs outlived the task");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_gives_new_lines_until_the_task_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime("follow", LogFiles::new(dir.path()));
    // Prints a line each time the mark file shows up (taken away first, so the next
    // one is not lost), then ends when told.
    let mark = dir.path().join("go");
    let script = format!(
        "i=0; while [ ! -e {m}.end ]; do if [ -e {m} ]; then rm {m}; echo line $i; i=$((i+1)); fi; sleep 0.02; done; echo bye",
        m = mark.display()
    );
    let container = started(&runtime, "t2", &script).await;
    let mut lines = runtime
        .logs(
            &container,
            &LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )
        .await
        .expect("logs");
    for i in 0..3 {
        std::fs::write(&mark, "").expect("mark");
        let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
            .await
            .expect("a new line in time")
            .expect("open")
            .expect("a line");
        assert_eq!(line.text, format!("line {i}"));
    }
    std::fs::write(format!("{}.end", mark.display()), "").expect("end");
    let last = tokio::time::timeout(Duration::from_secs(60), lines.recv())
        .await
        .expect("the last line in time")
        .expect("open")
        .expect("a line");
    assert_eq!(last.text, "bye");
    // The task ended: so does the stream.
    let end = tokio::time::timeout(Duration::from_secs(60), lines.recv())
        .await
        .expect("the end in time");
    assert!(end.is_none(), "{end:?}");
    runtime.remove(&container, None).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_files_under_the_bound_and_followers_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = LogFiles {
        max_bytes: 4096,
        files: 2,
        ..LogFiles::new(dir.path())
    };
    let runtime = runtime("rotation", files);
    // Bursts of 60 numbered lines (about 2.7 KiB, less than a file), one each time the
    // mark shows up: some twenty rotations in all. A follower that keeps up (it is let
    // read each burst before the next) sees every line once, in order, across them.
    let mark = dir.path().join("go");
    let script = format!(
        "i=0; while [ $i -lt 1800 ]; do if [ -e {m} ]; then rm {m}; j=0; while [ $j -lt 60 ]; do echo \"line $i of a fairly long run\"; i=$((i+1)); j=$((j+1)); done; fi; sleep 0.01; done; sleep 300",
        m = mark.display()
    );
    let container = started(&runtime, "t3", &script).await;
    let mut follower = runtime
        .logs(
            &container,
            &LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )
        .await
        .expect("logs");
    let number = |text: &str| -> u32 {
        text.split(' ')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("numbered")
    };
    let mut expected = 0;
    while expected < 1800 {
        std::fs::write(&mark, "").expect("mark");
        for _ in 0..60 {
            let line = tokio::time::timeout(Duration::from_secs(60), follower.recv())
                .await
                .expect("the next line in time")
                .expect("open")
                .expect("a line");
            assert_eq!(number(&line.text), expected, "{line:?}");
            expected += 1;
        }
    }
    // Within the bound: two files of at most 4 KiB per stream.
    let task_dir = dir.path().join("t3");
    let kept = lines_until(&runtime, &container, "the last line", |t| {
        t.last().is_some_and(|l| l.starts_with("line 1799 "))
    })
    .await;
    for file in files_in(&task_dir) {
        let size = std::fs::metadata(&file).expect("size").len();
        assert!(size <= 4096, "{} holds {size} bytes", file.display());
    }
    let names: Vec<String> = files_in(&task_dir)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, ["stderr.log", "stdout.log", "stdout.log.1"]);
    // What is kept is the latest lines, in order, with none missing between.
    let numbers: Vec<u32> = kept.iter().map(|t| number(t)).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert!(numbers.len() > 50, "{} lines kept", numbers.len());
    runtime.remove(&container, None).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_removes_what_a_dead_agent_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let left = dir.path().join("old-task");
    std::fs::create_dir_all(&left).expect("mkdir");
    std::fs::write(left.join("stdout.log"), "1 old\n").expect("write");
    let runtime = runtime("leftovers", LogFiles::new(dir.path()));
    let _ = runtime.list().await.expect("list");
    assert!(!left.exists(), "the old logs are gone");
}
