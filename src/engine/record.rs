//! The bytes of a segment: its file header and its records, encoded and decoded.
//!
//! Everything here is pure (no I/O), so the decoder can be fuzzed on arbitrary bytes. The
//! layout is specified byte by byte in `docs/design.md` §2; this file follows it.

/// Length of a segment's file header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
/// Magic of a segment file; the last byte is the format version: 2 since commit records
/// carry a sync watermark ([`FLAG_WATERMARK`]), so that older builds refuse the files.
const SEGMENT_MAGIC: [u8; 8] = *b"TKVSEG\0\x02";
/// Segment format versions this build reads: 1 (no watermarks) and 2.
const SEGMENT_VERSIONS: std::ops::RangeInclusive<u8> = 1..=2;

/// Longest key a record may carry.
pub const MAX_KEY_LEN: usize = 1 << 16;
/// Longest value a record may carry.
pub const MAX_VALUE_LEN: usize = 1 << 30;
/// Alignment of values written with [`ValueAlign::Sixteen`](super::ValueAlign::Sixteen).
pub(crate) const VALUE_ALIGN: usize = 16;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `key` now maps to `value`.
    Put = 1,
    /// `key` is removed.
    Tombstone = 2,
    /// Every key of the table written before this record's sequence number is removed.
    Clear = 3,
}

impl Kind {
    fn from_bits(bits: u8) -> Option<Kind> {
        Some(match bits {
            1 => Kind::Put,
            2 => Kind::Tombstone,
            3 => Kind::Clear,
            _ => return None,
        })
    }
}

/// Flag: the last record of its batch (the batch's commit point).
pub(crate) const FLAG_COMMIT: u8 = 0x10;
/// Flag: the value starts at a 16-byte-aligned file offset (zero padding after the key).
pub(crate) const FLAG_ALIGNED: u8 = 0x20;
/// Flag (commit records only): a varint after the value length gives the record's sync
/// watermark, the offset of its segment up to which the log was durable when its batch was
/// encoded. Recovery uses it to tell a torn tail from damage (`docs/design.md` §5).
pub(crate) const FLAG_WATERMARK: u8 = 0x40;
pub(crate) const KNOWN_FLAGS: u8 = FLAG_COMMIT | FLAG_ALIGNED | FLAG_WATERMARK;

/// The segment file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The segment's id, as in its file name.
    pub(crate) id: u32,
    /// No record of the segment has a lower sequence number.
    pub(crate) first_seq: u64,
}

impl SegmentHeader {
    /// The header's 64 bytes.
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..16].copy_from_slice(&u64::from(self.id).to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        out[24..28].copy_from_slice(&(VALUE_ALIGN as u32).to_le_bytes());
        let crc = crc32c::crc32c(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a header, or says what is wrong with it.
    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        let Some(bytes) = bytes.get(..SEGMENT_HEADER_LEN) else {
            return Err(format!("the file is shorter ({} bytes) than a segment header", bytes.len()));
        };
        if bytes[0..6] != SEGMENT_MAGIC[0..6] {
            return Err("not a typed-kv segment (bad magic)".to_owned());
        }
        if bytes[6] != SEGMENT_MAGIC[6] || !SEGMENT_VERSIONS.contains(&bytes[7]) {
            return Err(format!("segment format version {} is not supported (expected 1 or 2)", bytes[7]));
        }
        let crc = u32::from_le_bytes(le4(&bytes[60..64]));
        if crc != crc32c::crc32c(&bytes[..60]) {
            return Err("segment header checksum mismatch".to_owned());
        }
        let id = u64::from_le_bytes(le8(&bytes[8..16]));
        let id = u32::try_from(id).map_err(|_| format!("segment id {id} is out of range"))?;
        let align = u32::from_le_bytes(le4(&bytes[24..28]));
        if align as usize != VALUE_ALIGN {
            return Err(format!("segment alignment {align} is not supported (expected 16)"));
        }
        Ok(SegmentHeader { id, first_seq: u64::from_le_bytes(le8(&bytes[16..24])) })
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(b);
    out
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(b);
    out
}

/// One record to encode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub(crate) kind: Kind,
    /// Whether it ends its batch.
    pub(crate) commit: bool,
    /// Whether the value must start 16-byte aligned in the file.
    pub(crate) aligned: bool,
    pub(crate) seq: u64,
    pub(crate) table: u32,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
    /// The sync watermark of a commit record ([`FLAG_WATERMARK`]).
    pub(crate) watermark: Option<u64>,
}

/// Where an encoded record's parts lie, relative to the start of its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) key_offset: usize,
    pub(crate) value_offset: usize,
    pub(crate) end: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Most bytes a varint takes.
pub(crate) const MAX_VARINT_LEN: u64 = 10;

fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

