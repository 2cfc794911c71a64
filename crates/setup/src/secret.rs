//! Where each role finds its secret: the manager's API and join tokens (given, or
//! generated once into its data dir), an agent's join token, and the CLI's API token
//! (environment, file, or the settings `setup`/`dev` saved). Secrets never travel on a
//! command line, where `ps` would show them.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use mycluster_manager::api::auth::{Auth, Token};

/// The API token's environment variable (CLI, monitor, manager).
pub const TOKEN_ENV: &str = "MYCLUSTER_TOKEN";
/// The join token's environment variable (agents, manager).
pub const JOIN_TOKEN_ENV: &str = "MYCLUSTER_JOIN_TOKEN";

/// 32 random bytes, hex: as strong as the key of any TLS session.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `dir` (and its parents) if missing, readable by its owner only: a data dir
/// holds the generated tokens and the services' environments. An existing dir is left
/// as its owner set it.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a secret readable by its owner only (mode 0600), whole or not at all: it goes
/// to a temporary file first, then replaces the old one, so a crash cannot leave an
/// empty or half-written secret behind.
pub fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let name = path
        .file_name()
        .map_or("secret".into(), |n| n.to_string_lossy());
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    Ok(text.trim().to_string())
}

fn env_secret(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A token from the environment, else a file, else `fallback` (which may generate and
/// save one). Checked for strength.
fn token_from(
    env: &str,
    file: Option<&Path>,
    fallback: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<(String, Token)> {
    let (text, source) = match (env_secret(env), file) {
        (Some(text), _) => (text, env.to_string()),
        (None, Some(path)) => (read_secret(path)?, path.display().to_string()),
        (None, None) => (fallback()?, "the generated token".to_string()),
    };
    let token = Token::parse(&text, &source).map_err(anyhow::Error::msg)?;
    Ok((text, token))
}

/// The file in `data_dir` holding a generated token; created on first use.
fn generated(data_dir: &Path, file: &str) -> anyhow::Result<String> {
    let path = data_dir.join(file);
    if path.exists() {
        return read_secret(&path);
    }
    let token = generate();
    write_secret(&path, &token)?;
    tracing::info!("generated a token in {}", path.display());
    Ok(token)
}

/// The manager's two secrets, as text (for `dev` to hand to its agents and the CLI).
pub struct Secrets {
    pub api: String,
    pub join: String,
}

/// The manager's authentication: tokens from the environment or files, else generated
/// once into the data dir (`api-token`, `join-token`, mode 0600) and kept across
/// restarts; nothing at all with `--insecure-no-auth`.
pub fn manager_auth(
    insecure: bool,
    token_file: Option<&Path>,
    join_token_file: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<(Auth, Option<Secrets>)> {
    if insecure {
        if env_secret(TOKEN_ENV).is_some() || token_file.is_some() {
            bail!("--insecure-no-auth and a token contradict each other: choose one");
        }
        return Ok((Auth::Off, None));
    }
    let (api_text, api) = token_from(TOKEN_ENV, token_file, || {
        generated(data_dir, API_TOKEN_FILE)
    })?;
    let (join_text, join) = token_from(JOIN_TOKEN_ENV, join_token_file, || {
        generated(data_dir, JOIN_TOKEN_FILE)
    })?;
    if api.same_as(&join) {
        bail!("the join token must differ from the API token: an agent's secret must not open the whole API");
    }
    let auth = Auth::On {
        api,
        join: Some(join),
    };
    let secrets = Secrets {
        api: api_text,
        join: join_text,
    };
    Ok((auth, Some(secrets)))
}

pub const API_TOKEN_FILE: &str = "api-token";
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// The token an agent presents: the join token (environment or file), else the API
/// token from the environment, else none (a manager without authentication).
pub fn agent_token(join_token_file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(token) = env_secret(JOIN_TOKEN_ENV) {
        return Ok(Some(token));
    }
    if let Some(path) = join_token_file {
        return read_secret(path).map(Some);
    }
    Ok(env_secret(TOKEN_ENV))
}

/// The API token a client presents to `manager_url`: the environment, else the file,
/// else the one saved for the cluster set up at that address.
pub fn client_token(
    manager_url: &str,
    token_file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = env_secret(TOKEN_ENV) {
        return Ok(Some(token));
    }
    if let Some(path) = token_file {
        return read_secret(path).map(Some);
    }
    Ok(crate::settings::saved_for(manager_url).and_then(|s| s.token))
}
