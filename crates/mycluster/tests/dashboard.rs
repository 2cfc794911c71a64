//! The web dashboard (`/ui/`) in a real headless Chromium, driven through Debian's
//! chromedriver with thirtyfour, against a real manager, monitor and three process
//! agents: a wrong token is refused with a clear message; the page signs in, creates a
//! service from its form and sees it reach running; when a worker's agent is killed it
//! shows, without reloading, the worker down and its task running elsewhere; a 401 later
//! returns to the sign-in form; a phone-sized window renders the services view; the
//! service is deleted from its page; and no page source, URL, cookie, localStorage or
//! console line ever holds the token. Screenshots of every view go to
//! `<target>/dashboard/`; with `MYCLUSTER_UPDATE_SCREENSHOT=1` the map is also copied to
//! `docs/dashboard.png` for the README.
//!
//! Needs `chromium` and `chromium-driver` (Debian; `.ci/run` installs them): without them
//! the test fails under `CI=true` and is skipped otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, ready_workers, unique_mark, workloads, Agent, Manager, Monitor};
use common::{BIN, DEADLINE, TEST_TOKEN};
use serde_json::Value;
use thirtyfour::prelude::*;
use thirtyfour::LoggingPrefsLogLevel;

const WRONG_TOKEN: &str = "not-the-cluster-token-0123456789";
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// An executable found on the PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, or the test cannot run here.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = on_path(&["chromium", "chromium-browser"])?;
    let driver = on_path(&["chromedriver"])?;
    Some((chromium, driver))
}