/// The bytes [`encode`] appends for `record` when its first byte sits at file offset `pos`
/// (padding included), computed without encoding it.
pub(crate) fn encoded_len(pos: u64, record: &RecordRef<'_>) -> u64 {
    let (key_len, value_len) = (record.key.len() as u64, record.value.len() as u64);
    let header = 5
        + varint_len(record.seq)
        + varint_len(u64::from(record.table))
        + varint_len(key_len)
        + varint_len(value_len)
        + record.watermark.map_or(0, varint_len);
    let mut value_pos = pos + header + key_len;
    if record.aligned {
        value_pos = value_pos.next_multiple_of(VALUE_ALIGN as u64);
    }
    value_pos + value_len - pos
}

/// Appends `record` to `out`, whose first byte will sit at file offset `base`: the value is
/// padded to a 16-byte file offset when the record asks for it. Lengths must be within the
/// limits (the caller checks them, with the table and key at hand for the error).
pub(crate) fn encode(out: &mut Vec<u8>, base: u64, record: &RecordRef<'_>) -> Placed {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let flags = (if record.commit { FLAG_COMMIT } else { 0 })
        | (if record.aligned { FLAG_ALIGNED } else { 0 })
        | (if record.watermark.is_some() { FLAG_WATERMARK } else { 0 });
    out.push(record.kind as u8 | flags);
    put_varint(out, record.seq);
    put_varint(out, u64::from(record.table));
    put_varint(out, record.key.len() as u64);
    put_varint(out, record.value.len() as u64);
    if let Some(watermark) = record.watermark {
        put_varint(out, watermark);
    }
    let key_offset = out.len();
    out.extend_from_slice(record.key);
    if record.aligned {
        let file_pos = base + out.len() as u64;
        let padded = file_pos.next_multiple_of(VALUE_ALIGN as u64);
        out.resize(out.len() + (padded - file_pos) as usize, 0);
    }
    let value_offset = out.len();
    out.extend_from_slice(record.value);
    let mut crc = crc32c::crc32c(&out[start + 4..key_offset]);
    crc = crc32c::crc32c_append(crc, record.key);
    crc = crc32c::crc32c_append(crc, record.value);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Placed { key_offset, value_offset, end: out.len() }
}

/// A record read back, with its parts as offsets into the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) kind: Kind,
    pub(crate) commit: bool,
    pub(crate) aligned: bool,
    pub(crate) seq: u64,
    pub(crate) table: u32,
    /// Offset of the record.
    pub(crate) start: usize,
    /// Offset of the key.
    pub(crate) key: usize,
    pub(crate) key_len: usize,
    /// Offset of the value.
    pub(crate) value: usize,
    pub(crate) value_len: usize,
    /// Offset just past the record.
    pub(crate) end: usize,
    /// The sync watermark of a commit record, if it carries one.
    pub(crate) watermark: Option<u64>,
}

/// What lies at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// A whole, checksummed record.
    Record(Decoded),
    /// The end of the written log: the end of the bytes, or zeros where a record would start.
    End,
    /// Bytes that are not a valid record, and why.
    Bad(String),
}

fn get_varint(bytes: &[u8], pos: &mut usize, max: u64, what: &str) -> Result<u64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = bytes.get(*pos) else {
            return Err(format!("the record header is cut off in its {what}"));
        };
        *pos += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(format!("the {what} overflows 64 bits"));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            if value > max {
                return Err(format!("the {what} {value} is over its limit {max}"));
            }
            return Ok(value);
        }
    }
    Err(format!("the {what} overflows 64 bits"))
}

/// Decodes the record at `offset` of `bytes`, whose first byte sits at file offset `base`.
/// Never panics and never allocates on behalf of a length field: lengths are checked against
/// the limits and against the bytes present before anything is sliced.
pub(crate) fn decode(bytes: &[u8], base: u64, offset: usize) -> Next {
    let Some(rest) = bytes.get(offset..) else {
        return Next::Bad(format!("offset {offset} is past the end ({} bytes)", bytes.len()));
    };
    if rest.is_empty() || rest.iter().take(5).all(|&b| b == 0) {
        // Five zero bytes cannot start a record (kind 0 does not exist): the log ends here.
        return Next::End;
    }
    match frame(bytes, base, offset).and_then(|framed| check(bytes, &framed).map(|()| framed)) {
        Ok(framed) => Next::Record(framed.record),
        Err(reason) => Next::Bad(reason),
    }
}

/// A record whose header reads and whose parts fit in the bytes; its checksum is not checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framed {
    pub(crate) record: Decoded,
    /// Offset of the record's first byte.
    start: usize,
    /// The stored checksum.
    crc: u32,
    /// Offset just past the header (where the key starts).
    header_end: usize,
}

