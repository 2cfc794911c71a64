//! Building images through the Docker Engine API, with no registry and no docker CLI:
//! a build context is made in memory as a tar archive and sent to `POST /build`.

use std::collections::HashMap;

use bollard::query_parameters::{BuildImageOptionsBuilder, TagImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use mycluster_runtime::connect_engine;

use crate::error::SetupError;

/// A file of a build context.
pub struct ContextFile {
    /// Relative path inside the context, e.g. `rootfs/mycluster`.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

pub struct Images {
    docker: Docker,
}

impl Images {
    pub async fn connect() -> Result<Images, SetupError> {
        Ok(Images {
            docker: connect_engine().await?,
        })
    }

    /// Whether the engine has this image (name:tag) locally.
    pub async fn exists(&self, image: &str) -> Result<bool, SetupError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(SetupError::Engine(format!(
                "cannot inspect image {image}: {e}"
            ))),
        }
    }

    /// The labels of this image, or `None` when the engine does not have it.
    pub async fn labels(
        &self,
        image: &str,
    ) -> Result<Option<std::collections::HashMap<String, String>>, SetupError> {
        match self.docker.inspect_image(image).await {
            Ok(inspected) => Ok(Some(
                inspected
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default(),
            )),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(SetupError::Engine(format!(
                "cannot inspect image {image}: {e}"
            ))),
        }
    }

    /// Builds `tag` from `dockerfile` and `files`, labelled with `labels`; calls
    /// `progress` with each line the build prints.
    pub async fn build(
        &self,
        tag: &str,
        dockerfile: &str,
        files: &[ContextFile],
        labels: &HashMap<String, String>,
        mut progress: impl FnMut(&str),
    ) -> Result<(), SetupError> {
        let context = tar_context(dockerfile, files)
            .map_err(|e| SetupError::Build(format!("cannot make the build context: {e}")))?;
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(labels)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| SetupError::Build(format!("building {tag} failed: {e}")))?;
            if let Some(detail) = info.error_detail {
                let why = detail.message.unwrap_or_else(|| "unknown error".into());
                return Err(SetupError::Build(format!("building {tag} failed: {why}")));
            }
            if let Some(line) = info.stream {
                let line = line.trim();
                if !line.is_empty() {
                    progress(line);
                }
            }
        }
        Ok(())
    }

    /// Gives `image` a second name `alias` (repo:tag).
    pub async fn tag(&self, image: &str, alias: &str) -> Result<(), SetupError> {
        let (repo, tag) = match alias.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((repo, tag)) => (repo, tag),
            None => (alias, "latest"),
        };
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(image, Some(options))
            .await
            .map_err(|e| SetupError::Engine(format!("cannot tag {image} as {alias}: {e}")))
    }
}

fn tar_context(dockerfile: &str, files: &[ContextFile]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, contents: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, path, contents)
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644)?;
    for file in files {
        add(&file.path, &file.contents, file.mode)?;
    }
    builder.into_inner()
}
