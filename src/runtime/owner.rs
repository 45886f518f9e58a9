//! Which data directory owns the table: claimed at open, checked by the
//! commands that read both.

use std::path::Path;

use super::{datadir, IngestError};
use crate::checkpoint::TableOwner;
use crate::store::Store;

/// How [`IngesterBuilder::open`](super::IngesterBuilder::open) treats a table that another data directory
/// owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ownership {
    /// Claim a table nobody owns; refuse one another data directory owns
    /// ([`IngestError::NotOwner`]) before anything is acknowledged.
    #[default]
    Claim,
    /// Take the table over whoever owns it: for a data directory that
    /// replaces a lost one (a new machine). The old owner, if it still runs,
    /// fails its next checkpoint and commits nothing more.
    TakeOver,
}

/// Makes the data directory of `record` the owner of the table at `store`,
/// or refuses with [`IngestError::NotOwner`] when another one owns it
/// (unless `ownership` is [`Ownership::TakeOver`]).
pub async fn claim_table(
    store: &Store,
    record: &datadir::DataDirRecord,
    data_dir: &Path,
    ownership: Ownership,
) -> Result<(), IngestError> {
    let ours = TableOwner::new(
        &record.id,
        &std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
    );
    let owner = match TableOwner::read(store).await? {
        Some(owner) => owner,
        None => ours.claim(store).await?,
    };
    if owner.owner_id == record.id {
        return Ok(());
    }
    match ownership {
        Ownership::TakeOver => {
            tracing::warn!(previous = %owner, "taking the table over from its previous owner");
            ours.take_over(store).await?;
            Ok(())
        }
        Ownership::Claim => Err(IngestError::NotOwner {
            store: store.name().to_owned(),
            owner: owner.to_string(),
            data_dir: data_dir.to_path_buf(),
            ours: record.id.clone(),
        }),
    }
}

/// Refuses a data directory whose table another data directory owns (for
/// the commands that read both, such as recovery). A table nobody owns, or a
/// directory without a record (written before records existed), passes.
pub async fn check_table_owner(
    store: &Store,
    data_dir: &Path,
    record: Option<&datadir::DataDirRecord>,
) -> Result<(), IngestError> {
    let Some(record) = record else {
        return Ok(());
    };
    match TableOwner::read(store).await? {
        Some(owner) if owner.owner_id != record.id => Err(IngestError::NotOwner {
            store: store.name().to_owned(),
            owner: owner.to_string(),
            data_dir: data_dir.to_path_buf(),
            ours: record.id.clone(),
        }),
        _ => Ok(()),
    }
}
