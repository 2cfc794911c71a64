//! `mycluster dev` as a test runs it: a config dir of its own, and its API address read
//! from the `API: ` line it prints. The process is killed when the handle drops, so a
//! failing test leaves neither `dev` nor its workloads running.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::{BIN, DEADLINE};

pub struct Dev {
    pub child: Child,
    /// Its API address (`http://127.0.0.1:<port>`).
    pub url: String,
}

impl Dev {
    /// `mycluster dev ARGS` with `config` as its config dir; waits for its API address.
    pub fn start(config: &Path, args: &[&str]) -> Dev {
        let mut child = Command::new(BIN)
            .env("MYCLUSTER_CONFIG_DIR", config)
            .env_remove("MYCLUSTER_TOKEN")
            .arg("dev")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mycluster dev");
        let stdout = child.stdout.take().expect("dev's stdout");
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("API: ") {
                    let _ = found.send(url.trim().to_string());
                }
            }
        });
        // Held before the wait, so a dev that never prints its address is killed too.
        let mut dev = Dev {
            child,
            url: String::new(),
        };
        dev.url = address
            .recv_timeout(DEADLINE)
            .expect("dev prints its API address");
        dev
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
