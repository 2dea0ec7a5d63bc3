//! The stored format's version, at `meta:format`. A store without one was written by a release
//! from before versions (format 1), which this code reads as it is. A store stamped with a
//! newer format was written by a newer release: the sweep refuses to work on it and readiness
//! fails, so a rollback never applies old rules to records it does not know.
//!
//! Formats: 1, the first release; 2, creation entries may follow proven holes, `sealed`
//! journal entries, listing positions at `op:{op}:listed`, retention's resume position at
//! `purge:next:{tenant}`.

use crate::foundation::error::StoreError;
use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};

/// The format this code writes.
pub const CURRENT: u64 = 2;

/// The store's format, 1 when it carries none.
pub async fn read(store: &impl Store) -> StoreResult<u64> {
    let stamped = store.get(keys::FORMAT).await?;
    match stamped {
        None => Ok(1),
        Some(v) => String::from_utf8(v)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("`meta:format` is not a number".into())),
    }
}

/// Checks that this code knows the store's format and stamps it with [`CURRENT`] if it is
/// older (no migration is needed from format 1: its records are read as they are).
pub async fn adopt(store: &impl Store) -> StoreResult<()> {
    let found = read(store).await?;
    if found > CURRENT {
        return Err(StoreError::Corrupt(format!(
            "the store has format {found}, written by a newer release; this one knows {CURRENT}"
        )));
    }
    if found < CURRENT {
        store
            .set(keys::FORMAT, CURRENT.to_string().as_bytes())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::MemoryStore;
    use futures::executor::block_on;

    #[test]
    fn an_unstamped_store_is_format_1_and_is_stamped_once_a_newer_one_is_refused() {
        let s = MemoryStore::new();
        block_on(async {
            assert_eq!(read(&s).await.unwrap(), 1);
            adopt(&s).await.unwrap();
            assert_eq!(read(&s).await.unwrap(), CURRENT);
            s.reset_counts();
            adopt(&s).await.unwrap();
            assert_eq!(s.total_ops(), 1, "stamped once: later checks only read");
            s.set(keys::FORMAT, (CURRENT + 1).to_string().as_bytes())
                .await
                .unwrap();
            assert!(matches!(adopt(&s).await, Err(StoreError::Corrupt(_))));
        });
    }
}
