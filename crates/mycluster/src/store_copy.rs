//! `mycluster store copy`: moves a cluster's whole state from one store backend to
//! another (e.g. from the embedded file to Redis), in one write on the target (each
//! backend's `replace`).

use anyhow::{bail, Context};
use mycluster_store::{Create, Head, Holder, OpenOptions, Snapshot, Store};

use crate::cli::StoreCopyArgs;

/// `embedded:<data dir>` or `redis://host:port[/db]`.
async fn open(spec: &str, cluster: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let (url, dir) = match spec.strip_prefix("embedded:") {
        Some(dir) if !dir.is_empty() => ("embedded", std::path::PathBuf::from(dir)),
        Some(_) => bail!("'{spec}': give the data dir, as embedded:/path/to/dir"),
        None if spec.starts_with("redis://") => (spec, std::path::PathBuf::new()),
        None => bail!("'{spec}': use embedded:<data dir> or redis://host:port[/db]"),
    };
    let options = OpenOptions {
        cluster: cluster.to_string(),
        create: Create::IfMissing,
        holder: Holder::this_process("store copy"),
    };
    mycluster_store::open(url, &dir, &options)
        .await
        .with_context(|| format!("cannot open {spec}"))
}

pub async fn copy(args: StoreCopyArgs) -> anyhow::Result<()> {
    if let Some(dir) = args.from.strip_prefix("embedded:") {
        if !std::path::Path::new(dir).join("mycluster.redb").exists() {
            bail!("{} holds no embedded store (no mycluster.redb)", dir);
        }
    }
    let from = open(&args.from, &args.name).await?;
    let to = open(&args.to, &args.name).await?;
    let source = from.load().await.context("cannot read the source")?;
    let target = to.load().await.context("cannot read the target")?;
    let target_empty = target.head.index == 0
        && target.services.is_empty()
        && target.tasks.is_empty()
        && target.workers.is_empty();
    if !target_empty && !args.force {
        bail!(
            "{} already holds cluster {} (index {}, {} services): give --force to overwrite it",
            args.to,
            args.name,
            target.head.index,
            target.services.len()
        );
    }
    // The target takes the source's state whole, at a head past both histories: a
    // manager that ran on the target must not take it for its own past.
    let head = Head {
        index: source.head.index.max(target.head.index) + 1,
        commit: rand::random(),
    };
    let copied = format!(
        "{} services, {} tasks, {} workers",
        source.services.len(),
        source.tasks.len(),
        source.workers.len()
    );
    to.replace(&Snapshot { head, ..source })
        .await
        .context("cannot write the target")?;
    to.release().await;
    from.release().await;
    println!(
        "Copied cluster {}: {copied} and the counters (index {}) from {} to {}",
        args.name,
        head.index,
        from.describe(),
        to.describe()
    );
    Ok(())
}
