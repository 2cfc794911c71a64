//! Where a docker workload is on its network: the alias it carries there (its service's
//! name, which the engine's DNS answers with every replica's address, in turn) and the
//! address at which this host reaches it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use bollard::models::{EndpointSettings, NetworkingConfig};

/// The service's name as the container's alias on `network` (the workloads' network):
/// other workloads on it then find the service by its name. Only a user-defined network
/// has that DNS; the engine refuses aliases anywhere else, so none is asked for there.
pub(crate) fn aliases(network: Option<&str>, service: &str) -> Option<NetworkingConfig> {
    let network = network?;
    if !has_dns(network) {
        return None;
    }
    Some(NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network.to_string(),
            EndpointSettings {
                aliases: Some(vec![service.to_string()]),
                ..Default::default()
            },
        )])),
    })
}

/// Whether containers on `network` can carry aliases: a network of the user's, not one
/// of the engine's own modes (`bridge`, the default, has no embedded DNS; `host` and
/// `none` have no endpoint; `container:<id>` shares another's).
fn has_dns(network: &str) -> bool {
    !matches!(network, "" | "bridge" | "default" | "host" | "none")
        && !network.starts_with("container:")
}

/// Which of a container's networks its address is taken from: the one named, else the
/// default bridge, else the first by name that has an address (a stable choice).
pub(crate) fn pick_address(
    networks: &HashMap<String, EndpointSettings>,
    wanted: Option<&str>,
) -> Option<IpAddr> {
    if networks.contains_key("host") && networks.len() == 1 {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let ip = |name: &str| {
        networks
            .get(name)
            .and_then(|endpoint| endpoint.ip_address.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
    };
    if let Some(wanted) = wanted {
        return ip(wanted);
    }
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    ip("bridge").or_else(|| names.into_iter().find_map(|name| ip(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_taken_from_the_right_network() {
        let endpoint = |ip: &str| EndpointSettings {
            ip_address: Some(ip.into()),
            ..Default::default()
        };
        let networks = HashMap::from([
            ("bridge".to_string(), endpoint("172.17.0.2")),
            ("apps".to_string(), endpoint("172.18.0.5")),
            ("zeta".to_string(), endpoint("")),
        ]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("an IP"));
        assert_eq!(pick_address(&networks, Some("apps")), ip("172.18.0.5"));
        assert_eq!(pick_address(&networks, None), ip("172.17.0.2"));
        assert_eq!(pick_address(&networks, Some("zeta")), None);
        let no_bridge = HashMap::from([
            ("b".to_string(), endpoint("10.0.0.2")),
            ("a".to_string(), endpoint("")),
        ]);
        assert_eq!(pick_address(&no_bridge, None), ip("10.0.0.2"));
        let host = HashMap::from([("host".to_string(), endpoint(""))]);
        assert_eq!(pick_address(&host, None), ip("127.0.0.1"));
        assert_eq!(pick_address(&HashMap::new(), None), None);
    }

    #[test]
    fn only_user_defined_networks_carry_aliases() {
        for network in ["apps", "test_default", "my-net"] {
            assert!(has_dns(network), "{network}");
        }
        for network in ["", "bridge", "default", "host", "none", "container:abc"] {
            assert!(!has_dns(network), "{network}");
        }
    }
}
