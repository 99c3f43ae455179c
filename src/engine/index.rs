//! The in-memory index: keys and locations, and the [`Version`] that readers load as a
//! whole. Each table's keys are a [`TableMap`] of sorted runs (see `table_map`); the small
//! maps of a version (tables, names, segments) are `imbl::OrdMap`s, so cloning a version
//! for every commit costs a few reference counts. Nobody ever waits for anybody.

use std::collections::HashMap;
use std::sync::Arc;

use imbl::OrdMap;

use super::record::{MAX_KEY_LEN, VALUE_ALIGN};
use super::segment::Segment;
pub(crate) use super::table_map::TableMap;

/// Keys up to this length live inside the index node itself.
const INLINE_KEY: usize = 30;

/// A key in the index: short keys inline (a lookup compares them without chasing a pointer,
/// and copying one in a merge is a 32-byte copy), longer ones shared.
#[derive(Clone)]
pub(crate) enum IndexKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Shared(Arc<[u8]>),
}

impl IndexKey {
    pub(crate) fn new(key: &[u8]) -> IndexKey {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            IndexKey::Inline { len: key.len() as u8, bytes }
        } else {
            IndexKey::Shared(Arc::from(key))
        }
    }

    /// The first 8 bytes as a big-endian integer, zero-padded: comparing prefixes orders
    /// keys as comparing bytes does, unless the prefixes are equal.
    #[inline]
    pub(crate) fn prefix(&self) -> u64 {
        match self {
            IndexKey::Inline { bytes, .. } => u64::from_be_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
            ]),
            IndexKey::Shared(bytes) => prefix_of(bytes),
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            IndexKey::Inline { len, bytes } => &bytes[..*len as usize],
            IndexKey::Shared(bytes) => bytes,
        }
    }

    /// Heap bytes this key holds outside the index node.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            IndexKey::Inline { .. } => 0,
            IndexKey::Shared(bytes) => bytes.len() + 16,
        }
    }
}

impl std::borrow::Borrow<[u8]> for IndexKey {
    /// `IndexKey`'s order is its bytes' order, so maps of keys can be searched by bytes.
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for IndexKey {}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexKey {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.prefix().cmp(&other.prefix()).then_with(|| self.as_bytes().cmp(other.as_bytes()))
    }
}

/// The first 8 bytes of `key` as a big-endian integer, zero-padded: comparing prefixes
/// orders keys as comparing bytes does, unless the prefixes are equal.
#[inline]
pub(crate) fn prefix_of(key: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    let n = key.len().min(8);
    first[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(first)
}

/// A key to look up, with its prefix computed once: prefixes compare as one integer, and
/// keys of different prefixes compare as their prefixes, so most steps of a lookup never
/// reach `memcmp`.
pub(crate) struct Probe<'a> {
    prefix: u64,
    bytes: &'a [u8],
}

impl<'a> Probe<'a> {
    #[inline]
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Probe { prefix: prefix_of(bytes), bytes }
    }

    /// The first 8 bytes as a big-endian integer, zero-padded.
    #[inline]
    pub(crate) fn prefix(&self) -> u64 {
        self.prefix
    }

    /// The key.
    #[inline]
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_bytes())
    }
}

/// Segments hold at most this many bytes: a value's offset in its file fits in the low
/// [`Loc`] bits this leaves (the writer and recovery refuse larger segments).
pub(crate) const MAX_SEGMENT_LEN: u64 = 1 << VALUE_OFFSET_BITS;
const VALUE_OFFSET_BITS: u32 = 47;
/// The most bytes a record can hold before its value: the longest header (crc, kind and
/// four varints), the longest key and the most padding. It fits in the 17 bits above the
/// value offset.
const MAX_VALUE_DISTANCE: u64 = 5 + 10 + 5 + 3 + 5 + MAX_KEY_LEN as u64 + (VALUE_ALIGN as u64 - 1);
const MAX_VALUE_DISTANCE_MASK: u64 = (1 << (64 - VALUE_OFFSET_BITS)) - 1;
const _: () = assert!(MAX_VALUE_DISTANCE <= MAX_VALUE_DISTANCE_MASK);
// The index's memory per key is a measured figure (docs/design.md §6): a location stays 24 bytes.
const _: () = assert!(std::mem::size_of::<Loc>() == 24);

/// Where a value lies, and where the record that holds it starts (reads check the record's
/// CRC). 24 bytes, as small as a value's offset alone needed: the record's distance before
/// the value shares the offset's word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// The value's file offset in the low 47 bits; in the high 17, how many bytes before
    /// it its record starts.
    at: u64,
    /// Sequence number of the batch that wrote it.
    pub(crate) seq: u64,
    pub(crate) segment: u32,
    pub(crate) len: u32,
}

