//! The clusters this machine set up (`mycluster setup`, `mycluster dev`): their address,
//! port and tokens, saved for their owner only, so `manage`, `token` and every client
//! command find a cluster again with no flags (the original kept this in `mycluster.env`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::SetupError;
use crate::secret::{write_secret, Secrets};

/// What `setup` made, saved so that `manage` and the CLI find the cluster again (the
/// original kept it in `mycluster.env`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub workers: u32,
    pub store: String,
    /// The host port the API is published on, on the host's 127.0.0.1 only (plain HTTP
    /// and TLS: it cannot leave the host).
    pub port: u16,
    /// Whether setup chose the port (`--port 0`): it chooses another if that one is
    /// taken when the manager's container is made.
    #[serde(default)]
    pub port_chosen: bool,
    /// The host port the manager's TLS port is published on, on every address of the
    /// host: how other hosts reach the API (0: not decided yet, a cluster set up before).
    #[serde(default)]
    pub tls_port: u16,
    /// Whether setup chose the TLS port (`--tls-port 0`), as `port_chosen`.
    #[serde(default)]
    pub tls_port_chosen: bool,
    pub image: String,
    /// With the redis store: the image of `<name>_redis_1` (none: built locally).
    #[serde(default)]
    pub redis_image: Option<String>,
    /// The API token (this file is mode 0600); none: authentication is off.
    #[serde(default)]
    pub token: Option<String>,
    /// The agents' join token.
    #[serde(default)]
    pub join_token: Option<String>,
    /// A `mycluster dev` cluster: it lives in one process, `manage` has nothing to do.
    #[serde(default)]
    pub dev: bool,
    /// The manager's `--rebalance`: services' spreads are evened out on their own.
    #[serde(default)]
    pub rebalance: bool,
    /// The manager's `--allow-bind` directories: where bind mounts are allowed.
    #[serde(default)]
    pub allow_bind: Vec<String>,
    /// The manager's `--lease`, in milliseconds; none: the default
    /// (`mycluster_core::lease::DEFAULT_LEASE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// The manager's read-only metrics token (`setup --metrics-token-file`), given to it
    /// as `MYCLUSTER_METRICS_TOKEN`; none: only the API token reads `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// The SHA-256 of the cluster CA's certificate (hex): what the CLI trusts when it
    /// talks to the manager over https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
}

impl Settings {
    pub fn manager_url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// The port other hosts reach the API on over TLS: a dev cluster serves TLS on its
    /// one port.
    pub fn public_tls_port(&self) -> u16 {
        match self.tls_port {
            0 => self.port,
            port => port,
        }
    }
}

/// Where the cluster CA's certificate is saved beside the settings (for `curl
/// --cacert`, `mycluster token --ca`).
pub fn ca_path(name: &str) -> PathBuf {
    config_dir().join("clusters").join(name).join("ca.pem")
}

/// Saves the CA's certificate at `ca_path(name)`, readable by anyone (it is public:
/// what a client checks the manager against), whole or not at all.
pub fn save_ca(name: &str, pem: &str) -> Result<PathBuf, SetupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = ca_path(name);
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| SetupError::io(format!("cannot create {}", dir.display()), e))?;
    let temporary = dir.join(format!(".ca.pem.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temporary)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(SetupError::io(
            format!("cannot write {}", path.display()),
            e,
        ));
    }
    Ok(path)
}

/// The saved cluster whose API is at `url` (the current one first), for its token.
pub fn saved_for(url: &str) -> Option<Settings> {
    let url = url.trim_end_matches('/');
    let same = |s: &Settings| {
        let port = s.port;
        [
            format!("http://localhost:{port}"),
            format!("http://127.0.0.1:{port}"),
            format!("http://[::1]:{port}"),
        ]
        .iter()
        .any(|u| u == url)
    };
    if let Some(current) = current().filter(|s| same(s)) {
        return Some(current);
    }
    let dir = config_dir().join("clusters");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry
                .file_name()
                .to_string_lossy()
                .strip_suffix(".json")?
                .to_string();
            load_settings(&name)
        })
        .find(|s| same(s))
}