/// Reads the header of the record at `offset` (file offset `base + offset`) and where its
/// parts lie, without checking its padding or checksum.
pub(crate) fn frame(bytes: &[u8], base: u64, offset: usize) -> Result<Framed, String> {
    let Some(rest) = bytes.get(offset..) else {
        return Err(format!("offset {offset} is past the end ({} bytes)", bytes.len()));
    };
    if rest.len() < 5 {
        return Err("a record header is cut off".to_owned());
    }
    let crc = u32::from_le_bytes(le4(&rest[0..4]));
    let kind_flags = rest[4];
    let Some(kind) = Kind::from_bits(kind_flags & 0x0f) else {
        return Err(format!("unknown record kind {}", kind_flags & 0x0f));
    };
    if kind_flags & 0xf0 & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown record flags {:#04x}", kind_flags & 0xf0));
    }
    let commit = kind_flags & FLAG_COMMIT != 0;
    if kind_flags & FLAG_WATERMARK != 0 && !commit {
        return Err("a sync watermark on a record that does not end its batch".to_owned());
    }
    let mut pos = 5;
    let seq = get_varint(rest, &mut pos, u64::MAX, "sequence number")?;
    let table = get_varint(rest, &mut pos, u64::from(u32::MAX), "table id")? as u32;
    let key_len = get_varint(rest, &mut pos, MAX_KEY_LEN as u64, "key length")? as usize;
    let value_len = get_varint(rest, &mut pos, MAX_VALUE_LEN as u64, "value length")? as usize;
    let watermark = if kind_flags & FLAG_WATERMARK != 0 {
        Some(get_varint(rest, &mut pos, u64::MAX, "sync watermark")?)
    } else {
        None
    };
    let header_end = pos;
    let key = header_end;
    let mut value = key + key_len;
    let aligned = kind_flags & FLAG_ALIGNED != 0;
    if aligned {
        let file_pos = base + (offset + value) as u64;
        value += (file_pos.next_multiple_of(VALUE_ALIGN as u64) - file_pos) as usize;
    }
    let end = value + value_len;
    if end > rest.len() {
        return Err(format!("the record claims {end} bytes but only {} remain in the file", rest.len()));
    }
    let record = Decoded {
        kind,
        commit,
        aligned,
        seq,
        table,
        start: offset,
        key: offset + key,
        key_len,
        value: offset + value,
        value_len,
        end: offset + end,
        watermark,
    };
    Ok(Framed { record, start: offset, crc, header_end: offset + header_end })
}

/// Checks a framed record's padding and checksum.
fn check(bytes: &[u8], framed: &Framed) -> Result<(), String> {
    let d = &framed.record;
    let key_end = d.key + d.key_len;
    if bytes[key_end..d.value].iter().any(|&b| b != 0) {
        return Err("non-zero padding before the value".to_owned());
    }
    // The checksum covers the header after itself (kind onwards), the key and the value.
    let mut actual = crc32c::crc32c(&bytes[framed.start + 4..framed.header_end]);
    actual = crc32c::crc32c_append(actual, &bytes[d.key..key_end]);
    actual = crc32c::crc32c_append(actual, &bytes[d.value..d.end]);
    if actual != framed.crc {
        return Err(format!("checksum mismatch (stored {:#010x}, computed {actual:#010x})", framed.crc));
    }
    Ok(())
}

