//! The images a cluster runs, built on the local engine with no registry: the cluster's
//! own image and the demo image `mycluster/hello-world` (`mycluster image demo`), both
//! `FROM scratch` plus the running `mycluster` binary (and, when it is not statically
//! linked, the shared libraries it needs) — the demo answering "Hello World" on port
//! 8000 like the original's `crccheck/hello-world` — and, for the Redis store, an image
//! of this host's `redis-server`.

use std::collections::HashMap;
use std::path::Path;

use crate::error::SetupError;
use crate::image_builder::{ContextFile, Images};

pub const DEMO_IMAGE: &str = "mycluster/hello-world:latest";
/// The image the original README used; offline we can stand in for it.
pub const ORIGINAL_DEMO_IMAGE: &str = "crccheck/hello-world:latest";

/// The label that says which build of `mycluster` an image of ours holds.
const LABEL_BINARY: &str = "mycluster.binary";
/// The label that says what an image of ours is (`demo`, `mycluster`).
const LABEL_KIND: &str = "mycluster.image";

/// Builds the demo image if it is missing, or was built by us from another build of
/// `mycluster` (so a new release's demo, e.g. its `X-Served-By` header or `mycluster
/// resolve`, is what runs), or always with `rebuild`; and gives it the `aliases` that are
/// not taken yet, or that are our stand-ins of an older build. An image of that name
/// that is not ours is left alone. Returns what it did, for people.
pub async fn ensure_demo(rebuild: bool, aliases: &[String]) -> Result<Vec<String>, SetupError> {
    let images = Images::connect().await?;
    let binary = binary_tag()?;
    let outdated = |labels: &Option<HashMap<String, String>>| match labels {
        None => true,
        Some(labels) => {
            labels.get(LABEL_KIND).map(String::as_str) == Some("demo")
                && labels.get(LABEL_BINARY) != Some(&binary)
        }
    };
    let mut done = Vec::new();
    if rebuild || outdated(&images.labels(DEMO_IMAGE).await?) {
        let extra = "EXPOSE 8000\nCMD [\"hello\", \"--port\", \"8000\"]\n";
        let how = build_self_image(&images, DEMO_IMAGE, "demo", extra).await?;
        done.push(format!("built {DEMO_IMAGE} ({how})"));
    }
    for alias in aliases {
        if !outdated(&images.labels(alias).await?) {
            continue;
        }
        images.tag(DEMO_IMAGE, alias).await?;
        done.push(format!(
            "tagged {DEMO_IMAGE} as {alias}: an offline stand-in (remove it with `docker rmi {alias}` to pull the real one)"
        ));
    }
    Ok(done)
}

/// `<version>-<hash of this binary>`: what tells one build of `mycluster` from another.
fn binary_tag() -> Result<String, SetupError> {
    let bytes = read(&this_executable()?)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&bytes, &mut hasher);
    Ok(format!(
        "{}-{:08x}",
        env!("CARGO_PKG_VERSION"),
        std::hash::Hasher::finish(&hasher) as u32
    ))
}

/// The image the cluster's own containers run: this binary, tagged by its content so a
/// new build gets a new image. Built if missing; returns the tag and what was done.
pub async fn ensure_mycluster_image() -> Result<(String, Option<String>), SetupError> {
    let tag = format!("mycluster:{}", binary_tag()?);
    let images = Images::connect().await?;
    if images.exists(&tag).await? {
        return Ok((tag, None));
    }
    let how = build_self_image(&images, &tag, "mycluster", "").await?;
    Ok((tag.clone(), Some(format!("built {tag} ({how})"))))
}

