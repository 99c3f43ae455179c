//! The in-memory index: per table, an ordered persistent map from key to where its value
//! lies, and the [`Version`] that readers load as a whole.
//!
//! Maps are `imbl::OrdMap`s (B+trees with structural sharing): cloning one is O(1), so the
//! writer publishes a new version after every commit and readers keep old ones as long as
//! they like. Nobody ever waits for anybody.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use imbl::OrdMap;

use super::segment::Segment;

/// A key in the index. Cloning it (as path copying does) is a reference count increment.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct IndexKey(pub(crate) Arc<[u8]>);

impl Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// Where a value lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// File offset of the value.
    pub(crate) offset: u64,
    /// Sequence number of the batch that wrote it.
    pub(crate) seq: u64,
    pub(crate) segment: u32,
    pub(crate) len: u32,
}

/// The approximate bytes a record of this key and value takes in its segment: what a
/// segment stops holding live when the record is superseded. Header and padding vary by a
/// few bytes; compaction scheduling needs no more precision.
pub(crate) fn footprint(key_len: usize, value_len: u32) -> u64 {
    key_len as u64 + u64::from(value_len) + 12
}

/// One table's keys.
pub(crate) type TableMap = OrdMap<IndexKey, Loc>;

/// A table as a version sees it.
#[derive(Clone, Debug)]
pub(crate) struct TableState {
    pub(crate) name: Arc<str>,
    pub(crate) map: TableMap,
}

/// Everything a reader needs, at one point of the log.
#[derive(Clone, Debug, Default)]
pub(crate) struct Version {
    /// Sequence number of the last batch applied.
    pub(crate) seq: u64,
    /// Segment and offset just past the last batch applied.
    pub(crate) end: (u32, u64),
    /// Tables by id.
    pub(crate) tables: OrdMap<u32, TableState>,
    /// Table ids by name.
    pub(crate) names: OrdMap<Arc<str>, u32>,
    /// Mapped segments by id.
    pub(crate) segments: OrdMap<u32, Arc<Segment>>,
}

impl Version {
    /// The table with id `id`.
    pub(crate) fn table(&self, id: u32) -> Option<&TableState> {
        self.tables.get(&id)
    }

    /// The segment and location of `key` in table `id`.
    #[inline]
    pub(crate) fn lookup(&self, table: u32, key: &[u8]) -> Option<(&Arc<Segment>, Loc)> {
        let loc = *self.tables.get(&table)?.map.get(key)?;
        Some((self.segments.get(&loc.segment)?, loc))
    }
}

/// Live bytes per segment, to pick compaction victims.
#[derive(Debug, Default, Clone)]
pub(crate) struct Usage {
    live: HashMap<u32, u64>,
}

impl Usage {
    /// Counts a value now live in `segment`.
    pub(crate) fn add(&mut self, key_len: usize, loc: &Loc) {
        *self.live.entry(loc.segment).or_default() += footprint(key_len, loc.len);
    }

    /// Counts a value no longer live.
    pub(crate) fn remove(&mut self, key_len: usize, loc: &Loc) {
        if let Some(live) = self.live.get_mut(&loc.segment) {
            *live = live.saturating_sub(footprint(key_len, loc.len));
        }
    }

    /// Approximate live bytes of `segment`.
    pub(crate) fn live(&self, segment: u32) -> u64 {
        self.live.get(&segment).copied().unwrap_or(0)
    }

    /// Forgets a deleted segment.
    pub(crate) fn forget(&mut self, segment: u32) {
        self.live.remove(&segment);
    }

    /// Recounts everything from the index.
    pub(crate) fn recount(version: &Version) -> Usage {
        let mut usage = Usage::default();
        for table in version.tables.values() {
            for (key, loc) in table.map.iter() {
                usage.add(key.0.len(), loc);
            }
        }
        usage
    }
}