/// The first checksummed commit record after `from` whose sync watermark lies beyond
/// `from`, searched at every byte offset up to the end of `bytes`: proof that the bytes at
/// `from` had been made durable before a later batch was written, so damage there is not a
/// torn write. A commit record without a watermark (segment format 1) counts as such proof.
/// Headers are read before any checksum is computed, so a watermark at or below `from`
/// costs no checksum.
pub(crate) fn durable_commit_after(bytes: &[u8], base: u64, from: usize) -> Option<Decoded> {
    (from + 1..bytes.len()).find_map(|offset| {
        let kind_flags = *bytes.get(offset + 4)?;
        if kind_flags & FLAG_COMMIT == 0
            || Kind::from_bits(kind_flags & 0x0f).is_none()
            || kind_flags & 0xf0 & !KNOWN_FLAGS != 0
        {
            return None;
        }
        let framed = frame(bytes, base, offset).ok()?;
        let proves = framed.record.watermark.is_none_or(|w| w > base + from as u64);
        (proves && check(bytes, &framed).is_ok()).then_some(framed.record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: &'a [u8], value: &'a [u8], aligned: bool) -> RecordRef<'a> {
        RecordRef {
            kind: Kind::Put,
            commit: true,
            aligned,
            seq: 300,
            table: 7,
            key,
            value,
            watermark: Some(4160),
        }
    }

    #[test]
    fn encoded_len_is_what_encode_appends() {
        let long = vec![7u8; 300];
        for pos in [0u64, 1, 15, 16, 17, 1 << 33] {
            for (seq, table) in [(0, 0), (127, 128), (300, 16_384), (u64::MAX, u32::MAX)] {
                for (key, value) in [(&b""[..], &b""[..]), (b"k", &long[..200]), (&long[..], b"v")] {
                    for (aligned, watermark) in
                        [(false, None), (true, None), (false, Some(1 << 40)), (true, Some(0))]
                    {
                        let commit = watermark.is_some();
                        let record =
                            RecordRef { kind: Kind::Put, commit, aligned, seq, table, key, value, watermark };
                        let mut buf = vec![0; (pos % 16) as usize];
                        let before = buf.len();
                        encode(&mut buf, pos - pos % 16, &record);
                        let appended = (buf.len() - before) as u64;
                        assert_eq!(encoded_len(pos, &record), appended, "{record:?} at {pos}");
                    }
                }
            }
        }
    }

    #[test]
    fn records_round_trip_at_any_base_with_aligned_values() {
        for base in [64u64, 65, 79, 80, 1 << 33] {
            for aligned in [false, true] {
                let mut buf = vec![0xAA; 3];
                let placed = encode(&mut buf, base - 3, &record(b"key", b"value", aligned));
                if aligned {
                    assert_eq!((base - 3 + placed.value_offset as u64) % 16, 0, "base {base}");
                } else {
                    assert_eq!(placed.value_offset, placed.key_offset + 3);
                }
                let Next::Record(d) = decode(&buf, base - 3, 3) else { panic!("not decoded at {base}") };
                assert_eq!((d.seq, d.table, d.kind, d.commit, d.aligned), (300, 7, Kind::Put, true, aligned));
                assert_eq!(d.watermark, Some(4160));
                assert_eq!(&buf[d.key..d.key + d.key_len], b"key");
                assert_eq!(&buf[d.value..d.value + d.value_len], b"value");
                assert_eq!(d.end, buf.len());
                assert_eq!(decode(&buf, base - 3, d.end), Next::End);
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 64, &record(b"some key", b"some value bytes", true));
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let next = decode(&bad, 64, 0);
            assert!(matches!(next, Next::Bad(_)), "flipping bit {bit} gave {next:?}");
        }
    }

    #[test]
    fn only_a_watermark_beyond_the_damage_proves_it_durable() {
        // Three batches at file offset 64: watermarks 64, 64 (written before any sync) and
        // then the end of the first batch (synced by then).
        let mut bytes = vec![0u8; 64];
        let mut ends = Vec::new();
        for watermark in [64, 64, 0] {
            let watermark = if watermark == 0 { ends[0] } else { watermark };
            let record = RecordRef { watermark: Some(watermark as u64), ..record(b"k", b"v", false) };
            let mut out = Vec::new();
            encode(&mut out, bytes.len() as u64, &record);
            bytes.extend_from_slice(&out);
            ends.push(bytes.len());
        }
        let found = durable_commit_after(&bytes, 0, 64).expect("the third batch proves offset 64 durable");
        assert_eq!((found.end, found.watermark), (ends[2], Some(ends[0] as u64)));
        assert_eq!(durable_commit_after(&bytes, 0, ends[0]), None, "nothing proves the second batch durable");
        // Format 1: any commit record after the damage is proof.
        let mut v1 = vec![0u8; 64];
        let mut out = Vec::new();
        encode(&mut out, 64, &RecordRef { watermark: None, ..record(b"k", b"v", false) });
        v1.extend_from_slice(&out);
        assert!(durable_commit_after(&v1, 0, 10).is_some());
        // A damaged proof is none.
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(durable_commit_after(&bytes, 0, 64), None);
    }

    #[test]
    fn every_truncation_is_reported_not_panicked() {
        let mut buf = Vec::new();
        encode(&mut buf, 0, &record(b"k", &[7; 100], false));
        for len in 1..buf.len() {
            let next = decode(&buf[..len], 0, 0);
            assert!(matches!(next, Next::Bad(_)), "a record cut at {len} decoded as {next:?}");
        }
    }

    #[test]
    fn huge_length_fields_are_refused_before_slicing() {
        let mut buf = vec![0, 0, 0, 0, Kind::Put as u8 | FLAG_COMMIT, 1, 1, 1];
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // value length 2^32 - 1
        let Next::Bad(reason) = decode(&buf, 0, 0) else { panic!("accepted") };
        assert!(reason.contains("value length"), "{reason}");
        let overflow = [0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        let Next::Bad(reason) = decode(&overflow, 0, 0) else { panic!("accepted") };
        assert!(reason.contains("overflows"), "{reason}");
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader { id: 42, first_seq: 9 };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(SegmentHeader::decode(&bad).is_err(), "damage at byte {i} went unnoticed");
        }
        assert!(SegmentHeader::decode(&bytes[..10]).is_err());
    }
}