impl Loc {
    /// The value of `len` bytes at file offset `value` of `segment`, in the record starting
    /// at `record`, written by batch `seq`: offsets the writer just placed, within a segment
    /// of at most [`MAX_SEGMENT_LEN`] bytes (segments are never mapped larger). Offsets read
    /// from a file go through [`checked`](Self::checked).
    #[inline]
    pub(crate) fn new(segment: u32, record: u64, value: u64, len: u32, seq: u64) -> Loc {
        debug_assert!(Loc::checked(segment, record, value, len, seq).is_some(), "{record} {value} {len}");
        // Masked, so a broken precondition gives a wrong location (which the read's CRC check
        // reports), never an overflow.
        let distance = value.wrapping_sub(record) & (MAX_VALUE_DISTANCE_MASK);
        Loc { at: (value & (MAX_SEGMENT_LEN - 1)) | distance << VALUE_OFFSET_BITS, seq, segment, len }
    }

    /// [`new`](Self::new), or `None` if the offsets cannot be those of a record of a segment
    /// of at most [`MAX_SEGMENT_LEN`] bytes.
    pub(crate) fn checked(segment: u32, record: u64, value: u64, len: u32, seq: u64) -> Option<Loc> {
        value.checked_sub(record).filter(|&d| d <= MAX_VALUE_DISTANCE)?;
        value.checked_add(u64::from(len)).filter(|&end| end <= MAX_SEGMENT_LEN)?;
        let distance = value - record;
        Some(Loc { at: value | distance << VALUE_OFFSET_BITS, seq, segment, len })
    }

    /// File offset of the value.
    #[inline]
    pub(crate) fn offset(&self) -> u64 {
        self.at & (MAX_SEGMENT_LEN - 1)
    }

    /// File offset of the record holding the value.
    #[inline]
    pub(crate) fn record(&self) -> u64 {
        self.offset() - (self.at >> VALUE_OFFSET_BITS)
    }

    /// File offset just past the value (and its record).
    #[inline]
    pub(crate) fn end(&self) -> u64 {
        self.offset() + u64::from(self.len)
    }

    /// The value offset and the record's distance before it, as one word (the hint file
    /// stores it so).
    pub(crate) fn packed_offsets(&self) -> u64 {
        self.at
    }

    /// A location from [`packed_offsets`](Self::packed_offsets) and its other fields;
    /// `None` if the word does not hold a valid pair.
    pub(crate) fn from_packed(segment: u32, packed: u64, len: u32, seq: u64) -> Option<Loc> {
        let value = packed & (MAX_SEGMENT_LEN - 1);
        let record = value.checked_sub(packed >> VALUE_OFFSET_BITS)?;
        Loc::checked(segment, record, value, len, seq)
    }
}

/// The approximate bytes a record of this key and value takes in its segment: what a
/// segment stops holding live when the record is superseded. Header and padding vary by a
/// few bytes; compaction scheduling needs no more precision.
pub(crate) fn footprint(key_len: usize, value_len: u32) -> u64 {
    key_len as u64 + u64::from(value_len) + 12
}

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
        let loc = self.tables.get(&table)?.map.get(key)?;
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
            for (key, loc) in table.map.held() {
                usage.add(key.as_bytes().len(), loc);
            }
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn short_keys() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes, so shared prefixes and embedded zeros are common.
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(255), any::<u8>()], 0..40)
    }

    #[test]
    fn locations_keep_both_offsets_at_the_limits_and_refuse_what_cannot_be() {
        for (record, value, len) in [
            (64, 73, 0),
            (64, 64 + MAX_VALUE_DISTANCE, 1 << 30),
            (MAX_SEGMENT_LEN - 100, MAX_SEGMENT_LEN - 10, 10),
        ] {
            let loc = Loc::checked(3, record, value, len, 9).expect("a possible location");
            assert_eq!(
                (loc.record(), loc.offset(), loc.end(), loc.len, loc.seq),
                (record, value, value + u64::from(len), len, 9)
            );
            assert_eq!(Loc::from_packed(3, loc.packed_offsets(), len, 9), Some(loc));
            assert_eq!(Loc::new(3, record, value, len, 9), loc);
        }
        assert_eq!(Loc::checked(3, 100, 99, 0, 1), None, "the record starts after its value");
        assert_eq!(
            Loc::checked(3, 64, 65 + MAX_VALUE_DISTANCE, 0, 1),
            None,
            "more than a header, key and padding"
        );
        assert_eq!(
            Loc::checked(3, MAX_SEGMENT_LEN - 20, MAX_SEGMENT_LEN - 10, 11, 1),
            None,
            "past the segment limit"
        );
    }

    proptest! {
        #[test]
        fn index_keys_and_probes_order_as_bytes(a in short_keys(), b in short_keys()) {
            let (ka, kb) = (IndexKey::new(&a), IndexKey::new(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            // What lookups rely on: keys of different prefixes compare as their prefixes.
            let probe = Probe::new(&a);
            if probe.prefix() != kb.prefix() {
                prop_assert_eq!(probe.prefix().cmp(&kb.prefix()), a.cmp(&b));
            }
            prop_assert_eq!(ka.as_bytes(), &a[..]);
        }
    }
}
