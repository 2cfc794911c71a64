//! Image references checked with Docker's own grammar (distribution/reference), so a
//! service is refused at the API rather than failing later on every worker.
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [domain "/"] path-component ["/" path-component]*
//! domain    := host [":" port]        (a first component with '.' or ':', or "localhost")
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag       := [\w][\w.-]{0,127}
//! digest    := algorithm ":" [0-9a-fA-F]{32,}
//! ```

/// Longest name (domain and path) Docker accepts.
const NAME_MAX: usize = 255;

/// Checks an image reference; the error says what is wrong with it.
pub fn validate_image(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("image must not be empty".into());
    }
    if reference.len() > 512 {
        return Err("image reference is longer than 512 characters".into());
    }
    if let Some(c) = reference
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "image '{}' contains {:?}, which Docker does not accept",
            printable(reference),
            c
        ));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        validate_digest(digest).map_err(|why| format!("image '{reference}': {why}"))?;
    }
    // A tag is after the last ':' that follows the last '/'; an earlier ':' is a port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(tag).map_err(|why| format!("image '{reference}': {why}"))?;
    }
    validate_name(name).map_err(|why| format!("image '{reference}': {why}"))
}

fn printable(s: &str) -> String {
    s.escape_debug().to_string()
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("repository name is empty".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "repository name is longer than {NAME_MAX} characters"
        ));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && is_domain_like(components[0]) {
        validate_domain(components[0])?;
        components.remove(0);
    }
    for component in components {
        validate_path_component(component)?;
    }
    Ok(())
}

/// Docker's rule for telling a registry host from the first path component. (Newer
/// clients also take an uppercase first component for a host; the 20.10 engine refuses
/// it as "must be lowercase", and so do we: the stricter reading fails early.)
fn is_domain_like(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let bad = || format!("registry host '{domain}' is not a valid host[:port]");
    // An IPv6 host is bracketed: "[::1]:5000".
    let (host, port) = match domain.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
            if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                return Err(bad());
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
            };
            (None, port)
        }
        None => match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        },
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_some_and(|host| !host.split('.').all(label_ok)) {
        return Err(bad());
    }
    if port.is_some_and(|port| port.is_empty() || !port.chars().all(|c| c.is_ascii_digit())) {
        return Err(bad());
    }
    Ok(())
}

fn validate_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("repository name has an empty path component".into());
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "path component '{component}' must start and end with a lowercase letter or digit"
        ));
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(format!(
                "path component '{component}' has an invalid separator '{sep}' (allowed: '.', '_', '__', '-')"
            ));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let ok = match chars.next() {
        Some(first) => {
            word(first) && tag.len() <= 128 && chars.all(|c| word(c) || c == '.' || c == '-')
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag '{tag}' is invalid (1-128 of letters, digits, '_', '.', '-', not starting with '.' or '-')"
        ))
    }
}

fn validate_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("digest '{digest}' must look like 'sha256:<hex>'"))?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            let mut cs = part.chars();
            matches!(cs.next(), Some(c) if c.is_ascii_alphabetic())
                && cs.all(|c| c.is_ascii_alphanumeric())
        });
    if !algorithm_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("digest '{digest}' must look like 'sha256:<hex>'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_image;

    #[test]
    fn accepts_what_docker_accepts() {
        for image in [
            "crccheck/hello-world",
            "redis",
            "redis:alpine",
            "mycluster/hello-world:latest",
            "localhost/foo",
            "localhost:5000/foo/bar:1.0",
            "registry.example.com/team/app:v1.2.3-rc_1",
            "a__b/c.d/e---f",
            "[::1]:5000/app",
            "ubuntu@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ubuntu:22.04@sha256:0123456789abcdef0123456789abcdef",
            "Example.com/lower",
        ] {
            assert_eq!(validate_image(image), Ok(()), "{image}");
        }
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for image in [
            "",
            "Ubuntu",
            "UPPER/case",
            "hello world",
            "hello/",
            "/hello",
            "hello//world",
            "-hello",
            "hello-",
            "a...b",
            "a___b",
            "ubuntu:",
            "ubuntu:-tag",
            "ubuntu:.tag",
            "ubuntu@sha256:short",
            "ubuntu@sha256",
            "host:port/app",
            "a\nb",
            "x:y:z",
        ] {
            assert!(
                validate_image(image).is_err(),
                "{image:?} should be refused"
            );
        }
        let long_tag = format!("app:{}", "a".repeat(129));
        assert!(validate_image(&long_tag).is_err());
        let long_name = "a".repeat(256);
        assert!(validate_image(&long_name).is_err());
    }

    #[test]
    fn errors_name_the_problem() {
        let err = validate_image("Ubuntu").unwrap_err();
        assert!(err.contains("lowercase"), "{err}");
        let err = validate_image("app:-x").unwrap_err();
        assert!(err.contains("tag"), "{err}");
    }
}