/// `FROM scratch` + this binary as the entrypoint, plus `extra` Dockerfile lines.
async fn build_self_image(
    images: &Images,
    tag: &str,
    kind: &str,
    extra: &str,
) -> Result<&'static str, SetupError> {
    let (files, how) = self_rootfs().map_err(|e| SetupError::Package(Box::new(e)))?;
    let dockerfile = format!("FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/mycluster\"]\n{extra}");
    let labels = HashMap::from([
        (LABEL_KIND.to_string(), kind.to_string()),
        (LABEL_BINARY.to_string(), binary_tag()?),
    ]);
    images
        .build(tag, &dockerfile, &files, &labels, |line| {
            tracing::debug!("build: {line}")
        })
        .await?;
    Ok(how)
}

/// This executable at `/mycluster` in the image, and its libraries.
fn self_rootfs() -> Result<(Vec<ContextFile>, &'static str), SetupError> {
    // The resolved path: given /proc/self/exe, ldd would describe itself.
    rootfs(&this_executable()?, "/mycluster")
}

/// The running binary: the one every image of ours is made of.
fn this_executable() -> Result<std::path::PathBuf, SetupError> {
    std::env::current_exe().map_err(|e| SetupError::io("cannot find this executable".into(), e))
}

fn read(path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError::io(format!("cannot read {}", path.display()), e))
}

/// `binary` at `at` in the image, and if it is dynamically linked, every library `ldd`
/// names, at the same paths, so it runs in a `FROM scratch` image.
fn rootfs(path: &Path, at: &str) -> Result<(Vec<ContextFile>, &'static str), SetupError> {
    let exe = read(path)?;
    let mut files = vec![ContextFile {
        path: format!("rootfs{at}"),
        contents: exe,
        mode: 0o755,
    }];
    let output = std::process::Command::new("ldd").arg(path).output();
    let libraries: Vec<String> = match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(library_path)
            .collect(),
        // "not a dynamic executable", or no ldd: a static binary needs nothing more.
        _ => Vec::new(),
    };
    for library in &libraries {
        let contents = read(Path::new(library))?;
        files.push(ContextFile {
            path: format!("rootfs{library}"),
            contents,
            mode: 0o755,
        });
    }
    let how = if libraries.is_empty() {
        "static binary"
    } else {
        "binary and its shared libraries"
    };
    Ok((files, how))
}

/// The image `<name>_redis_1` runs when no registry can give one: `FROM scratch` + this
/// host's `redis-server` and its libraries. Built if missing; returns the tag and what
/// was done.
pub async fn ensure_redis_image() -> Result<(String, Option<String>), SetupError> {
    let installed = which("redis-server").ok_or(SetupError::NoRedis)?;
    let version = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_else(|| "local".into());
    let tag = format!("mycluster/redis:{version}");
    let images = Images::connect().await?;
    if images.exists(&tag).await? {
        return Ok((tag, None));
    }
    // Redis picks its mode from argv[0]: the file must be called redis-server.
    let (files, how) = rootfs(&std::fs::canonicalize(&installed)?, "/usr/bin/redis-server")?;
    let dockerfile =
        "FROM scratch\nCOPY rootfs/ /\nEXPOSE 6379\nENTRYPOINT [\"/usr/bin/redis-server\"]\n";
    let labels = HashMap::from([("mycluster.image".to_string(), "redis".to_string())]);
    images
        .build(&tag, dockerfile, &files, &labels, |line| {
            tracing::debug!("build: {line}")
        })
        .await?;
    Ok((
        tag.clone(),
        Some(format!("built {tag} from this host's redis-server ({how})")),
    ))
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// The absolute path in one line of `ldd` output, if it names one.
fn library_path(line: &str) -> Option<String> {
    let candidate = match line.split_once("=>") {
        Some((_, right)) => right.trim(),
        None => line.trim(),
    };
    let path = candidate.split_whitespace().next()?;
    Path::new(path).is_absolute().then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::library_path;

    #[test]
    fn reads_ldd_lines() {
        assert_eq!(
            library_path("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)").as_deref(),
            Some("/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            library_path("\t/lib64/ld-linux-x86-64.so.2 (0x00007f)").as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(library_path("\tlinux-vdso.so.1 (0x00007ffd)"), None);
    }
}
