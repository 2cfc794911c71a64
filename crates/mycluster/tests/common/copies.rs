//! Samplers of the copies of each slot that really run, read from the OS every 50 ms:
//! what "no moment with two copies of a slot" and "a cut-off copy is gone within 1 s"
//! are measured on (the manager's own view is not the thing under test).
//!
//! A copy is a task of a service's slot that runs:
//! - on the process driver, a live process whose environment holds the test's mark
//!   (`TEST_MARK=<mark>`) and the variables the agent gives every workload
//!   (`MYCLUSTER_SERVICE`, `MYCLUSTER_SLOT`, the process driver's `MYCLUSTER_TASK` and
//!   `MYCLUSTER_WORKER`). Processes of one task count once; a process that exists (not a
//!   zombie) runs, whatever it was asked to do: one being stopped still runs;
//! - on Docker, a container in state `running` carrying the cluster's labels
//!   (`mycluster.cluster`, `mycluster.role=workload`, `mycluster.service`,
//!   `mycluster.task`, `mycluster.worker`); its slot is in its name
//!   (`<service>.<slot>.<task>`). Listed through the engine's API on its unix socket (a
//!   `docker ps` takes about as long as the period itself).
//!
//! A `Sampler` reads its source every period on a thread of its own and keeps, over the
//! whole run: the most copies any slot had at one sample, each episode of a slot with
//! more than one (which tasks, from when to when), and when each task was first seen,
//! last seen, and first missed. The sample's time is when its read ended, so a copy's
//! "gone" time is late by at most one period plus one read, never early.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The period the tests ask for.
pub const PERIOD: Duration = Duration::from_millis(50);

/// One running copy of a slot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Copy {
    pub service: String,
    pub slot: u32,
    pub task: String,
    pub worker: String,
}

/// Where copies are read from.
pub trait Source: Send + 'static {
    /// Every copy running now, or why they could not be read (that sample is skipped).
    fn copies(&mut self) -> Result<Vec<Copy>, String>;
}

/// The processes of the process driver that carry `TEST_MARK=<mark>`.
pub struct Processes {
    pub mark: String,
}

impl Source for Processes {
    fn copies(&mut self) -> Result<Vec<Copy>, String> {
        let wanted = format!("TEST_MARK={}", self.mark);
        let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
        let mut found = BTreeSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // A zombie's environment reads empty, and a process gone meanwhile fails:
            // neither runs.
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            if !vars.contains(&wanted.as_bytes()) {
                continue;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.is_empty() || status.contains("State:\tZ") {
                continue;
            }
            let var = |name: &str| -> Option<String> {
                let prefix = format!("{name}=");
                vars.iter().find_map(|v| {
                    v.strip_prefix(prefix.as_bytes())
                        .map(|value| String::from_utf8_lossy(value).into_owned())
                })
            };
            let (Some(service), Some(slot), Some(task)) = (
                var("MYCLUSTER_SERVICE"),
                var("MYCLUSTER_SLOT").and_then(|s| s.parse().ok()),
                var("MYCLUSTER_TASK").or_else(|| var("MYCLUSTER_TASK_ID")),
            ) else {
                continue;
            };
            found.insert(Copy {
                service,
                slot,
                task,
                worker: var("MYCLUSTER_WORKER").unwrap_or_default(),
            });
        }
        Ok(found.into_iter().collect())
    }
}

/// The running workload containers of a cluster, from the Docker engine's API.
pub struct Containers {
    pub cluster: String,
    socket: PathBuf,
}

impl Containers {
    /// The engine of `DOCKER_HOST` (a `unix://` one) or the default socket.
    pub fn new(cluster: &str) -> Containers {
        let socket = match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
                Some(path) => PathBuf::from(path),
                None => panic!("the container sampler reads the engine on a unix socket, and DOCKER_HOST is {host}"),
            },
            _ => PathBuf::from("/var/run/docker.sock"),
        };
        Containers {
            cluster: cluster.to_string(),
            socket,
        }
    }

    /// `GET path` on the engine: the JSON body of a 200.
    fn get(&self, path: &str) -> Result<Value, String> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("{}: {e}", self.socket.display()))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        // HTTP/1.0: the engine answers with the whole body and closes (no chunks).
        write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        let at = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no end of headers")?;
        let head = String::from_utf8_lossy(&answer[..at]);
        let body = &answer[at + 4..];
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{head}\n{}", String::from_utf8_lossy(body)));
        }
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))
    }
}

