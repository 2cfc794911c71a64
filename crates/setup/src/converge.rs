//! Making one role container match what `up` wants of it: created when missing, made
//! again when its published ports, image, command or environment changed (its state is
//! in a volume or in Redis), started when stopped, given the restart policy in place —
//! and, for a port setup chose, another one chosen when it was taken meanwhile.

use crate::error::SetupError;
use crate::host::{ClusterContainer, ClusterHost, Publish, RoleContainer};
use crate::settings::Settings;

/// The manager container's TLS port: TLS only, for anyone (the cluster network, and
/// other hosts through the host's TLS port).
pub(crate) const MANAGER_TLS_PORT: u16 = 5000;
/// The manager container's local port (`--local-listen`): plain HTTP too, published on
/// the host's 127.0.0.1 only.
pub(crate) const MANAGER_LOCAL_PORT: u16 = 5001;
/// The host's TLS port when `setup` is not told one.
pub(crate) const DEFAULT_TLS_PORT: u16 = 5443;

/// What the manager publishes: its local port on the host's 127.0.0.1 (`curl
/// http://localhost:<port>` on this host, and nowhere else), its TLS port on every
/// address of the host (other hosts).
pub(crate) fn manager_publish(settings: &Settings) -> Vec<Publish> {
    vec![
        Publish {
            inside: MANAGER_LOCAL_PORT,
            outside: settings.port,
            host_ip: Some("127.0.0.1".into()),
        },
        Publish {
            inside: MANAGER_TLS_PORT,
            outside: settings.tls_port,
            host_ip: None,
        },
    ]
}

/// The environment a container is made again for when it changed. The join token is
/// only the ingress's to keep using: an agent presents it once, to get its worker's
/// credential (kept in its volume), and the manager keeps a rotated one in its data dir
/// over what it was started with — so a rotation (`mycluster token --join --rotate`)
/// makes again neither, and a worker made again would take its workloads down with it
/// (they live in its PID namespace).
fn env_that_matters(spec: &RoleContainer, role: &str) -> Vec<String> {
    let join = format!("{}=", crate::secret::JOIN_TOKEN_ENV);
    spec.env
        .iter()
        .filter(|e| role == "ingress" || !e.starts_with(&join))
        .cloned()
        .collect()
}

/// Brings `spec` about on the host, given the cluster's containers as found; says what
/// it did ("created", "exists, running", "recreated (...)").
pub(crate) async fn converge(
    host: &ClusterHost,
    spec: &mut RoleContainer,
    existing: &[ClusterContainer],
    settings: &mut Settings,
) -> Result<String, SetupError> {
    let found = existing.iter().find(|c| c.name == spec.name);
    let mut moved_port = false;
    if found.is_some() {
        for publish in &spec.publish {
            let wanted = Some((publish.host_ip.clone(), publish.outside));
            moved_port |= host.configured_binding(&spec.name, publish.inside).await? != wanted;
        }
    }
    Ok(match found {
        Some(_) if moved_port => {
            // Made to publish on another (or an engine-chosen) port or address: its
            // state is in the volume (or Redis), so it is made again on the saved one.
            host.remove(&spec.name).await?;
            run_role(host, spec, settings).await?;
            format!("recreated (API on port {})", settings.port)
        }
        Some(c) if c.image != spec.image && c.role != "workload" => {
            // Another build of mycluster: replace the container, keep the volume.
            host.remove(&spec.name).await?;
            run_role(host, spec, settings).await?;
            format!("recreated (image {} -> {})", c.image, spec.image)
        }
        Some(_) if host.configured_cmd(&spec.name).await? != Some(spec.cmd.clone()) => {
            // Made with another command (the ingress, for an API on another port).
            host.remove(&spec.name).await?;
            run_role(host, spec, settings).await?;
            "recreated (its command changed)".to_string()
        }
        Some(c)
            if !host
                .has_env(&spec.name, &env_that_matters(spec, &c.role))
                .await? =>
        {
            // Made with another manager address, token or CA (a cluster set up before
            // TLS, a manager whose CA was made again).
            host.remove(&spec.name).await?;
            run_role(host, spec, settings).await?;
            "recreated (its environment changed)".to_string()
        }
        Some(c) => {
            // Made before role containers had their restart policy: given it in
            // place (`docker update --restart`), running or not.
            let policy = match host.has_role_restart(&spec.name).await? {
                true => "",
                false => {
                    host.set_role_restart(&spec.name).await?;
                    " (restart policy set: unless-stopped)"
                }
            };
            if c.state == "running" {
                format!("exists, running{policy}")
            } else {
                start_existing(host, spec, settings)
                    .await
                    .map(|what| format!("{what}{policy}"))?
            }
        }
        None => {
            run_role(host, spec, settings).await?;
            "created".to_string()
        }
    })
}

