//! The worker's credential as its agent holds it (see the core's `identity`): the
//! secret the manager answered the worker's first registration with, which the agent
//! presents from then on instead of the join token — and never gives up for the join
//! token again. It is kept in `<data-dir>/credential` (mode 0600) when the agent has a
//! data dir, so a restarted agent still speaks for its worker; else in memory for the
//! life of the process (a restart then needs the join token, which the manager refuses
//! for a name that has a credential: `mycluster worker rm` it first).

use std::path::Path;

use mycluster_client::credential;

/// Why the credential file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read this agent's credential from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold a worker credential (MCW1-<64 hex digits>): remove it, and the \
         agent joins again with the join token"
    )]
    Malformed { path: String },
}

/// The credential in `file`, if there is one.
pub fn load(file: Option<&Path>) -> Result<Option<String>, CredentialError> {
    let Some(path) = file else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let text = text.trim();
    if !credential::is_credential(text) {
        return Err(CredentialError::Malformed {
            path: path.display().to_string(),
        });
    }
    Ok(Some(text.to_string()))
}

/// Writes `secret` to `path`, readable by its owner only, through a temporary file
/// renamed over it (a crash leaves the old file or the new one, never half of one).
pub fn save(path: &Path, secret: &str) -> std::io::Result<()> {
    mycluster_tls::write_private(path, &format!("{secret}\n"), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_credential_loads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agents/w1/credential");
        assert!(load(Some(&path)).unwrap().is_none());
        assert!(load(None).unwrap().is_none());
        let secret = credential::generate();
        save(&path, &secret).unwrap();
        assert_eq!(load(Some(&path)).unwrap(), Some(secret));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not a credential").unwrap();
        assert!(matches!(
            load(Some(&path)),
            Err(CredentialError::Malformed { .. })
        ));
    }
}