/// `text` as a URL query value.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Source for Containers {
    fn copies(&mut self) -> Result<Vec<Copy>, String> {
        let filters = serde_json::json!({
            "label": [
                format!("mycluster.cluster={}", self.cluster),
                "mycluster.role=workload",
            ],
            "status": ["running"],
        });
        let listed = self.get(&format!(
            "/containers/json?filters={}",
            percent_encoded(&filters.to_string())
        ))?;
        let mut found = BTreeSet::new();
        for container in listed.as_array().ok_or("not a list")? {
            if container["State"] != "running" {
                continue;
            }
            let label = |name: &str| container["Labels"][name].as_str().map(str::to_owned);
            let name = container["Names"][0]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/');
            let slot = label("mycluster.slot")
                .and_then(|s| s.parse().ok())
                .or_else(|| name.split('.').nth(1).and_then(|s| s.parse().ok()));
            let (Some(service), Some(slot), Some(task)) =
                (label("mycluster.service"), slot, label("mycluster.task"))
            else {
                continue;
            };
            found.insert(Copy {
                service,
                slot,
                task,
                worker: label("mycluster.worker").unwrap_or_default(),
            });
        }
        Ok(found.into_iter().collect())
    }
}

/// What the sampler knows of one task.
#[derive(Clone, Debug)]
pub struct Seen {
    pub copy: Copy,
    pub first: Instant,
    pub last: Instant,
    /// The first sample that missed it after it had been seen: it was gone by then.
    pub gone: Option<Instant>,
}

/// A slot with more than one copy, over consecutive samples.
#[derive(Clone, Debug)]
pub struct Episode {
    pub service: String,
    pub slot: u32,
    pub copies: Vec<Copy>,
    pub from: Instant,
    pub to: Instant,
    pub samples: u64,
}

/// Everything a sampler saw.
#[derive(Clone, Debug)]
pub struct Record {
    pub started: Instant,
    pub samples: u64,
    /// Reads that failed (skipped, so they neither add nor remove copies).
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_at: Option<Instant>,
    /// When the latest read began.
    pub last_began: Option<Instant>,
    /// The longest time between two samples: the sampler's real resolution.
    pub longest_gap: Duration,
    /// Every time between two samples, in order.
    pub gaps: Vec<Duration>,
    /// The longest single read.
    pub longest_read: Duration,
    pub latest: Vec<Copy>,
    /// The most copies each (service, slot) had at any sample.
    pub most: BTreeMap<(String, u32), usize>,
    /// Every episode of a slot with two copies or more, oldest first.
    pub episodes: Vec<Episode>,
    pub tasks: HashMap<String, Seen>,
}

impl Record {
    fn new() -> Record {
        Record {
            started: Instant::now(),
            samples: 0,
            errors: 0,
            last_error: None,
            last_at: None,
            last_began: None,
            longest_gap: Duration::ZERO,
            gaps: Vec::new(),
            longest_read: Duration::ZERO,
            latest: Vec::new(),
            most: BTreeMap::new(),
            episodes: Vec::new(),
            tasks: HashMap::new(),
        }
    }

    fn note(&mut self, copies: Vec<Copy>, began: Instant, at: Instant) {
        let previous = self.last_at;
        if let Some(last) = previous {
            self.longest_gap = self.longest_gap.max(at - last);
            self.gaps.push(at - last);
        }
        self.longest_read = self.longest_read.max(at - began);
        self.last_began = Some(began);
        self.samples += 1;
        self.last_at = Some(at);
        let mut per_slot: BTreeMap<(String, u32), Vec<Copy>> = BTreeMap::new();
        for copy in &copies {
            per_slot
                .entry((copy.service.clone(), copy.slot))
                .or_default()
                .push(copy.clone());
            self.tasks
                .entry(copy.task.clone())
                .and_modify(|seen| seen.last = at)
                .or_insert_with(|| Seen {
                    copy: copy.clone(),
                    first: at,
                    last: at,
                    gone: None,
                });
        }
        let running: BTreeSet<&str> = copies.iter().map(|c| c.task.as_str()).collect();
        for (task, seen) in self.tasks.iter_mut() {
            if seen.gone.is_none() && !running.contains(task.as_str()) {
                seen.gone = Some(at);
            }
        }
        for ((service, slot), slot_copies) in per_slot {
            let most = self.most.entry((service.clone(), slot)).or_insert(0);
            *most = (*most).max(slot_copies.len());
            if slot_copies.len() < 2 {
                continue;
            }
            // The same copies as an episode that lasted until the previous sample carry
            // it on; anything else opens one.
            let ongoing = self.episodes.iter_mut().rev().find(|e| {
                e.service == service
                    && e.slot == slot
                    && e.copies == slot_copies
                    && Some(e.to) == previous
            });
            match ongoing {
                Some(episode) => {
                    episode.to = at;
                    episode.samples += 1;
                }
                None => self.episodes.push(Episode {
                    service,
                    slot,
                    copies: slot_copies,
                    from: at,
                    to: at,
                    samples: 1,
                }),
            }
        }
        self.latest = copies;
    }