/// A port free on this host now, for the API when `--port 0` asks setup to choose:
/// tried at random below the kernel's ephemeral range, where neither the engine nor
/// outgoing connections pick ports of their own.
pub(crate) fn free_port() -> Result<u16, SetupError> {
    for _ in 0..100 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).map_err(SetupError::NoFreePort)?;
    Ok(listener.local_addr()?.port())
}

/// A free port other than `other` (the cluster's two ports must differ).
pub(crate) fn free_port_but(other: u16) -> Result<u16, SetupError> {
    loop {
        let port = free_port()?;
        if port != other {
            return Ok(port);
        }
    }
}

/// Starts a role container that exists and is stopped; says what it did. One whose
/// port setup chose was taken meanwhile is made again on another.
async fn start_existing(
    host: &ClusterHost,
    spec: &mut RoleContainer,
    settings: &mut Settings,
) -> Result<String, SetupError> {
    match host.start(&spec.name).await {
        Ok(()) => Ok("exists, started".to_string()),
        Err(e) if !spec.publish.is_empty() && choose_again(&e, spec, settings)? => {
            host.remove(&spec.name).await?;
            run_role(host, spec, settings).await?;
            Ok(format!(
                "recreated (its port was taken: API on port {})",
                settings.port
            ))
        }
        Err(e) => Err(e),
    }
}

/// Creates and starts a role container. A port setup chose that was taken meanwhile
/// (another program, another cluster set up at the same moment) is chosen again.
async fn run_role(
    host: &ClusterHost,
    spec: &mut RoleContainer,
    settings: &mut Settings,
) -> Result<(), SetupError> {
    let mut tries = 0;
    loop {
        match host.run(spec).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 5 && choose_again(&e, spec, settings)? => {
                tries += 1;
                host.remove(&spec.name).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// When `e` says a port of the manager's was taken and setup chose that port: chooses
/// another (both, when the engine's words do not say which), gives the manager's spec
/// the new ones, and says so.
fn choose_again(
    e: &SetupError,
    spec: &mut RoleContainer,
    settings: &mut Settings,
) -> Result<bool, SetupError> {
    if spec.publish.is_empty() {
        return Ok(false);
    }
    let text = e.to_string();
    let taken = text.contains("port is already allocated") || text.contains("already in use");
    if !taken || !(settings.port_chosen || settings.tls_port_chosen) {
        return Ok(false);
    }
    let local = mentions_port(&text, settings.port);
    let tls = mentions_port(&text, settings.tls_port);
    let neither = !local && !tls;
    let mut chose = false;
    if settings.port_chosen && (local || neither) {
        settings.port = free_port_but(settings.tls_port)?;
        chose = true;
    }
    if settings.tls_port_chosen && (tls || neither) {
        settings.tls_port = free_port_but(settings.port)?;
        chose = true;
    }
    spec.publish = manager_publish(settings);
    Ok(chose)
}

/// Whether the engine's message names `port` (":5443 failed", ":5443:"), not a port
/// it is a prefix of.
fn mentions_port(text: &str, port: u16) -> bool {
    let needle = format!(":{port}");
    text.match_indices(&needle).any(|(at, _)| {
        !text[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_words_name_the_taken_port() {
        let text = "cannot start x: Bind for 0.0.0.0:5443 failed: port is already allocated";
        assert!(mentions_port(text, 5443));
        assert!(!mentions_port(text, 544));
        assert!(!mentions_port(text, 5000));
    }
}