/// Saves a `dev` cluster's address and tokens, so the CLI finds them; returns whether
/// it did (a setup cluster of the same name is left alone).
pub fn save_dev(name: &str, port: u16, secrets: Option<&Secrets>) -> Result<bool, SetupError> {
    if load_settings(name).is_some_and(|s| !s.dev) {
        tracing::warn!("a cluster '{name}' set up with `mycluster setup` exists: its settings stay, so the CLI needs --manager and MYCLUSTER_TOKEN for this one");
        return Ok(false);
    }
    save(&Settings {
        name: name.to_string(),
        workers: 0,
        store: "embedded".into(),
        port,
        port_chosen: false,
        tls_port: 0,
        tls_port_chosen: false,
        image: String::new(),
        redis_image: None,
        token: secrets.map(|s| s.api.clone()),
        join_token: secrets.map(|s| s.join.clone()),
        dev: true,
        rebalance: false,
        allow_bind: Vec::new(),
        lease_ms: None,
        metrics_token: None,
        ca_sha256: None,
    })?;
    Ok(true)
}

/// The settings of cluster `name`, else of the one set up last.
pub fn named_or_current(name: Option<&str>) -> Result<Settings, SetupError> {
    match name {
        Some(name) => load_settings(name).ok_or_else(|| SetupError::NoSuchCluster(name.into())),
        None => current().ok_or(SetupError::NothingSetUp),
    }
}

/// `mycluster token [--join] [-n NAME]`: a saved cluster's API (or join) token.
pub fn token(name: Option<&str>, join: bool) -> Result<String, SetupError> {
    let settings = named_or_current(name)?;
    let token = if join {
        // With the CA's digest, as `mycluster join` takes it.
        let pin = settings
            .ca_sha256
            .as_deref()
            .and_then(|digest| mycluster_tls::Pin::parse(digest).ok());
        match (&settings.join_token, pin) {
            (Some(secret), Some(ca)) => Some(
                mycluster_tls::JoinToken {
                    ca,
                    secret: secret.clone(),
                }
                .to_string(),
            ),
            (secret, _) => secret.clone(),
        }
    } else {
        settings.token.clone()
    };
    token.ok_or(SetupError::NoToken(settings.name))
}

/// `$MYCLUSTER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/mycluster`, else `~/.config/mycluster`.
fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MYCLUSTER_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = match (
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    ) {
        (Some(xdg), _) if !xdg.is_empty() => PathBuf::from(xdg),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".config"),
        _ => PathBuf::from("/etc"),
    };
    base.join("mycluster")
}

pub fn settings_path(name: &str) -> PathBuf {
    config_dir().join("clusters").join(format!("{name}.json"))
}

pub fn load_settings(name: &str) -> Option<Settings> {
    let text = std::fs::read_to_string(settings_path(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The cluster set up last (or managed by name last).
pub fn current() -> Option<Settings> {
    let name = std::fs::read_to_string(config_dir().join("current")).ok()?;
    load_settings(name.trim())
}

pub fn save(settings: &Settings) -> Result<(), SetupError> {
    let path = settings_path(&settings.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| SetupError::io(format!("cannot create {}", dir.display()), e))?;
    }
    // It holds the tokens: readable by its owner only.
    write_secret(&path, &serde_json::to_string_pretty(settings)?)?;
    let current = config_dir().join("current");
    std::fs::write(&current, &settings.name)
        .map_err(|e| SetupError::io(format!("cannot write {}", current.display()), e))?;
    Ok(())
}

pub fn forget(name: &str) {
    let _ = std::fs::remove_file(settings_path(name));
    if let Some(dir) = ca_path(name).parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let current = config_dir().join("current");
    if std::fs::read_to_string(&current).is_ok_and(|c| c.trim() == name) {
        let _ = std::fs::remove_file(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, as it sets the process's config dir.
    #[test]
    fn saved_settings_are_found_by_name_address_and_as_current() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::env::set_var("MYCLUSTER_CONFIG_DIR", dir.path());
        assert!(matches!(token(None, false), Err(SetupError::NothingSetUp)));
        let secrets = Secrets {
            api: "api-token".into(),
            join: "join-token".into(),
        };
        assert!(save_dev("devc", 5123, Some(&secrets)).expect("saved"));
        assert_eq!(current().map(|s| s.name).as_deref(), Some("devc"));
        assert_eq!(token(None, false).expect("token"), "api-token");
        assert_eq!(token(Some("devc"), true).expect("token"), "join-token");
        let found = saved_for("http://127.0.0.1:5123/").expect("found by address");
        assert_eq!(found.name, "devc");
        assert!(saved_for("http://localhost:5124").is_none());
        forget("devc");
        assert!(current().is_none());
        assert!(matches!(
            token(Some("devc"), false),
            Err(SetupError::NoSuchCluster(_))
        ));
    }
}
