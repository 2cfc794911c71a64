//! Where the manager finds its secrets: the API and join tokens given in the environment
//! or in files, else generated once into its data dir; the read-only metrics token, from
//! a file only. (Agents' and clients' tokens, and
//! the files themselves: `mycluster_setup::tokens` and `secret`.)

use std::path::Path;

use anyhow::bail;
use mycluster_manager::api::auth::{Auth, JoinSlot, Token};
use mycluster_setup::secret::{
    env_secret, generate, read_secret, write_secret, JOIN_TOKEN_ENV, METRICS_TOKEN_ENV, TOKEN_ENV,
};
use mycluster_setup::Secrets;

/// The generated tokens' files in the data dir: that they exist says the data dir knew
/// the cluster (see `manager::create_mode`).
pub const API_TOKEN_FILE: &str = "api-token";
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// The join token last rotated through the API (`mycluster token --join --rotate`): read
/// first at start.
pub const ROTATED_JOIN_TOKEN_FILE: &str = "join-token.rotated";

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
        return Ok(read_secret(&path)?);
    }
    let token = generate();
    write_secret(&path, &token)?;
    tracing::info!("generated a token in {}", path.display());
    Ok(token)
}

/// The manager's authentication: tokens from the environment or files, else generated
/// once into the data dir (`api-token`, `join-token`, mode 0600) and kept across
/// restarts; a join token rotated through the API (`join-token.rotated`) before all of
/// them; nothing at all with `--insecure-no-auth`.
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
    // A token rotated through the API wins over the flag, the environment and the
    // generated file: the operator was told it, and agents joining now carry it.
    let rotated = data_dir.join(ROTATED_JOIN_TOKEN_FILE);
    let (join_text, join) = if rotated.exists() {
        let text = read_secret(&rotated)?;
        let token =
            Token::parse(&text, &rotated.display().to_string()).map_err(anyhow::Error::msg)?;
        (text, token)
    } else {
        token_from(JOIN_TOKEN_ENV, join_token_file, || {
            generated(data_dir, JOIN_TOKEN_FILE)
        })?
    };
    if api.same_as(&join) {
        bail!("the join token must differ from the API token: an agent's secret must not open the whole API");
    }
    let auth = Auth::On {
        api,
        join: JoinSlot::from(Some(join)).persisted_at(rotated),
    };
    let secrets = Secrets {
        api: api_text,
        join: join_text,
    };
    Ok((auth, Some(secrets)))
}

/// The read-only metrics token of `--metrics-token-file`, if given: it must differ from
/// the API and join tokens (it is meant to be handed to a monitoring system), and means
/// nothing without authentication.
pub fn metrics_token(file: Option<&Path>, auth: &Auth) -> anyhow::Result<Option<Token>> {
    // `setup` gives its manager container the token in the environment.
    let from_env = env_secret(METRICS_TOKEN_ENV);
    if file.is_none() && from_env.is_none() {
        return Ok(None);
    }
    let Auth::On { api, join } = auth else {
        bail!("--insecure-no-auth and --metrics-token-file contradict each other: with no authentication /metrics is open to anyone");
    };
    let (text, source) = match (file, from_env) {
        (Some(path), _) => (read_secret(path)?, path.display().to_string()),
        (None, Some(text)) => (text, format!("${METRICS_TOKEN_ENV}")),
        (None, None) => return Ok(None),
    };
    let token = Token::parse(&text, &source).map_err(anyhow::Error::msg)?;
    if token.same_as(api) || join.get().is_some_and(|j| token.same_as(&j)) {
        bail!("the metrics token must differ from the API and join tokens: it only reads /metrics");
    }
    Ok(Some(token))
}
