//! Secrets on disk and in the environment: tokens are generated here, written readable
//! by their owner only, and read back from a file or an environment variable. Secrets
//! never travel on a command line, where `ps` would show them.

use std::path::Path;

use crate::error::SetupError;

/// The API token's environment variable (CLI, monitor, manager).
pub const TOKEN_ENV: &str = "MYCLUSTER_TOKEN";
/// The manager's read-only metrics token's environment variable (`setup` passes it).
pub const METRICS_TOKEN_ENV: &str = "MYCLUSTER_METRICS_TOKEN";
/// The join token's environment variable (agents, manager).
pub const JOIN_TOKEN_ENV: &str = "MYCLUSTER_JOIN_TOKEN";

/// A manager's two secrets, as text (for `dev` to hand to its agents and the CLI, and for
/// the saved settings).
pub struct Secrets {
    pub api: String,
    pub join: String,
}

/// 32 random bytes, hex: as strong as the key of any TLS session.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `dir` (and its parents) if missing, readable by its owner only: a data dir
/// holds the generated tokens and the services' environments. An existing dir is left
/// as its owner set it.
pub fn private_dir(dir: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SetupError::io(format!("cannot create {}", dir.display()), e))
}

/// Writes a secret readable by its owner only (mode 0600), whole or not at all: it goes
/// to a temporary file first, then replaces the old one, so a crash cannot leave an
/// empty or half-written secret behind.
pub fn write_secret(path: &Path, text: &str) -> Result<(), SetupError> {
    private_dir(path.parent().unwrap_or(Path::new(".")))?;
    mycluster_tls::write_private(path, text, 0o600)
        .map_err(|e| SetupError::io(format!("cannot write {}", path.display()), e))
}

/// A token file's content, without the newline an editor adds.
pub fn read_secret(path: &Path) -> Result<String, SetupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SetupError::io(format!("cannot read the token file {}", path.display()), e))?;
    Ok(text.trim().to_string())
}

/// A secret from the environment, if set and not blank.
pub fn env_secret(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}
