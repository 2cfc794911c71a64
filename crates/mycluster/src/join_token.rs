//! `mycluster token --join [--rotate]`: the join token a new host joins with, as the
//! manager tells it (`MCJT1-<CA digest>-<secret>` when it serves TLS), and its rotation.
//! Without a manager that answers, the join token saved with the cluster's settings.

use anyhow::Context;

use crate::cli::Global;

/// The join token to print: the manager's (rotated first with `rotate`), else the saved
/// one (not when rotating: a rotation that did not happen must not look done).
pub async fn run(global: &Global, name: Option<&str>, rotate: bool) -> anyhow::Result<String> {
    let mut global = global.clone();
    if let (None, Some(name)) = (&global.manager, name) {
        global.manager = mycluster_setup::settings::load_settings(name).map(|s| s.manager_url());
    }
    let client = crate::remote::client(&global);
    if rotate {
        let doc = client?
            .rotate_join_token()
            .await
            .context("cannot rotate the join token")?;
        eprintln!(
            "The join token was rotated: the old one is refused from now on; registered \
             workers keep working."
        );
        keep_in_setup(&global, &doc.token).await?;
        return Ok(doc.token);
    }
    let asked = match client {
        Ok(client) => client.join_token().await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match asked {
        Ok(doc) => Ok(doc.token),
        Err(e) => {
            let saved = mycluster_setup::settings::token(name, true)
                .with_context(|| format!("the manager did not tell the join token ({e})"))?;
            tracing::debug!("the manager did not tell the join token ({e}): the saved one");
            Ok(saved)
        }
    }
}

/// A cluster `setup` made on this host keeps its join token in its settings, and its
/// ingress presents it: both take the new one (the ingress is made again with it; the
/// manager and the workers are not: see `mycluster_setup`'s `converge`).
async fn keep_in_setup(global: &Global, token: &str) -> anyhow::Result<()> {
    let Some(mut settings) =
        mycluster_setup::settings::saved_for(&global.manager_url()).filter(|s| !s.dev)
    else {
        return Ok(());
    };
    let secret = match mycluster_tls::JoinToken::parse(token) {
        Ok(join) => join.secret,
        Err(_) => token.to_string(),
    };
    settings.join_token = Some(secret);
    mycluster_setup::settings::save(&settings)?;
    eprintln!(
        "Giving the ingress of cluster '{}' the new token (`mycluster manage up`):",
        settings.name
    );
    mycluster_setup::manage(
        mycluster_setup::ManageCommand::Up,
        Some(settings.name.clone()),
    )
    .await?;
    Ok(())
}
