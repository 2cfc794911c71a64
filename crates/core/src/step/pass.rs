//! The periodic pass: reconcile and schedule everything. Every other command already
//! reconciles what it touched; this is the level-triggered safety net that repairs what a
//! missed event or a failed commit left behind, and starts the replacements whose
//! crash-loop backoff has run out.

use crate::commands::CommandError;
use crate::Txn;

use super::{Applied, Command, Context, Scope};

pub struct Reconcile;

impl Command for Reconcile {
    type Outcome = ();

    fn apply(self, _txn: &mut Txn, _ctx: &Context) -> Result<Applied<()>, CommandError> {
        Ok(Applied::new((), Scope::All))
    }
}
