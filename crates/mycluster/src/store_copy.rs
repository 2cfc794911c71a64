//! `mycluster store copy`: moves a cluster's whole state from one store backend to
//! another (e.g. from the embedded file to Redis), in one commit on the target.

use anyhow::{bail, Context};
use mycluster_core::Change;
use mycluster_store::Store;

use crate::cli::StoreCopyArgs;

/// `embedded:<data dir>` or `redis://host:port[/db]`.
async fn open(spec: &str, cluster: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let (url, dir) = match spec.strip_prefix("embedded:") {
        Some(dir) if !dir.is_empty() => ("embedded", std::path::PathBuf::from(dir)),
        Some(_) => bail!("'{spec}': give the data dir, as embedded:/path/to/dir"),
        None if spec.starts_with("redis://") => (spec, std::path::PathBuf::new()),
        None => bail!("'{spec}': use embedded:<data dir> or redis://host:port[/db]"),
    };
    mycluster_store::open(url, &dir, cluster)
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
    let target_empty = target.index == 0
        && target.services.is_empty()
        && target.tasks.is_empty()
        && target.workers.is_empty();
    if !target_empty && !args.force {
        bail!(
            "{} already holds cluster {} (index {}, {} services): give --force to overwrite it",
            args.to,
            args.name,
            target.index,
            target.services.len()
        );
    }
    let mut changes: Vec<Change> = Vec::new();
    // Overwriting: what the target has and the source lacks goes.
    changes.extend(
        target
            .services
            .iter()
            .map(|s| Change::DeleteService(s.spec.name.clone())),
    );
    changes.extend(
        target
            .tasks
            .iter()
            .map(|t| Change::DeleteTask(t.id.clone())),
    );
    changes.extend(
        target
            .workers
            .iter()
            .map(|w| Change::DeleteWorker(w.name.clone())),
    );
    changes.extend(source.services.iter().cloned().map(Change::PutService));
    changes.extend(source.tasks.iter().cloned().map(Change::PutTask));
    changes.extend(source.workers.iter().cloned().map(Change::PutWorker));
    changes.push(Change::PutCounters(source.counters));
    to.commit(source.index.max(target.index), changes)
        .await
        .context("cannot write the target")?;
    println!(
        "Copied cluster {}: {} services, {} tasks, {} workers and the counters (index {}) from {} to {}",
        args.name,
        source.services.len(),
        source.tasks.len(),
        source.workers.len(),
        source.index,
        from.describe(),
        to.describe()
    );
    Ok(())
}