/// A chromedriver of this test's own, on a free port, with the browser profile it
/// starts Chromium on. Dropping it kills the driver and every Chromium process of that
/// profile, so a failing test leaves no browser behind.
struct ChromeDriver {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start(program: &Path) -> ChromeDriver {
        let port = mycluster_relay::free_port().expect("a free port");
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().expect("a profile dir"),
        };
        let status = format!("{}/status", driver.url);
        eventually("chromedriver to be ready", || {
            let status = status.clone();
            async move {
                let body: Value = mycluster_client::reqwest_builder()
                    .build()
                    .unwrap()
                    .get(&status)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (body["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium outlives a killed driver: find it by its profile directory.
        let profile = self.profile.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Where the screenshots go: `<target>/dashboard/`.
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            // The test binary is `<target>/<profile>/deps/dashboard-<hash>`.
            let exe = std::env::current_exe().ok()?;
            exe.ancestors().nth(3).map(Path::to_path_buf)
        })
        .expect("a target directory");
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).expect("the screenshot dir");
    dir
}

/// The browser under test, and what it checks after each view.
struct Page {
    driver: WebDriver,
    shots: PathBuf,
    taken: Vec<PathBuf>,
}

impl Page {
    /// Runs `script` in the page and returns what it returned.
    async fn js(&self, script: &str) -> Value {
        self.driver
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
            .json()
            .clone()
    }

    /// Waits until `script` returns something truthy (no reload: the page is polled).
    async fn until(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.js(script).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if started.elapsed() > DEADLINE {
                let text = self.js("return document.body.innerText").await;
                panic!("timed out waiting for {what}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.driver
            .find(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .driver
            .find(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    /// Goes to a view by its hash, as a link would (no reload).
    async fn route(&self, hash: &str) {
        self.js(&format!(
            "location.hash = {}; return true",
            Value::from(hash)
        ))
        .await;
    }

    /// A screenshot of what is shown, after checking that the token is nowhere in it.
    async fn shot(&mut self, name: &str) -> PathBuf {
        self.no_secret_shown().await;
        let path = self
            .shots
            .join(format!("{:02}-{name}.png", self.taken.len() + 1));
        self.driver.screenshot(&path).await.expect("a screenshot");
        self.taken.push(path.clone());
        path
    }

    /// The token is in no page source, URL, cookie or localStorage.
    async fn no_secret_shown(&self) {
        let source = self.driver.source().await.expect("the page source");
        let url = self
            .driver
            .current_url()
            .await
            .expect("the URL")
            .to_string();
        for secret in [TEST_TOKEN, WRONG_TOKEN] {
            assert!(!source.contains(secret), "the page source holds a token");
            assert!(!url.contains(secret), "the URL holds a token: {url}");
        }
        let kept = self
            .js("return [document.cookie, localStorage.length, location.href]")
            .await;
        assert_eq!(kept[0], "", "no cookie");
        assert_eq!(kept[1], 0, "nothing in localStorage");
    }

    /// The browser's console and network log so far: none of it holds a token.
    async fn no_secret_logged(&self) -> Vec<String> {
        let lines: Vec<String> = self
            .driver
            .browser_log()
            .await
            .expect("the browser log")
            .into_iter()
            .map(|e| format!("{} {}", e.level, e.message))
            .collect();
        for line in &lines {
            assert!(
                !line.contains(TEST_TOKEN) && !line.contains(WRONG_TOKEN),
                "the console holds a token: {line}"
            );
        }
        lines
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_creates_a_service_and_follows_a_failover_live() {
    let Some((chromium, chromedriver)) = browser() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium or chromedriver is missing, and CI=true: .ci/run installs them");
        }
        eprintln!("SKIP: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
        return;
    };

    // A real cluster: a manager, its monitor and three process agents.
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "dashboard");
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);
    let mut agents: Vec<Agent> = WORKERS
        .iter()
        .map(|name| Agent::start(&manager.url, name, "process", &[]))
        .collect();
    ready_workers(&api, WORKERS.len()).await;
    let mark = unique_mark("dashboard");
    let has_events = mycluster_client::reqwest_builder()
        .build()
        .unwrap()
        .get(format!("{}/api/v1/events", manager.url))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .map(|r| r.status() != 404)
        .unwrap_or(false);

    let chrome = ChromeDriver::start(&chromedriver).await;
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(&chromium.to_string_lossy())
        .expect("binary");
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1280,900",
        &format!("--user-data-dir={}", chrome.profile.path().display()),
    ] {
        caps.add_arg(arg).expect("an argument");
    }
    caps.set_browser_log_level(LoggingPrefsLogLevel::All)
        .expect("logging");
    let _ = mycluster_client::reqwest_builder();
    let driver = WebDriver::new(&chrome.url, caps)
        .await
        .expect("a browser session");
    let mut page = Page {
        driver,
        shots: screenshots(),
        taken: Vec::new(),
    };

    // `/` leads to the dashboard, which asks for the token.
    page.driver
        .goto(format!("{}/", manager.url))
        .await
        .expect("open the manager");
    page.until(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
    )
    .await;
    assert_eq!(page.js("return location.pathname").await, "/ui/");
    page.shot("signin").await;

    // A wrong token is refused, in words.
    page.type_into("#token", WRONG_TOKEN).await;
    page.click("#signin-submit").await;
    let refused = page
        .until(
            "the sign-in error",
            "return document.getElementById('signin-error').textContent",
        )
        .await;
    assert!(
        refused
            .as_str()
            .is_some_and(|m| m.contains("The manager refused this token")),
        "{refused}"
    );
    assert_eq!(
        page.js("return sessionStorage.length").await,
        0,
        "a refused token is not kept"
    );
    page.shot("wrong-token").await;

    // The right one opens the services view.
    page.type_into("#token", TEST_TOKEN).await;
    page.click("#signin-submit").await;
    page.until(
        "the empty services view",
        "return document.querySelector('#services-list .empty')",
    )
    .await;
    assert_eq!(
        page.js("return sessionStorage.getItem('mycluster.token')")
            .await,
        TEST_TOKEN,
        "kept for this tab only"
    );
    assert_eq!(
        page.js("return document.getElementById('token').value")
            .await,
        "",
        "the field does not keep it"
    );
    let footer = page
        .until(
            "the live status",
            "return document.getElementById('live').textContent.startsWith('Live') && document.getElementById('live').textContent",
        )
        .await;
    let footer = footer.as_str().unwrap_or_default().to_string();
    if has_events {
        assert!(footer.contains("event stream"), "{footer}");
    } else {
        assert!(footer.contains("re-reading every 2 s"), "{footer}");
    }

    // A service created from the form reaches running, shown without a reload.
    page.js("window.noReload = 'still the same page'; return true")
        .await;
    page.type_into("#create-service [name=name]", "web").await;
    page.type_into(
        "#create-service [name=command]",
        &format!("{BIN} hello --port 0"),
    )
    .await;
    page.type_into("#create-service [name=replicas]", "3").await;
    page.type_into("#create-service [name=env]", &format!("TEST_MARK={mark}"))
        .await;
    page.click("#create-submit").await;
    page.until(
        "web to run 3/3 in the services view",
        "const row = document.querySelector('tr[data-service=\"web\"]'); \
         return row && row.dataset.status === 'running' && row.dataset.running === '3'",
    )
    .await;
    let row = page
        .js("return document.querySelector('tr[data-service=\"web\"]').innerText")
        .await;
    assert!(row.as_str().is_some_and(|r| r.contains("3/3")), "{row}");
    page.shot("services").await;
    eventually("3 workload processes", || async {
        (workloads(&mark).len() == 3).then_some(())
    })
    .await;

    // Every view, reached through its link.
    page.click("a[data-nav=map]").await;
    page.until(
        "3 running chips on the map",
        "return document.querySelectorAll('.chip[data-service=\"web\"][data-state=\"running\"]').length === 3",
    )
    .await;
    page.shot("map").await;
    page.click("a[data-nav=workers]").await;
    page.until(
        "3 ready workers",
        "return document.querySelectorAll('#workers-list tr[data-status=\"ready\"]').length === 3",
    )
    .await;
    page.shot("workers").await;
    page.click("a[href='#/worker/w1']").await;
    page.until(
        "w1's details",
        "return document.querySelector('#worker-details dl')",
    )
    .await;
    page.shot("worker").await;
    page.route("#/service/web").await;
    page.until(
        "web's 3 running tasks",
        "return document.querySelectorAll('#service-tasks tr[data-state=\"running\"]').length === 3 \
         && document.querySelector('#service-rollout dl')",
    )
    .await;
    let logs = page
        .until(
            "the logs panel",
            "const t = document.getElementById('service-logs').textContent; return t !== 'Loading…' && t",
        )
        .await;
    eprintln!(
        "logs panel: {}",
        logs.as_str()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
    );
    page.shot("service").await;
    page.click("a[data-nav=events]").await;
    page.until(
        "the event feed",
        "return document.getElementById('events-note').textContent",
    )
    .await;
    if has_events {
        page.until(
            "web's creation in the feed",
            "return document.querySelector('#feed li[data-type=\"service_created\"]')",
        )
        .await;
    }
    page.shot("events").await;

    // A worker dies: the map shows it down and its task running elsewhere, live.
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    let victim = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "running")
        .and_then(|t| t["worker"].as_str())
        .expect("a worker running web")
        .to_string();
    page.click("a[data-nav=map]").await;
    page.until(
        "3 running chips on the map",
        "return document.querySelectorAll('.chip[data-service=\"web\"][data-state=\"running\"]').length === 3",
    )
    .await;
    let at = agents.iter().position(|a| a.name == victim).unwrap();
    agents.remove(at).kill9();
    page.until(
        &format!("{victim} down, and web running 3 times elsewhere"),
        &format!(
            "const card = document.querySelector('.node[data-worker=\"{victim}\"]'); \
             if (!card || card.dataset.status !== 'down') return false; \
             const running = [...document.querySelectorAll('.chip[data-service=\"web\"][data-state=\"running\"]')]; \
             return running.length === 3 && running.every(chip => !card.contains(chip));"
        ),
    )
    .await;
    page.shot("map-after-failover").await;
    page.click("a[data-nav=workers]").await;
    page.until(
        &format!("{victim} down in the workers view"),
        &format!("return document.querySelector('#workers-list tr[data-worker=\"{victim}\"][data-status=\"down\"]')"),
    )
    .await;
    page.shot("workers-after-failover").await;
    assert_eq!(
        page.js("return window.noReload").await,
        "still the same page",
        "the page was never reloaded"
    );

    // A phone renders the services view, without sideways scrolling.
    page.driver
        .set_window_rect(0, 0, 390, 844)
        .await
        .expect("a phone-sized window");
    page.click("a[data-nav=services]").await;
    page.until(
        "web in the phone's services view",
        "const row = document.querySelector('tr[data-service=\"web\"]'); return row && row.dataset.running === '3'",
    )
    .await;
    let fits = page
        .js("return [document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    assert!(
        fits[0].as_f64() <= fits[1].as_f64().map(|w| w + 1.0),
        "the page is wider than the phone: {fits}"
    );
    page.shot("phone-services").await;
    page.driver
        .set_window_rect(0, 0, 1280, 900)
        .await
        .expect("back to a laptop's window");

    // A token the manager stops accepting later returns to the sign-in form.
    page.js(&format!(
        "sessionStorage.setItem('mycluster.token', {}); location.hash = '#/workers'; return true",
        Value::from(WRONG_TOKEN)
    ))
    .await;
    let later = page
        .until(
            "the sign-in form after a 401",
            "return !document.getElementById('signin').hidden && document.getElementById('signin-error').textContent",
        )
        .await;
    assert!(
        later
            .as_str()
            .is_some_and(|m| m.contains("refused this token")),
        "{later}"
    );
    assert_eq!(
        page.js("return sessionStorage.getItem('mycluster.token')")
            .await,
        Value::Null
    );
    page.type_into("#token", TEST_TOKEN).await;
    page.click("#signin-submit").await;
    page.until(
        "the workers view again",
        "return document.querySelector('#workers-list table')",
    )
    .await;

    // Deleting from the service's page asks first, then stops every replica.
    page.route("#/service/web").await;
    page.until("web's page", "return document.getElementById('delete')")
        .await;
    page.click("#delete").await;
    page.until(
        "the confirmation",
        "return !document.getElementById('delete-confirm').hidden",
    )
    .await;
    page.shot("delete-confirm").await;
    page.click("#delete-yes").await;
    page.until(
        "the services view without web",
        "return location.hash === '#/services' && document.querySelector('#services-list .empty')",
    )
    .await;
    assert_eq!(
        page.js("return document.getElementById('notice').textContent")
            .await,
        "Service web deleted.",
        "the action's outcome is said on the page it leads to"
    );
    eventually("web's processes to stop", || async {
        workloads(&mark).is_empty().then_some(())
    })
    .await;

    // Signing out forgets the token.
    page.click("#signout").await;
    page.until(
        "the sign-in form",
        "return !document.getElementById('signin').hidden",
    )
    .await;
    assert_eq!(page.js("return sessionStorage.length").await, 0);
    page.no_secret_shown().await;
    let console = page.no_secret_logged().await;
    eprintln!("{} console lines, none with a token", console.len());
    let shots = page.taken.clone();
    page.driver.quit().await.expect("quit the browser");

    if std::env::var("MYCLUSTER_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let map = shots
            .iter()
            .find(|p| p.to_string_lossy().contains("map-after-failover"))
            .expect("the map's screenshot");
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::copy(map, &docs).expect("copy the screenshot to docs/");
    }
    for shot in &shots {
        let size = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} is {size} bytes", shot.display());
    }
    eprintln!("screenshots in {}", screenshots().display());
    drop(chrome);
}
