//! The cluster's containers as a table, as `setup` ends and `manage --command ps` shows
//! them (the same layout as the CLI's other tables).

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

use crate::host::ClusterContainer;

/// Prints one row per container: id, name, role, the engine's status, image.
pub fn print_ps(containers: &[ClusterContainer]) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["CONTAINER ID", "NAME", "ROLE", "STATUS", "IMAGE"]);
    for c in containers {
        t.add_row([
            c.id.clone(),
            c.name.clone(),
            c.role.clone(),
            c.status.clone(),
            c.image.clone(),
        ]);
    }
    println!("{t}");
}
