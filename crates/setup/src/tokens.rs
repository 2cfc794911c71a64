//! Which token an agent and a client present: from the environment, a file, or (for a
//! client) the settings `setup`/`dev` saved for the cluster at that address.

use std::path::Path;

use crate::error::SetupError;
use crate::secret::{env_secret, read_secret, JOIN_TOKEN_ENV, TOKEN_ENV};

/// The token an agent presents: the join token (environment or file), else the API
/// token from the environment, else none (a manager without authentication).
pub fn agent_token(join_token_file: Option<&Path>) -> Result<Option<String>, SetupError> {
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
) -> Result<Option<String>, SetupError> {
    if let Some(token) = env_secret(TOKEN_ENV) {
        return Ok(Some(token));
    }
    if let Some(path) = token_file {
        return read_secret(path).map(Some);
    }
    Ok(crate::settings::saved_for(manager_url).and_then(|s| s.token))
}