    /// The gap between two samples that `fraction` (0..=1) of the gaps do not exceed.
    pub fn gap_quantile(&self, fraction: f64) -> Duration {
        let mut gaps = self.gaps.clone();
        gaps.sort();
        let at = ((gaps.len() as f64 - 1.0) * fraction).round().max(0.0) as usize;
        gaps.get(at).copied().unwrap_or_default()
    }

    /// The most copies any slot of `service` had at one sample.
    pub fn most_copies(&self, service: &str) -> usize {
        self.most
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    /// The episodes of `service` with two copies of a slot or more.
    pub fn episodes_of(&self, service: &str) -> Vec<&Episode> {
        self.episodes
            .iter()
            .filter(|e| e.service == service)
            .collect()
    }

    /// The copies of the latest sample running on `worker`.
    pub fn on_worker(&self, worker: &str) -> Vec<Copy> {
        self.latest
            .iter()
            .filter(|c| c.worker == worker)
            .cloned()
            .collect()
    }

    /// The latest sample's copies of `service`, by slot.
    pub fn slots(&self, service: &str) -> BTreeMap<u32, Vec<Copy>> {
        let mut slots: BTreeMap<u32, Vec<Copy>> = BTreeMap::new();
        for copy in self.latest.iter().filter(|c| c.service == service) {
            slots.entry(copy.slot).or_default().push(copy.clone());
        }
        slots
    }

    /// Whether the latest sample of `service` has exactly one copy of each slot
    /// `0..replicas` and nothing else.
    pub fn exactly(&self, service: &str, replicas: u32) -> bool {
        let slots = self.slots(service);
        slots.len() == replicas as usize
            && slots.values().all(|c| c.len() == 1)
            && slots.keys().copied().eq(0..replicas)
    }

    /// When `task` was first missed, if it has been.
    pub fn gone(&self, task: &str) -> Option<Instant> {
        self.tasks.get(task).and_then(|seen| seen.gone)
    }

    /// Seconds since the sampler started, for messages.
    pub fn offset(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64()
    }

    /// One line per episode of `service`, for messages.
    pub fn describe_episodes(&self, service: &str) -> String {
        self.episodes_of(service)
            .iter()
            .map(|e| {
                let copies: Vec<String> = e
                    .copies
                    .iter()
                    .map(|c| format!("{} on {}", c.task, c.worker))
                    .collect();
                format!(
                    "{} slot {}: {} copies ({}) from +{:.2}s to +{:.2}s, {} samples",
                    e.service,
                    e.slot,
                    e.copies.len(),
                    copies.join(", "),
                    self.offset(e.from),
                    self.offset(e.to),
                    e.samples
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Reads a `Source` every period on a thread of its own until stopped (or dropped).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    handle: Option<JoinHandle<()>>,
    pub period: Duration,
}

impl Sampler {
    /// Starts sampling `source` every `period` (as fast as it can when a read takes
    /// longer: see `Record::longest_gap`).
    pub fn start(mut source: impl Source, period: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::new()));
        let handle = std::thread::Builder::new()
            .name("copies sampler".into())
            .spawn({
                let (stop, record) = (stop.clone(), record.clone());
                move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        let began = Instant::now();
                        let read = source.copies();
                        let at = Instant::now();
                        {
                            let mut record = record.lock().unwrap_or_else(|p| p.into_inner());
                            match read {
                                Ok(copies) => record.note(copies, began, at),
                                Err(why) => {
                                    record.errors += 1;
                                    record.last_error = Some(why);
                                }
                            }
                        }
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            // Behind: the next read at once, and the schedule from now.
                            next = now;
                        }
                    }
                }
            })
            .expect("spawn the sampler");
        Sampler {
            stop,
            record,
            handle: Some(handle),
            period,
        }
    }

    /// What it saw so far.
    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of what it saw so far.
    pub fn snapshot(&self) -> Record {
        self.record().clone()
    }

    /// Waits for a sample whose read began after this call: copies surely read after
    /// whatever the caller did before.
    pub async fn fresh(&self) -> Record {
        let asked = Instant::now();
        loop {
            {
                let record = self.record();
                if record.last_began.is_some_and(|began| began >= asked) {
                    return record.clone();
                }
                assert!(
                    asked.elapsed() < super::DEADLINE,
                    "the sampler took no sample for {:?}: {:?}",
                    super::DEADLINE,
                    record.last_error
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops it; everything it saw.
    pub fn finish(mut self) -> Record {
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.halt();
    }
}
