//! `--publish`, `--publish-rm` and `--no-publish` as the `ports` of a request, and how
//! ports print in the tables. The flags map one to one to the API's fields: `--publish`
//! is `ports` (the whole list, on update too, as a PATCH replaces it), so what the CLI
//! sends is what a curl user would write; only `--publish-rm` reads the service's list
//! first, to send it back without the ports it names.

use anyhow::bail;
use mycluster_core::service::PortSpec;

/// The ports of a new service (or of a `create` over an existing one): the `--publish`
/// flags, `None` when none was given (the API keeps an existing service's ports then).
pub fn create(publish: &[PortSpec]) -> anyhow::Result<Option<Vec<PortSpec>>> {
    if publish.is_empty() {
        return Ok(None);
    }
    distinct(publish)?;
    Ok(Some(publish.to_vec()))
}

/// The ports a `service update` sends: the `--publish` list as given, none with
/// `--no-publish`, `current` without the ports `--publish-rm` names; `None` when no port
/// flag was given (the service keeps its ports).
pub fn update(
    publish: &[PortSpec],
    remove: &[u16],
    none: bool,
    current: &[PortSpec],
) -> anyhow::Result<Option<Vec<PortSpec>>> {
    if none {
        return Ok(Some(Vec::new()));
    }
    if remove.is_empty() {
        return create(publish);
    }
    let mut kept = current.to_vec();
    for &port in remove {
        let before = kept.len();
        kept.retain(|p| !named_by(p, port));
        if kept.len() == before {
            bail!(
                "--publish-rm {port}: the service publishes no port {port} and names no discovery-only port {port}; its ports: {}",
                list(current).unwrap_or_else(|| "none".into())
            );
        }
    }
    Ok(Some(kept))
}

/// Whether `--publish-rm port` removes `p`: a published port by the port it is published
/// on (unique in a service), a discovery-only one by its target.
fn named_by(p: &PortSpec, port: u16) -> bool {
    match p.published {
        Some(published) => published == port,
        None => p.target == port,
    }
}

/// Refuses what the manager would refuse anyway, naming the flag rather than the field:
/// one port published twice, or one flag given twice.
fn distinct(ports: &[PortSpec]) -> anyhow::Result<()> {
    for (i, port) in ports.iter().enumerate() {
        let earlier = &ports[..i];
        if let Some(published) = port.published {
            if earlier.iter().any(|p| p.published == Some(published)) {
                bail!(
                    "--publish {}: port {published} is published twice; publish each port once",
                    flag(port)
                );
            }
        }
        if earlier.contains(port) {
            bail!("--publish {} is given twice", flag(port));
        }
    }
    Ok(())
}

/// A port as the flag writes it: `8080:8000`, or `8000`.
fn flag(port: &PortSpec) -> String {
    match port.published {
        Some(published) => format!("{published}:{}", port.target),
        None => port.target.to_string(),
    }
}

/// `8080->8000/tcp, 9000/tcp`, or `None` when there are no ports.
pub fn list(ports: &[PortSpec]) -> Option<String> {
    (!ports.is_empty()).then(|| {
        ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(text: &str) -> PortSpec {
        PortSpec::parse_flag(text).expect("a valid flag")
    }

    #[test]
    fn publish_is_the_whole_list() {
        assert_eq!(create(&[]).expect("ok"), None);
        let given = [port("8080:8000"), port("9000")];
        assert_eq!(create(&given).expect("ok"), Some(given.to_vec()));
        assert_eq!(
            update(&given, &[], false, &[port("1:2")]).expect("ok"),
            Some(given.to_vec())
        );
        assert_eq!(update(&[], &[], false, &given).expect("ok"), None);
        assert_eq!(update(&[], &[], true, &given).expect("ok"), Some(vec![]));
    }

    #[test]
    fn publish_rm_names_a_published_port_or_a_discovery_only_target() {
        let current = [
            port("8080:8000"),
            port("8081:8000"),
            port("8000"),
            port("9000"),
        ];
        assert_eq!(
            update(&[], &[8080], false, &current).expect("ok"),
            Some(vec![port("8081:8000"), port("8000"), port("9000")])
        );
        // 8000 is a target of two published ports too: only the discovery-only one goes.
        assert_eq!(
            update(&[], &[8000, 9000], false, &current).expect("ok"),
            Some(vec![port("8080:8000"), port("8081:8000")])
        );
        let err = update(&[], &[7000], false, &current).expect_err("not there");
        assert!(
            err.to_string()
                .contains("its ports: 8080->8000/tcp, 8081->8000/tcp, 8000/tcp, 9000/tcp"),
            "{err}"
        );
    }

    #[test]
    fn a_port_published_twice_names_the_flag() {
        let err = create(&[port("8080:8000"), port("8080:9000")]).expect_err("twice");
        assert!(
            err.to_string()
                .starts_with("--publish 8080:9000: port 8080"),
            "{err}"
        );
        assert!(create(&[port("9000"), port("9000/tcp")]).is_err());
        assert_eq!(list(&[]), None);
    }
}
