//! The CLI as an operator runs it against a `setup` cluster: a config dir of its own (so
//! the cluster's saved settings and token are found as they would be), and the API of
//! that cluster with its token.

use std::process::{Command, Output};

use serde_json::Value;

use super::{Api, BIN};

pub struct SetupEnv {
    pub config: tempfile::TempDir,
}

impl SetupEnv {
    pub fn new() -> SetupEnv {
        SetupEnv {
            config: tempfile::tempdir().expect("a config dir"),
        }
    }

    /// `mycluster ARGS` with this config dir; whatever it ends with.
    pub fn mycluster(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("MYCLUSTER_CONFIG_DIR", self.config.path())
            .env("MYCLUSTER_PORT", "0")
            .env("MYCLUSTER_TLS_PORT", "0")
            .env_remove("MYCLUSTER_MANAGER")
            .env_remove("MYCLUSTER_TOKEN")
            .output()
            .expect("run mycluster")
    }

    /// `mycluster ARGS`, which must succeed: what it printed (stdout, then stderr).
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.mycluster(args);
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + String::from_utf8_lossy(&output.stderr).as_ref();
        assert!(
            output.status.success(),
            "mycluster {args:?} failed:\n{text}"
        );
        text
    }

    /// `setup --name CLUSTER --workers N EXTRA...`, which must say it is ready; the API
    /// of the cluster, with its token.
    pub fn setup(&self, cluster: &str, workers: u32, extra: &[&str]) -> Api {
        let count = workers.to_string();
        let mut args = vec!["setup", "--name", cluster, "--workers", &count];
        args.extend_from_slice(extra);
        let printed = self.ok(&args);
        assert!(
            printed.contains(&format!("ready, {workers} workers")),
            "{printed}"
        );
        self.api(cluster)
    }

    /// The API of `cluster`, with its token.
    pub fn api(&self, cluster: &str) -> Api {
        let path = self
            .config
            .path()
            .join("clusters")
            .join(format!("{cluster}.json"));
        let settings: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("settings"))
                .expect("settings are JSON");
        let token = self.ok(&["token", "-n", cluster]).trim().to_string();
        Api::with_token(
            &format!("http://127.0.0.1:{}", settings["port"]),
            Some(&token),
        )
    }
}
