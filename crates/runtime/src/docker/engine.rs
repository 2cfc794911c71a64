//! Reaching the Docker engine and reading its answers: the connection (as the docker CLI
//! makes it), the engine's own words in errors, and image references.

use bollard::errors::Error as DockerError;
use bollard::Docker;

use crate::RuntimeError;

/// What bollard connects to when `DOCKER_HOST` is unset (its own constant is private).
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A wedged engine must not hold an agent's start-up (or a driver choice) forever.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to the engine the way the docker CLI would, agreeing on a version. Public so
/// that setup (its cluster host and image builds) reaches the engine exactly as agents do.
pub async fn connect_engine() -> Result<Docker, RuntimeError> {
    let host = engine_host();
    let docker = Docker::connect_with_defaults().map_err(|e| cannot_reach(&host, e))?;
    handshake(docker, &host).await
}

/// Agrees on an API version (the engine may be older than bollard) and pings.
pub(super) async fn handshake(docker: Docker, host: &str) -> Result<Docker, RuntimeError> {
    let attempt = async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<Docker, DockerError>(docker)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(cannot_reach(host, e)),
        Err(_) => Err(cannot_reach(
            host,
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        )),
    }
}

pub(super) fn engine_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

pub(super) fn cannot_reach(host: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Engine(format!("cannot reach the Docker engine at {host}: {e}"))
}

pub(super) fn engine_error(what: &str, e: DockerError) -> RuntimeError {
    RuntimeError::Engine(format!("{what}: {}", message(&e)))
}

pub(super) fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words when it answered, rather than bollard's wrapping of them.
pub(super) fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// The engine did not answer (as opposed to refusing the request): worth retrying.
pub(super) fn is_transport(e: &DockerError) -> bool {
    !matches!(
        e,
        DockerError::DockerResponseServerError { .. } | DockerError::DockerStreamError { .. }
    )
}

/// Splits an image reference into what the pull API wants: the name, and a tag. Without
/// a tag the engine would pull every tag of the repository, so `latest` is explicit.
pub(super) fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    // A ':' before the last '/' belongs to a registry's port, not to a tag.
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&image[..image.len() - tag.len() - 1], Some(tag)),
        None => (image, Some("latest")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("redis"), ("redis", Some("latest")));
        assert_eq!(split_reference("redis:7"), ("redis", Some("7")));
        assert_eq!(
            split_reference("localhost:5000/team/app"),
            ("localhost:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_reference("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app", Some("v2"))
        );
        assert_eq!(
            split_reference("redis@sha256:abcd"),
            ("redis@sha256:abcd", None)
        );
    }

    #[tokio::test]
    async fn an_engine_that_does_not_answer_is_named_in_the_error() {
        // A plain file where a socket should be: the connection is refused.
        let dir = std::env::temp_dir().join(format!("mycluster-no-engine-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("docker.sock");
        let _ = std::fs::write(&path, b"");
        let host = format!("unix://{}", path.display());
        let result = match Docker::connect_with_unix(&host, 5, bollard::API_DEFAULT_VERSION) {
            Ok(docker) => handshake(docker, &host).await.map(|_| ()),
            Err(e) => Err(cannot_reach(&host, e)),
        };
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Err(RuntimeError::Engine(why)) => {
                assert!(
                    why.starts_with(&format!("cannot reach the Docker engine at {host}: ")),
                    "{why}"
                );
            }
            other => panic!("expected an Engine error, got {other:?}"),
        }
    }
}
